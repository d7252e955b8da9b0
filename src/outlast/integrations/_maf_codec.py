"""Agent Framework values to and from what :mod:`outlast.serde` stores, without pickle.

serde already stores JSON types, tuples, sets, bytes, datetimes, UUIDs, Decimals, enums,
dataclasses and pydantic models. A checkpoint also holds the framework's own objects, which
are none of those; they are replaced, on the way in, by tagged dicts (``{"__maf": kind, ...}``)
and rebuilt on the way out:

* ``"obj"``: a ``SerializationMixin`` (``Message``, ``Content``, ``AgentResponse``, sessions...)
  as its ``to_dict()``, rebuilt with ``from_dict``;
* ``"event"``: a ``WorkflowEvent`` (pending ``request_info`` requests) as its attributes;
* ``"type"``: a class (an event's request and response types) by name;
* ``"j"``: an ``"obj"`` of 1 KB or more, as its JSON text (one blob, see :func:`to_stored`);
* ``"d"``: a user dict that happens to have the key ``"__maf"`` (escaped).

Like serde, nothing named by stored data is imported: a class is looked up among the modules
already imported and must be of the expected kind. Dataclasses (``WorkflowMessage``) are walked
into and copied when a field changes, so serde still stores them as dataclasses.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from typing import Any

from agent_framework import WorkflowCheckpointException, WorkflowEvent
from agent_framework._serialization import SerializationMixin

from .. import serde

__all__ = ["from_stored", "to_stored"]

_TAG = "__maf"
_PLAIN = (str, int, float, bool, type(None), bytes)


def to_stored(value: Any) -> Any:
    """``value`` with every framework object replaced by its tagged form (a new tree: the
    caller's objects are never changed)."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is list:
        return [to_stored(x) for x in value]
    if t is dict:
        out = {k: to_stored(x) for k, x in value.items()}
        return {_TAG: "d", "v": out} if _TAG in value else out
    if t is tuple:
        return tuple(to_stored(x) for x in value)
    if isinstance(value, type):
        return {_TAG: "type", "c": _ref(value)}
    if isinstance(value, WorkflowEvent):
        return {_TAG: "event", "c": _ref(t), "v": to_stored(dict(vars(value)))}
    if isinstance(value, SerializationMixin):
        tagged = {_TAG: "obj", "c": _ref(t), "v": to_stored(value.to_dict())}
        # A large object (a message with its text) becomes one JSON text, which serde stores
        # as one blob: a conversation's list then holds a short reference per message, so
        # the chunk rewritten when it grows is small (not the message's structure around a
        # reference to its text).
        text = serde.dumps(tagged, what=f"{t.__name__} {value!r:.80}")
        return {_TAG: "j", "v": text.decode()} if len(text) >= serde.BLOB_THRESHOLD else tagged
    if dataclasses.is_dataclass(value):
        return _dataclass_out(value)
    return value  # serde stores it, or names it (path and type) in its error


def from_stored(value: Any) -> Any:
    """The inverse of :func:`to_stored` on what serde read back (modified in place where
    that is safe: the tree is fresh from the decoder)."""
    t = type(value)
    if t is list:
        return [from_stored(x) for x in value]
    if t is dict:
        kind = value.get(_TAG)
        if kind is None:
            return {k: from_stored(x) for k, x in value.items()}
        return _DECODERS[kind](value) if kind in _DECODERS else _corrupt(f"tag {kind!r}")
    if t is tuple:
        return tuple(from_stored(x) for x in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if hasattr(value, f.name):
                object.__setattr__(value, f.name, from_stored(getattr(value, f.name)))
    return value


def _dataclass_out(value: Any) -> Any:
    changed = {}
    for f in dataclasses.fields(value):
        if hasattr(value, f.name):
            old = getattr(value, f.name)
            new = to_stored(old)
            if new is not old:
                changed[f.name] = new
    if not changed:
        return value
    clone = copy.copy(value)  # the caller's object keeps its framework values
    for name, new in changed.items():
        object.__setattr__(clone, name, new)
    return clone


def _ref(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _lookup(ref: str, base: type | None) -> Any:
    module, _, qualname = ref.partition(":")
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and (base is None or issubclass(obj, base)):
        return obj
    if module not in sys.modules:
        problem = (f"module {module} is not imported (outlast never imports code named by "
                   f"stored data): import {module} before loading the checkpoint")
    else:
        problem = "that name is missing" if obj is None else (
            f"it is not a {'class' if base is None else base.__name__}")
    raise WorkflowCheckpointException(
        f"a stored checkpoint value needs {module}.{qualname}, but {problem}")


def _corrupt(what: str) -> Any:
    raise WorkflowCheckpointException(f"stored checkpoint value is corrupt: unknown {what}")


def _event(d: dict[str, Any]) -> Any:
    cls = _lookup(d["c"], WorkflowEvent)
    event = cls.__new__(cls)  # as pickle builds it: the attributes as they were
    event.__dict__.update(from_stored(d["v"]))
    return event


_DECODERS: dict[str, Any] = {
    "d": lambda d: {k: from_stored(x) for k, x in d["v"].items()},
    "j": lambda d: from_stored(serde.loads(d["v"].encode(), what="a stored framework object")),
    "type": lambda d: _lookup(d["c"], None),
    "event": _event,
    "obj": lambda d: _lookup(d["c"], SerializationMixin).from_dict(from_stored(d["v"])),
}
