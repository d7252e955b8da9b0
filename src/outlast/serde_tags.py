"""The primitives every part of outlast's value format shares: the tag key, the marker for a
missing value, the internal "cannot store this" signal, and two small checks.

Kept apart so that the codec (:mod:`outlast.serde`), classes stored by name
(:mod:`outlast.serde_classes`) and recorded errors (:mod:`outlast.serde_errors`) build on it
without importing each other in a circle: classes below the codec, errors above it.
"""

from __future__ import annotations

from typing import Any

#: The key that marks a tagged value: ``{"__o": "t", "v": [...]}`` (see :mod:`outlast.serde`).
_TAG = "__o"
_MISSING: Any = object()


class _Unsupported(Exception):
    """Internal: a value that cannot be stored; each container on the way out adds its step."""

    def __init__(self, obj: Any, reason: str = "") -> None:
        super().__init__(reason)
        self.obj = self.node = obj
        self.reason = reason
        self.path: list[str] = []

    def up(self, parent: Any) -> _Unsupported:
        # Found by identity on the way out, so the hot path never builds a path.
        if isinstance(parent, dict):
            children = [(f"[{k!r}]", x) for k, x in parent.items()]
            children += [(f"<key {k!r}>", k) for k in parent]
        else:
            index = isinstance(parent, list | tuple)
            children = [(f"[{i}]" if index else "{...}", x) for i, x in enumerate(parent)]
        self.path += [label for label, child in children if child is self.node][:1]
        self.node = parent
        return self


def _name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _arr(v: Any) -> list[Any]:
    if type(v) is not list:
        raise ValueError(f"expected a JSON array, got {type(v).__name__}")
    return v
