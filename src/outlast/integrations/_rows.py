"""Helpers shared by the framework checkpointers (LangGraph, Agent Framework): row packing and
the walk that finds which blobs a set of stored rows still uses. No framework import here."""

from __future__ import annotations

import zlib
from typing import Any

from ..serde import _HEX_RE, _LC_RE, _REF_RE

__all__ = ["pack_row", "reachable", "unpack_row"]


def pack_row(text: bytes) -> bytes:
    """A row's JSON, deflated when that saves a fifth: rows repeat versions and hex hashes,
    which deflate well. JSON never starts with a NUL, which marks deflated rows."""
    packed = zlib.compress(text, 6)
    return b"\0" + packed if len(packed) + 1 < len(text) * 0.8 else text


def unpack_row(data: bytes) -> bytes:
    """The JSON of a row written by :func:`pack_row`."""
    data = bytes(data)
    return zlib.decompress(data[1:]) if data[:1] == b"\0" else data


def reachable(payloads: list[bytes], fetch: Any) -> set[str]:
    """Every blob hash the :mod:`outlast.serde` payloads use, following references inside
    JSON blobs (fetched a level at a time); raw str/bytes blobs are leaves, never read."""
    seen: set[str] = set()
    todo = [unpack_row(p).decode("utf-8", "surrogatepass") for p in payloads]
    while todo:
        nested: list[str] = []  # JSON blobs, which may hold more references
        for text in todo:
            for m in _REF_RE.finditer(text):
                if m[1] not in seen:
                    seen.add(m[1])
                    if not m[2]:
                        nested.append(m[1])
            for m in _LC_RE.finditer(text):
                for h in _HEX_RE.findall(m[1]):
                    if h not in seen:
                        seen.add(h)
                        nested.append(h)
        got = fetch(nested) if nested else {}
        todo = [bytes(got[h]).decode("utf-8", "surrogatepass") for h in nested if h in got]
    return seen
