"""How outlast stores values: tagged JSON, content-addressed blobs, and recorded errors.

Wire format
-----------
A payload is UTF-8 JSON with compact separators. ``None``, bools, ints, finite floats, str,
lists, and dicts whose keys are all str are written as themselves, so plain data costs one
pass over the value and one C-level ``json`` call. Every other supported value is an object
whose first key is ``"__o"``::

    {"__o":"t","v":[...]}               tuple
    {"__o":"d","v":[[k,v],...]}         dict with a non-str key, or with the key "__o" itself
    {"__o":"s"|"fs","v":[...]}          set, frozenset (elements sorted by their JSON)
    {"__o":"f","v":"nan"}               nan, inf, -inf (-0.0 is plain JSON)
    {"__o":"b"|"ba","v":"base64"}       bytes, bytearray
    {"__o":"dt"|"ti"|"da","v":iso}      datetime, time, date; "z": zoneinfo key, "f": fold
    {"__o":"td"|"u"|"D","v":...}        timedelta [d,s,us], UUID hex, Decimal str
    {"__o":"e","c":"mod:Qual","n":name} Enum member ("v": value for a composite Flag)
    {"__o":"nt","c":"mod:Qual","v":[]}  named tuple
    {"__o":"dc","c":"mod:Qual","v":{}}  dataclass: its fields
    {"__o":"pd","c":"mod:Qual","v":..}  pydantic v2 model: its model_dump(mode="python")
    {"__o":"ref","h":hash[,"k":"s"|"b"]}   a blob: JSON value, or raw str / bytes
    {"__o":"lc","h":[hash,...]}         a list stored as chunk blobs, concatenated
    {"__o":"lc","h":[...],"t":[...]}    ...followed by elements inline (outlast.serde_append)

An error (:func:`outlast.serde_errors.dump_error`) is ``{"c":"mod:Qual","m":str(exc),"a":args,"k":attrs}``.

Guarantees
----------
* ``loads(dumps(v))`` equals ``v`` and has the same type at every level.
* Nothing is unpickled and nothing is imported: a class named by stored data is looked up
  in the ``__dict__`` of a module already in ``sys.modules`` (never with ``getattr``, so no
  module ``__getattr__`` runs) and must be the expected kind (dataclass, Enum, ...) before it
  is built. A class that cannot be found raises :class:`UnreadableValue`: the value may be
  readable by a process that has imported its module.
* A class defined in a script run as ``python script.py`` is written under the name the
  script has when imported (``script:Params``, not ``__main__:Params``), so the script and
  ``outlast worker script:app`` write the same bytes and read each other's values. Records
  that name ``__main__`` are also looked up in the modules given to :func:`register_home`.
* Reading is bounded: a packed row inflates to at most :data:`MAX_UNPACKED_BYTES`, and blob
  references (which may name one blob many times, and nest) expand to at most
  :data:`MAX_DECODED_BYTES` of blob text and :data:`MAX_DECODED_ITEMS` list items; beyond
  that, :class:`SerializationError`, never a ``MemoryError`` or a hang.
* Equal values built the same way give the same bytes (sets are sorted, never hash-ordered),
  so :func:`fingerprint` of call arguments is stable across processes.
* Every failure is a :class:`SerializationError` naming what was stored or read, and for a
  value that cannot be stored, its path and type.

Blobs
-----
Given ``blobs={}``, :func:`dumps` moves large parts out into ``blobs[hash] = bytes``, the hash
being blake2b-128 of those bytes, so equal content is stored once: a str, bytes or dict of at
least :data:`BLOB_THRESHOLD` bytes becomes a ``ref``; a list that long is cut into chunks
after elements whose hash ends a chunk (one in 16; one in 4 within the unfinished last
chunk) and becomes an ``lc`` of chunk hashes, grouped again the same way while the hash list
is long. A list that grew by one element shares all but its last chunks with its previous
version, so an agent resending its growing conversation stores O(N) bytes, not O(N^2).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import uuid
import zlib
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeAlias, TypeVar
from zoneinfo import ZoneInfo

from .errors import (
    SerializationError,
    UnreadableValue,
)
from .serde_classes import CLASS_DECODERS, encode_class, register_home
from .serde_tags import _TAG, _arr, _name, _Unsupported

__all__ = [
    "BLOB_THRESHOLD", "MAX_DECODED_BYTES", "MAX_DECODED_ITEMS", "MAX_UNPACKED_BYTES", "Blobs",
    "SerializationError", "UnreadableValue", "decode_args", "dumps", "encode_args",
    "fingerprint", "loads", "pack", "register_home",
]

#: Strings, bytes, dicts and lists whose JSON is at least this many bytes go to blobs.
BLOB_THRESHOLD = 1024
_CHUNK_MASK = 15  # a chunk ends after an element whose key has these bits set: 1 in 16
_FINE_MASK = 3  # the same for the unfinished last chunk: 1 in 4
_CHUNK_MAX = 64  # ...or at this size, so a run of identical elements still gets cut
#: The most bytes one packed (zlib) row may inflate to when read.
MAX_UNPACKED_BYTES = 64 * 2**20
#: The most blob text one :func:`loads` call parses, counting a blob again each time it is
#: named: what bounds a payload that names one large blob a million times.
MAX_DECODED_BYTES = 128 * 2**20
#: The most list items one :func:`loads` call builds from ``lc`` chunks (each copy counted).
MAX_DECODED_ITEMS = 2_000_000
_CORRUPT = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError,
            zlib.error)
#: What :func:`loads` reads blobs from: a mapping, or a batch fetcher of missing hashes.
Blobs: TypeAlias = Mapping[str, bytes] | Callable[[list[str]], Mapping[str, bytes]]
T = TypeVar("T")

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
try:  # JSONEncoder.encode builds a new C encoder at every call; on the hot path, make it once.
    _C_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", 0, 0, 0
    )
except TypeError:  # no C accelerator (or another signature): the public path
    _C_ENCODE = None


def _json(obj: Any) -> str:
    return "".join(_C_ENCODE(obj, 0)) if _C_ENCODE is not None else _ENCODER.encode(obj)


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate in a str survives the trip (the JSON decoder allows it).
    return text.encode("utf-8", "surrogatepass")


def fingerprint(data: bytes) -> str:
    """Return a short stable hash of ``data`` (blake2b, 16 bytes, hex), e.g. of call arguments."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# --- encoding -------------------------------------------------------------------------------


