"""The blob protocol, written once for every backend: addresses, framing, compression.

A blob is content named by :func:`outlast.serde.fingerprint` of its bytes (its *hash*, which
payloads refer to). What a backend keeps is a row ``(address, data)`` in its blob table,
referenced from each run that uses it; the backend supplies only the SQL (insert rows and
references in the caller's transaction, select rows by address). Everything else is here:

* **Address.** The hash itself, or with encryption on a keyed hash (HMAC-SHA256 of the hash
  under a key derived from the active encryption key, 128 bits, hex), so that equal content
  in two runs cannot be recognised by someone holding only the database. Reading looks a hash
  up under every address it may have (plain, then one per known key).
* **Order.** Rows are written sorted by address, so two transactions storing the same blobs
  take their row locks in one order (no deadlock on PostgreSQL).
* **Frame.** ``data`` is either the raw bytes (written by 0.1.0, or when compressing does
  not pay) or a frame ``0xff, codec, body``: codec ``z`` (zlib), ``s`` (zstd, when the
  ``zstandard`` package is installed) or ``e`` (sealed, see :mod:`outlast.encryption`; its
  plaintext is itself a frame or ``-`` plus the raw bytes). UTF-8 text never contains 0xff;
  a raw bytes blob might start with it, so a frame is accepted only when what it decodes to
  has the blob's hash, and otherwise the data is taken raw. Each value names its codec, so a
  process without ``zstandard`` reads zlib values and reports the one codec it lacks.
* **Compression** happens before encryption, and is kept only when it saves an eighth.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import zlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import SerializationError

if TYPE_CHECKING:
    from ..encryption import Encryption

__all__ = ["FRAME", "BlobCodec", "compress", "decompress"]

FRAME = 0xFF
_FRAME = b"\xff"
#: blobs (and row payloads) shorter than this are never compressed
COMPRESS_MIN = 256
#: the most one compressed value may inflate to (as serde.MAX_UNPACKED_BYTES)
MAX_INFLATED = 64 * 2**20
_ZSTD: Any = None  # the zstandard module, or False when it is not installed
#: zstandard's compressor and decompressor objects are not thread-safe (two threads in one
#: compressor crash the process): each thread gets its own pair
_LOCAL = threading.local()


def _zstd() -> Any:
    """This thread's ``(compressor, decompressor)``, or False without zstandard."""
    global _ZSTD
    if _ZSTD is None:
        try:
            import zstandard
        except ImportError:
            _ZSTD = False
        else:
            _ZSTD = zstandard
    if _ZSTD is False:
        return False
    pair = getattr(_LOCAL, "zstd", None)
    if pair is None:
        pair = _LOCAL.zstd = (_ZSTD.ZstdCompressor(level=3), _ZSTD.ZstdDecompressor())
    return pair


def compress(data: bytes) -> bytes:
    """``data`` as a compression frame when that saves an eighth, else ``data`` itself."""
    if len(data) < COMPRESS_MIN:
        return data
    z = _zstd()
    body = z[0].compress(data) if z else zlib.compress(data, 6)
    if len(body) + 2 > len(data) - len(data) // 8:
        return data
    return _FRAME + (b"s" if z else b"z") + body


def decompress(codec: int, body: bytes) -> bytes:
    """Inflate a frame's body written with ``codec`` (``z`` or ``s``)."""
    if codec == ord("z"):
        inflate = zlib.decompressobj()
        out = inflate.decompress(body, MAX_INFLATED)
        if inflate.unconsumed_tail or not inflate.eof:
            raise SerializationError("a compressed value is truncated or too large")
        return out
    if codec == ord("s"):
        z = _zstd()
        if not z:
            raise SerializationError(
                "a value is compressed with zstd, which this process cannot read: "
                "pip install zstandard (or 'outlast[zstd]')"
            )
        out = z[1].decompressobj().decompress(body)
        if len(out) > MAX_INFLATED:
            raise SerializationError("a compressed value inflates past the limit")
        return bytes(out)
    raise SerializationError(f"unknown compression codec {chr(codec)!r}")


