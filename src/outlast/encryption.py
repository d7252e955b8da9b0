"""Encryption at rest: AES-256-GCM of every payload outlast stores (see docs/security.md).

    app = outlast.App(url, encryption=outlast.Encryption({"k2": key2, "k1": key1}, active="k2"))
    # or $OUTLAST_ENCRYPTION_KEYS="k2:<base64>,k1:<base64>" (the first key is the active one)

Needs ``pip install 'outlast[encryption]'`` (the ``cryptography`` package), imported only when
a key is given. A sealed value is ``0xff 'e' len(kid) kid nonce(12) ciphertext+tag(16)``: it
names its key id, and its associated data binds it to its place (run id and column, journal
entry key, blob address...), so a ciphertext copied to another run or row fails to decrypt.
Values are compressed before they are sealed (:mod:`outlast.store.blobs`).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError, SerializationError, UnreadableValue

__all__ = ["ENV", "Encryption", "from_env", "missing_key", "open_sealed", "sealed_kid"]

#: the environment variable the CLI, workers, ``serve`` and ``ui`` read keys from
ENV = "OUTLAST_ENCRYPTION_KEYS"
_HEAD = b"\xffe"


class Encryption:
    """Keys by id, and the active one new writes use; the others still read old values.

    ``keys`` maps a short key id (1-255 bytes of ASCII, no ``:`` or ``,``) to a 32-byte key
    (bytes, or its base64). ``active`` defaults to the first key given.
    """

    def __init__(self, keys: Mapping[str, bytes | str], active: str | None = None) -> None:
        if not keys:
            raise ConfigurationError("Encryption needs at least one key: {'k1': 32 random bytes}")
        self.keys: dict[str, bytes] = {}
        for kid, key in keys.items():
            if (
                not isinstance(kid, str)
                or not kid
                or len(kid.encode()) > 255
                or any(c in kid for c in ":, ")
                or not kid.isascii()
            ):
                raise ConfigurationError(
                    f"bad encryption key id {kid!r}: use 1-255 ASCII characters without ':', "
                    "',' or spaces (e.g. 'k2025')"
                )
            raw = _decode_key(kid, key)
            self.keys[kid] = raw
        self.active = active if active is not None else next(iter(self.keys))
        if self.active not in self.keys:
            raise ConfigurationError(
                f"the active encryption key {self.active!r} is not among the keys given "
                f"({', '.join(self.keys)})"
            )
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:
            raise ConfigurationError(
                "encryption needs the cryptography package: pip install 'outlast[encryption]'"
            ) from exc
        self._aead: dict[str, Any] = {kid: AESGCM(key) for kid, key in self.keys.items()}
        self._active_head = _HEAD + bytes([len(self.active)]) + self.active.encode("ascii")

    def __repr__(self) -> str:  # never the keys
        return f"Encryption(keys={list(self.keys)!r}, active={self.active!r})"

    def seal(self, data: bytes, aad: bytes) -> bytes:
        """``data`` encrypted under the active key, bound to ``aad`` (its place)."""
        nonce = os.urandom(12)
        head = self._active_head
        return head + nonce + bytes(self._aead[self.active].encrypt(nonce, data, head + aad))


def sealed_kid(data: bytes) -> str | None:
    """The key id a sealed value names, or None for a value that is not sealed."""
    if data[:2] != _HEAD or len(data) < 3:
        return None
    return data[3 : 3 + data[2]].decode("ascii", "replace")


def open_sealed(enc: Encryption | None, data: bytes, aad: bytes, what: str) -> bytes:
    """The plaintext of a sealed value; raises naming ``what`` and the key id."""
    kid = sealed_kid(data)
    if kid is None:
        raise SerializationError(f"cannot read {what}: it is not a sealed value", what=what)
    if enc is None or kid not in enc.keys:
        exc = missing_key(data, enc)
        raise UnreadableValue(f"cannot read {what}: {exc.message}", what=what, key_id=kid)
    start = 3 + data[2]
    head, nonce, body = data[:start], data[start : start + 12], data[start + 12 :]
    from cryptography.exceptions import InvalidTag

    try:
        return bytes(enc._aead[kid].decrypt(nonce, body, head + aad))
    except InvalidTag:
        raise SerializationError(
            f"cannot read {what}: authentication failed under key {kid!r}: the key with that "
            "id is not the one it was written with, or the stored value was altered or "
            "copied from another place",
            what=what,
            key_id=kid,
        ) from None


def missing_key(data: bytes, enc: Encryption | None) -> UnreadableValue:
    """The error for a sealed value read without its key (named)."""
    kid = sealed_kid(data) or "?"
    have = "no encryption keys were given" if enc is None else (
        f"the keys given are {', '.join(enc.keys)}")
    return UnreadableValue(
        f"it is encrypted with key {kid!r}, and {have}. Give that key "
        f"(outlast.Encryption({{{kid!r}: key, ...}}) or ${ENV}=\"{kid}:<base64>,...\")",
        key_id=kid)


def _decode_key(kid: str, key: bytes | str) -> bytes:
    if isinstance(key, str):
        try:
            key = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"encryption key {kid!r} is not valid base64") from None
    if not isinstance(key, bytes) or len(key) != 32:
        raise ConfigurationError(
            f"encryption key {kid!r} must be 32 bytes (AES-256); make one with "
            'python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"'
        )
    return key


def from_env(environ: Mapping[str, str] | None = None) -> Encryption | None:
    """The keys in ``$OUTLAST_ENCRYPTION_KEYS`` (``id:base64,...``, first active), or None."""
    text = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not text:
        return None
    keys: dict[str, str] = {}
    for part in text.split(","):
        kid, sep, b64 = part.strip().partition(":")
        if not sep:
            raise ConfigurationError(
                f"${ENV} must be id:base64 pairs separated by commas, e.g. k2:AAAA...,k1:BBBB..."
            )
        keys[kid.strip()] = b64.strip()
    return Encryption(keys)