def _enc(v: Any, b: dict[str, bytes] | None) -> Any:
    """Return the JSON-ready form of ``v``; with ``b``, move large parts into blobs."""
    t = type(v)
    if t is str:
        # Under threshold/4 chars, a str cannot reach the threshold in UTF-8: skip encoding it.
        return v if b is None or len(v) * 4 < BLOB_THRESHOLD else _blob(v, _utf8(v), "s", b)
    if t is int or t is bool or v is None:
        return v
    if t is float:
        return v if math.isfinite(v) else {_TAG: "f", "v": repr(v)}
    if t is list:
        return _seq(v, b)
    if t is dict:
        return _enc_dict(v, b)
    encoder = _ENCODERS.get(t)
    return encode_class(v, t, b, _enc, _seq) if encoder is None else encoder(v, b)


def _seq(v: list[Any] | tuple[Any, ...], b: dict[str, bytes] | None) -> Any:
    try:
        out = [_enc(x, b) for x in v]
    except _Unsupported as e:
        raise e.up(v) from None
    return out if b is None else _chunk(out, b)


def _enc_dict(v: dict[Any, Any], b: dict[str, bytes] | None) -> Any:
    out: Any = {}
    try:
        if _TAG not in v:
            for k, x in v.items():
                if type(k) is not str:
                    break
                out[k] = _enc(x, b)
        if len(out) < len(v):
            # Pairs form for other keys, and for the key "__o": a user dict never reads as a tag.
            out = {_TAG: "d", "v": [[_enc(k, b), _enc(x, b)] for k, x in v.items()]}
    except _Unsupported as e:
        raise e.up(v) from None
    if b is not None and len(text := _json(out)) >= BLOB_THRESHOLD:
        return {_TAG: "ref", "h": _put(b, _utf8(text))}
    return out


