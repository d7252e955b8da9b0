"""Appendable lists: a growing list stored so that each version costs what was added.

A model call sends the whole conversation every time. Its request is fingerprinted in the
ordinary encoding (:func:`outlast.serde.dumps`: content-defined chunks, whose unfinished last
chunk, grouping nodes and hash list are rewritten at every call), but stored by
:func:`dumps_appendable`, in which each list at the top level of a dict is a *mountain range*:

* the elements in leaves of :data:`LEAF` at fixed positions (leaf ``i`` holds elements
  ``LEAF*i`` to ``LEAF*i + LEAF - 1``), each leaf a blob holding a JSON list;
* the full leaves joined into perfect binary trees of ``"lc"`` nodes, one tree (a peak) per
  set bit of the number of leaves, largest first;
* the last elements (fewer than :data:`LEAF`) inline::

    {"__o":"lc","h":[peak,...],"t":[element,...]}

The shape depends on the list alone (no history, no other journal entry), so every version
of a growing list shares the leaves and subtrees of the versions before it: a call that adds
two messages writes a leaf every ``LEAF / 2`` calls, a node per merge, and a row holding at
most ``log2(n / LEAF) + 1`` hashes and ``LEAF - 1`` elements. Trees are ``log2(n)`` deep.
:func:`outlast.serde.loads` reads it with the ordinary ``"lc"`` rule (the chunks
concatenated, then ``t``); readers before 0.2.0 cannot.
"""

from __future__ import annotations

from typing import Any

from .serde import BLOB_THRESHOLD, _dump, _json, _put, _text, _utf8, dumps
from .serde_tags import _TAG

__all__ = ["LEAF", "dumps_appendable"]

#: Elements per leaf. Smaller leaves mean a shorter inline tail and more, smaller blobs.
LEAF = 8


def dumps_appendable(value: Any, *, what: str, blobs: dict[str, bytes]) -> bytes:
    """``value`` as :func:`outlast.serde.dumps` with ``blobs`` would store it, except that a
    long list at the top level of a plain dict is a mountain range (see the module
    docstring). Reads back equal to ``value``; the bytes differ from ``dumps``'s, so take
    fingerprints of ``dumps``."""
    if type(value) is not dict or _TAG in value or any(type(k) is not str for k in value):
        return dumps(value, what=what, blobs=blobs)
    out = {
        k: _range([_dump(e, blobs, what, f"value[{k!r}][{i}]") for i, e in enumerate(x)], blobs)
        if type(x) is list
        else _dump(x, blobs, what, f"value[{k!r}]")
        for k, x in value.items()
    }
    text = _text(out, what)
    if len(text) >= BLOB_THRESHOLD:  # as dumps does with a large dict: one reference
        return _text({_TAG: "ref", "h": _put(blobs, text)}, what)
    return text


def _range(items: list[Any], blobs: dict[str, bytes]) -> Any:
    """A list of encoded elements as a mountain range, or as itself while it is short."""
    texts = [_json(x) for x in items]
    full = len(texts) // LEAF
    if full == 0 or sum(map(len, texts)) + len(texts) < BLOB_THRESHOLD:
        return items
    leaves = [
        _put(blobs, _utf8("[" + ",".join(texts[i * LEAF : (i + 1) * LEAF]) + "]"))
        for i in range(full)
    ]
    peaks, start = [], 0
    while start < full:
        size = 1 << ((full - start).bit_length() - 1)
        peaks.append(_tree(leaves, start, size, blobs))
        start += size
    return {_TAG: "lc", "h": peaks, "t": items[full * LEAF :]}


def _tree(leaves: list[str], start: int, size: int, blobs: dict[str, bytes]) -> str:
    if size == 1:
        return leaves[start]
    half = size // 2
    pair = [_tree(leaves, start, half, blobs), _tree(leaves, start + half, half, blobs)]
    return _put(blobs, _utf8(_json({_TAG: "lc", "h": pair})))