def _fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class BlobCodec:
    """Addresses and frames blobs for one store; ``encryption`` seals them (and keys their
    addresses). One per store; stateless apart from the keys, so safe across threads."""

    def __init__(self, encryption: Encryption | None = None) -> None:
        self.encryption = encryption
        self._address_keys: dict[str, bytes] = {}
        if encryption is not None:
            self._address_keys = {
                kid: hmac.new(key, b"outlast blob address v1", hashlib.sha256).digest()
                for kid, key in encryption.keys.items()
            }

    def address(self, h: str, kid: str | None = None) -> str:
        """Where blob ``h`` is written: ``h`` itself, or its keyed hash under key ``kid``
        (default: the active key) when encryption is on."""
        if self.encryption is None:
            return h
        key = self._address_keys[kid or self.encryption.active]
        return hmac.new(key, h.encode("ascii"), hashlib.sha256).hexdigest()[:32]

    def rows(self, blobs: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
        """The ``(address, data)`` rows to insert for ``blobs`` (hash -> bytes), in address order."""
        out = []
        for h, data in blobs.items():
            address = self.address(h)
            framed = compress(data)
            if self.encryption is not None:
                inner = framed if framed is not data else b"-" + data
                framed = self.encryption.seal(inner, _blob_aad(address))
            out.append((address, framed))
        out.sort()
        return out

    def lookup(self, hashes: Iterable[str]) -> dict[str, str]:
        """``address -> hash`` of every address the blobs ``hashes`` may be stored under."""
        out: dict[str, str] = {}
        for h in hashes:
            out[h] = h
            for kid in self._address_keys:
                out[self.address(h, kid)] = h
        return out

    def read(self, rows: Iterable[tuple[str, Any]], lookup: Mapping[str, str]) -> dict[str, bytes]:
        """The blobs (hash -> bytes) held by rows ``(address, data)`` found for ``lookup``."""
        found: dict[str, bytes] = {}
        for address, stored in rows:
            h = lookup[address]
            if h not in found:
                found[h] = self.unframe(h, address, bytes(stored))
        return found

    def reseal(self, address: str, data: bytes) -> tuple[str, str, bytes] | None:
        """``(hash, new address, new data)`` of the blob row ``(address, data)`` under the
        active key, or None when it is already there (``outlast rekey``). A row written in the
        clear has its hash as address; a sealed one names its key, whose keyed address of the
        hash must be ``address`` (else the row is not where it belongs, and this raises)."""
        from ..encryption import open_sealed, sealed_kid

        assert self.encryption is not None
        kid = sealed_kid(data)
        if kid == self.encryption.active:
            return None
        if kid is None:
            h = address
            plain = self.unframe(h, address, data)
        else:
            inner = open_sealed(self.encryption, data, _blob_aad(address), f"blob at {address}")
            plain = inner[1:] if inner[:1] == b"-" else decompress(inner[1], inner[2:])
            h = _fingerprint(plain)
            if self.address(h, kid) != address:
                raise SerializationError(
                    f"blob at {address} holds content whose address under key {kid!r} is "
                    f"{self.address(h, kid)}: it was not written by outlast here; left as it is"
                )
        [(new_address, new_data)] = self.rows({h: plain})
        return h, new_address, new_data

    def unframe(self, h: str, address: str, data: bytes) -> bytes:
        """The bytes of blob ``h`` from its stored ``data`` (raw when it is not a frame)."""
        if data[:1] != _FRAME or len(data) < 2:
            return data
        codec = data[1]
        try:
            if codec == ord("e"):
                from ..encryption import open_sealed

                inner = open_sealed(self.encryption, data, _blob_aad(address), f"blob {h}")
                out = inner[1:] if inner[:1] == b"-" else self.unframe(h, address, inner)
            elif codec in (ord("z"), ord("s")):
                out = decompress(codec, data[2:])
            else:
                return data
        except SerializationError:
            if _fingerprint(data) == h:
                return data  # a raw bytes blob that happens to start like a frame
            raise
        except zlib.error:
            return data
        if codec != ord("e") and _fingerprint(out) != h and _fingerprint(data) == h:
            return data
        return out


def _blob_aad(address: str) -> bytes:
    return b"outlast blob\x00" + address.encode("ascii")