def _put(b: dict[str, bytes], data: bytes) -> str:
    h = fingerprint(data)
    if h not in b:
        b[h] = data
    return h


def _blob(v: Any, data: bytes, kind: str, b: dict[str, bytes] | None) -> Any:
    if b is not None and len(data) >= BLOB_THRESHOLD:
        return {_TAG: "ref", "h": _put(b, data), "k": kind}
    return v if kind == "s" else {_TAG: kind, "v": base64.b64encode(data).decode("ascii")}


def _cut(items: list[T], keys: list[int], mask: int) -> list[list[T]]:
    """Split ``items`` after each one whose key has the ``mask`` bits set (content only)."""
    parts: list[list[T]] = []
    start = 0
    for i, key in enumerate(keys):
        size = i + 1 - start
        # At least 2 per chunk, so each level of grouping halves the hash list at worst.
        if (key & mask == mask and size >= 2) or size >= _CHUNK_MAX:
            parts.append(items[start : i + 1])
            start = i + 1
    if start < len(items):
        # The unfinished last chunk is rewritten at every append: cutting it finer (one in 4)
        # rewrites ~4 elements per append instead of ~16.
        tail = items[start:]
        parts += [tail] if mask == _FINE_MASK else _cut(tail, keys[start:], _FINE_MASK)
    return parts


def _chunk(items: list[Any], b: dict[str, bytes]) -> Any:
    if len(items) < 16 and len(_json(items)) < BLOB_THRESHOLD:
        return items
    texts = [_json(x) for x in items]
    if sum(map(len, texts)) + len(texts) < BLOB_THRESHOLD:
        return items
    keys = [zlib.crc32(_utf8(t)) for t in texts]
    hashes = [_put(b, _utf8("[" + ",".join(p) + "]")) for p in _cut(texts, keys, _CHUNK_MASK)]
    # A long hash list is grouped into blobs that are "lc" nodes themselves: a tree of depth
    # log(len), so appending one element rewrites O(log n) bytes of hashes, not O(n).
    while len(hashes) > 1 and 35 * len(hashes) >= BLOB_THRESHOLD:
        groups = _cut(hashes, [int(h[:8], 16) for h in hashes], _CHUNK_MASK)
        hashes = [_put(b, _utf8(_json({_TAG: "lc", "h": g}))) for g in groups]
    return {_TAG: "lc", "h": hashes}


def _enc_set(v: set[Any] | frozenset[Any], b: dict[str, bytes] | None) -> Any:
    try:  # sorted by JSON: hash order differs between processes, and fingerprints must not
        items = sorted((_enc(x, b) for x in v), key=_json)
    except _Unsupported as e:
        raise e.up(v) from None
    return {_TAG: "s" if type(v) is set else "fs", "v": items if b is None else _chunk(items, b)}


def _enc_datetime(v: datetime | time, b: dict[str, bytes] | None) -> Any:
    tag, tz = ("dt" if type(v) is datetime else "ti"), v.tzinfo
    out: dict[str, Any]
    if tz is None or type(tz) is timezone:
        out = {_TAG: tag, "v": v.isoformat()}
        offset = tz.utcoffset(None) if tz is not None else None
        if offset is not None and (offset.seconds % 60 or offset.microseconds):
            # fromisoformat drops an offset's sub-minute part on some Pythons: store it whole
            out = {_TAG: tag, "v": v.replace(tzinfo=None).isoformat(),
                   "o": offset // timedelta(microseconds=1)}
    elif type(tz) is ZoneInfo and tz.key and tag == "dt":
        out = {_TAG: tag, "v": v.replace(tzinfo=None).isoformat(), "z": tz.key}
    else:
        raise _Unsupported(v, f"its tzinfo {_name(type(tz))} cannot be stored; use "
                              "datetime.timezone or zoneinfo.ZoneInfo")
    if v.fold:
        out["f"] = 1
    return out


_ENCODERS: dict[type, Callable[[Any, dict[str, bytes] | None], Any]] = {
    tuple: lambda v, b: {_TAG: "t", "v": _seq(v, b)},
    set: _enc_set,
    frozenset: _enc_set,
    bytes: lambda v, b: _blob(v, v, "b", b),
    bytearray: lambda v, b: _blob(v, v, "ba", None),
    datetime: _enc_datetime,
    time: _enc_datetime,
    date: lambda v, b: {_TAG: "da", "v": v.isoformat()},
    timedelta: lambda v, b: {_TAG: "td", "v": [v.days, v.seconds, v.microseconds]},
    uuid.UUID: lambda v, b: {_TAG: "u", "v": v.hex},
    Decimal: lambda v, b: {_TAG: "D", "v": str(v)},
}


def _dump(value: Any, b: dict[str, bytes] | None, what: str, root: str) -> Any:
    try:
        return _enc(value, b)
    except _Unsupported as e:
        word = what.split(" ", 1)[0]
        path = (root or (word if word.isidentifier() else "value")) + "".join(reversed(e.path))
        type_name, why = _name(type(e.obj)), f" ({e.reason})" if e.reason else ""
        raise SerializationError(
            f"cannot store {what}: {path} has type {type_name}, which outlast cannot store{why}. "
            "Use JSON types (str, int, float, bool, None, list, dict), tuples, sets, bytes, "
            "datetimes, UUIDs, Decimals, enums, dataclasses or pydantic models, or convert "
            "the value (e.g. to a str or dict) first",
            what=what, type_name=type_name, path=path,
        ) from None
    except RecursionError:
        msg = f"cannot store {what}: it is nested too deeply or contains itself"
        raise SerializationError(msg, what=what) from None
    except ValueError as exc:  # an int of more than sys.get_int_max_str_digits() digits
        raise SerializationError(f"cannot store {what}: {exc}", what=what) from None


def _text(enc: Any, what: str) -> bytes:
    try:
        return _utf8(_json(enc))
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f"cannot store {what}: {exc}", what=what) from None


def dumps(value: Any, *, what: str = "value", blobs: dict[str, bytes] | None = None) -> bytes:
    """Encode ``value`` as bytes (see the module docstring for the format).

    ``what`` names the value in errors (e.g. ``"result of step 'search'"``). With ``blobs``,
    large parts are added to it as ``hash -> bytes`` and replaced by references; the caller
    stores them and passes them (or a fetcher) to :func:`loads`.

    Raises :class:`SerializationError` naming the path and type of a value it cannot store.
    """
    if value is None:  # the result of every step done for its effect: no encoder needed
        return b"null"
    return _text(_dump(value, blobs, what, ""), what)


def encode_args(args: tuple[Any, ...], kwargs: dict[str, Any], *, what: str = "arguments",
                blobs: dict[str, bytes] | None = None) -> bytes:
    """Encode call arguments as ``[args, kwargs]``; errors name ``args[i]`` or ``kwargs['k']``."""
    enc = [_dump(list(args), blobs, what, "args"), _dump(kwargs, blobs, what, "kwargs")]
    return _text(enc, what)


# --- decoding -------------------------------------------------------------------------------


def _dt(d: dict[str, Any]) -> Any:
    value = (datetime if d[_TAG] == "dt" else time).fromisoformat(d["v"])
    if "z" in d:
        value = value.replace(tzinfo=ZoneInfo(d["z"]))
    elif "o" in d:
        value = value.replace(tzinfo=timezone(timedelta(microseconds=int(d["o"]))))
    return value.replace(fold=1) if d.get("f") else value


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "t": lambda d: tuple(_arr(d["v"])),
    "d": lambda d: {k: x for k, x in map(_arr, _arr(d["v"]))},
    "s": lambda d: set(_arr(d["v"])),
    "fs": lambda d: frozenset(_arr(d["v"])),
    "f": lambda d: {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[d["v"]],
    "b": lambda d: base64.b64decode(d["v"], validate=True),
    "ba": lambda d: bytearray(base64.b64decode(d["v"], validate=True)),
    "dt": _dt,
    "ti": _dt,
    "da": lambda d: date.fromisoformat(d["v"]),
    "td": lambda d: timedelta(*_arr(d["v"])),
    "u": lambda d: uuid.UUID(hex=d["v"]),
    "D": lambda d: Decimal(d["v"]),
    **CLASS_DECODERS,  # Enum, named tuple, dataclass, pydantic model: classes stored by name
}


def _hook(d: dict[str, Any]) -> Any:
    tag = d.get(_TAG)
    if tag is None:
        return d
    if (decoder := _DECODERS.get(tag)) is not None:
        return decoder(d)
    if tag in ("ref", "lc"):
        raise SerializationError("it refers to blobs, but loads() was given no blobs=")
    raise ValueError(f"unknown tag {tag!r}")


_PLAIN, _DECODER = json.JSONDecoder(), json.JSONDecoder(object_hook=_hook)


def _parse(decoder: json.JSONDecoder, text: str) -> Any:
    obj, end = decoder.raw_decode(text)  # raw_decode skips decode()'s whitespace matching
    if end != len(text):
        raise ValueError(f"extra data at character {end}")
    return obj


# Our own writer puts "__o" first and uses no spaces, and a JSON string cannot hold an
# unescaped quote: these patterns match real references only, never text inside a string.
_REF_RE = re.compile(r'\{"__o":"ref","h":"([0-9a-f]{32})"(,"k")?')
_LC_RE = re.compile(r'\{"__o":"lc","h":\[([^\]]*)\]')
_HEX_RE = re.compile(r"[0-9a-f]{32}")


class _Loader:
    """Decodes one payload whose references point into a blob mapping or fetcher."""

    def __init__(self, source: Blobs) -> None:
        self.fetch = None if isinstance(source, Mapping) else source
        self.store: Mapping[str, bytes] = source if isinstance(source, Mapping) else {}
        self.cache: dict[str, bytes] = {}  # verified blobs
        self.decoder = json.JSONDecoder(object_hook=self.hook)
        self.bytes = self.items = 0  # blob bytes and chunk items used so far, repeats included
        self.expanded: list[Any] | None = None  # the list the last "lc" node built

    def load(self, text: str) -> Any:
        todo = [text] if self.fetch is not None else []
        # One batched fetch per level of nesting, instead of one round trip per blob.
        while todo:
            wanted: dict[str, bool] = {}  # hash -> holds JSON (so it may hold more refs)
            for t in todo:
                for m in _REF_RE.finditer(t):
                    wanted[m[1]] = wanted.get(m[1], False) or not m[2]
                for m in _LC_RE.finditer(t):
                    wanted.update(dict.fromkeys(_HEX_RE.findall(m[1]), True))
            missing = [h for h in wanted if h not in self.cache]
            got = self.fetch(missing) if missing and self.fetch is not None else {}
            todo = []
            for h in missing:
                if (data := got.get(h)) is not None:  # one still missing fails when needed
                    self.cache[h] = _verify(h, data)
                    if wanted[h]:
                        todo.append(self.cache[h].decode("utf-8", "surrogatepass"))
        return _parse(self.decoder, text)

    def blob(self, h: str) -> bytes:
        if (data := self.cache.get(h)) is None:
            raw = (self.fetch([h]) if self.fetch is not None else self.store).get(h)
            if raw is None:
                raise SerializationError(f"blob {h} is missing from the store", blob=h)
            data = self.cache[h] = _verify(h, raw)
        # Stored data may name one blob many times, in nested lists of references: count
        # every use, so a few KB cannot claim gigabytes (the limits are in the docstring).
        self.bytes += len(data)
        if self.bytes > MAX_DECODED_BYTES:
            raise SerializationError(
                f"its blob references expand to more than {MAX_DECODED_BYTES} bytes "
                "(serde.MAX_DECODED_BYTES); the stored data is corrupt or hostile")
        return data

    def hook(self, d: dict[str, Any]) -> Any:
        tag = d.get(_TAG)
        if tag == "ref":
            data, kind = self.blob(d["h"]), d.get("k")
            if kind == "b":
                return data
            text = data.decode("utf-8", "surrogatepass")
            return text if kind == "s" else _parse(self.decoder, text)
        if tag == "lc":
            out: list[Any] = []
            for h in _arr(d["h"]):
                part = _arr(_parse(self.decoder, self.blob(h).decode("utf-8", "surrogatepass")))
                if part is not self.expanded:  # a nested "lc" counted its own chunks
                    self.count(len(part))
                out += part
            if "t" in d:  # a mountain range's inline tail (outlast.serde_append)
                tail = _arr(d["t"])
                self.count(len(tail))
                out += tail
            self.expanded = out
            return out
        return _hook(d)

    def count(self, items: int) -> None:
        self.items += items
        if self.items > MAX_DECODED_ITEMS:
            raise SerializationError(
                f"its chunked lists expand to more than {MAX_DECODED_ITEMS} items "
                "(serde.MAX_DECODED_ITEMS); the stored data is corrupt or hostile")


def _verify(h: str, data: bytes) -> bytes:
    data = bytes(data)  # a driver may hand back a memoryview
    if fingerprint(data) != h:
        raise SerializationError(f"blob {h} is corrupt: its bytes do not match its hash", blob=h)
    return data


def loads(data: bytes, *, what: str = "value", blobs: Blobs | None = None) -> Any:
    """Decode bytes written by :func:`dumps` into an equal value of the same types.

    ``blobs`` is a mapping of hash to bytes, or a callable that takes a list of missing
    hashes and returns a mapping of those it has (called once per level of nesting).
    Raises :class:`SerializationError` naming ``what`` for a corrupt payload, a missing or
    corrupt blob, or a payload past the caps (:data:`MAX_UNPACKED_BYTES`,
    :data:`MAX_DECODED_BYTES`, :data:`MAX_DECODED_ITEMS`); its subclass
    :class:`UnreadableValue` for a class that is not loaded in this process.
    """
    try:
        if data[:1] == _PACKED:
            data = _unpack(data)
        elif data[:1] == b"\xff":  # sealed (outlast.encryption), and read without its key
            from .encryption import missing_key

            raise missing_key(bytes(data), None)
        text = bytes(data).decode("utf-8", "surrogatepass")
        if '"__o"' not in text:  # plain JSON: no hook, all in C
            return _parse(_PLAIN, text)
        return _parse(_DECODER, text) if blobs is None else _Loader(blobs).load(text)
    except SerializationError as exc:
        attrs = {**exc._attrs, "what": what}
        raise type(exc)(f"cannot read {what}: {exc.message}", **attrs) from None
    except (*_CORRUPT, RecursionError) as exc:
        raise SerializationError(
            f"cannot read {what}: the stored payload is corrupt or was not written by this "
            f"version of outlast ({type(exc).__name__}: {exc})",
            what=what,
        ) from None


#: the first byte of a zlib stream; JSON text never starts with it
_PACKED = b"x"
PACK_THRESHOLD = 512


def _unpack(data: bytes) -> bytes:
    inflate = zlib.decompressobj()
    out = inflate.decompress(data, MAX_UNPACKED_BYTES)
    if inflate.unconsumed_tail:
        raise SerializationError(f"the packed row inflates to more than {MAX_UNPACKED_BYTES} "
                                 "bytes (serde.MAX_UNPACKED_BYTES); it is corrupt or hostile")
    if not inflate.eof or inflate.unused_data:
        raise ValueError("the packed row is truncated or has trailing bytes")
    return out


def pack(data: bytes) -> bytes:
    """``data`` (from :func:`dumps`) zlib-compressed when that saves a fifth; :func:`loads`
    reads either form. For journal rows only: fingerprints are taken before packing, and
    blobs are never packed, so hashes do not depend on the zlib version."""
    if len(data) < PACK_THRESHOLD:
        return data
    packed = zlib.compress(data, 6)
    return packed if len(packed) <= len(data) * 0.8 else data


def decode_args(
    data: bytes, *, what: str = "arguments", blobs: Blobs | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode bytes written by :func:`encode_args` back into ``(args, kwargs)``."""
    value = loads(data, what=what, blobs=blobs)
    if type(value) is list and len(value) == 2 and type(value[0]) is list and type(value[1]) is dict:
        return tuple(value[0]), value[1]
    raise SerializationError(f"cannot read {what}: it is not [args, kwargs]", what=what)
