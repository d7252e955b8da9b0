"""One JSON view of stored values, for people and scripts: ``--json``, ``outlast serve``, ``outlast ui``.

:mod:`outlast.serde` stores values with full type fidelity in its own tagged format; this
module turns any value outlast can store (and anything else, as a last resort) into plain,
valid JSON that a browser or ``jq`` reads. The view is for reading: it is not parsed back.
``json.dumps(to_json(v), allow_nan=False)`` always succeeds.

Values JSON has a form for are written as themselves: ``None``, bools, finite floats, str,
lists, ints within JavaScript's exact range (``|n| <= 2**53``), and dicts whose keys are all
str (and none of them a tag name below). Everything else is an object with one tag key,
first::

    {"$float": "NaN" | "Infinity" | "-Infinity"}
    {"$int": "123456789012345678901234567890"}   beyond 2**53 (hex "0x..." past 4,300 digits)
    {"$str": "a\\ud800b"}                        a str with lone surrogates, escaped
    {"$bytes": "base64"}                          bytes and bytearray
    {"$tuple": [...]}
    {"$set": [...]}                               set and frozenset, sorted by their JSON
    {"$map": [[key, value], ...]}                 dict with a non-str key or a tag-named key
    {"$datetime" | "$date" | "$time": "ISO 8601"}
    {"$timedelta": seconds}                       a float
    {"$uuid": "8-4-4-4-12"}, {"$decimal": "1.10"}
    {"$enum": "mod:Class.NAME", "value": ...}
    {"$dataclass" | "$namedtuple" | "$model": "mod:Class", "fields": {...}}
    {"$error": "mod:Class", "message": str, "args": [...]}   an exception
    {"$repr": "...", "type": "mod:Class"}         anything else (at most 2,000 chars)
    {"$truncated": "nested deeper than 200 levels"}

``$model`` is a pydantic model (its ``model_dump(mode="python")``). A dict key is checked
against the tag names only: ``{"$ref": 1}`` stays as it is, ``{"$bytes": 1}`` becomes a ``$map``,
so a tagged object in the output always means a tag.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import RunInfo

__all__ = ["TAGS", "dumps", "run_fields", "to_json"]

#: the tag keys this view writes; a user dict with one of them as a key is written as $map
TAGS = frozenset({
    "$float", "$int", "$str", "$bytes", "$tuple", "$set", "$map", "$datetime", "$date",
    "$time", "$timedelta", "$uuid", "$decimal", "$enum", "$dataclass", "$namedtuple",
    "$model", "$error", "$repr", "$truncated",
})
MAX_DEPTH = 200
_SAFE_INT = 2**53
_REPR_MAX = 2000


def dumps(value: Any, *, indent: int | None = None) -> str:
    """``value``'s view as JSON text (never NaN or Infinity; non-ASCII kept as is)."""
    return json.dumps(to_json(value), indent=indent, ensure_ascii=False, allow_nan=False)


def to_json(value: Any) -> Any:
    """``value`` as plain JSON data (see the module docstring for the tagged forms)."""
    return _view(value, 0)


def run_fields(info: RunInfo) -> dict[str, Any]:
    """A run's own fields, the same keys for ``outlast show --json`` and ``runs --json``,
    ``GET /runs/{id}`` of ``outlast serve`` and the dashboard's API (plain values: view them
    with the rest through :func:`to_json` or :func:`dumps`). ``stats`` holds figures only (the
    engine's bookkeeping is not shown); a fork names its origin in ``forked_from`` (a run id)
    and ``forked_at`` (a checkpoint id), None for other runs."""
    return {
        "run_id": info.run_id, "workflow": info.workflow, "status": info.status,
        "queue": info.queue, "created_at": info.created_at, "started_at": info.started_at,
        "ended_at": info.ended_at, "reason": info.reason, "recoveries": info.recoveries,
        "parent_id": info.parent_id, "stats": info.stats,
        "forked_from": info.forked_from, "forked_at": info.forked_at,
    }


def _view(v: Any, depth: int) -> Any:
    t = type(v)
    if v is None or t is bool:
        return v
    if t is str:
        return v if v.isascii() or _utf8_ok(v) else {"$str": _escape(v)}
    if t is int:
        return v if -_SAFE_INT <= v <= _SAFE_INT else {"$int": _big(v)}
    if t is float:
        return v if math.isfinite(v) else {"$float": _FLOATS[repr(v)]}
    if depth >= MAX_DEPTH:
        return {"$truncated": f"nested deeper than {MAX_DEPTH} levels"}
    d = depth + 1
    if t is list:
        return [_view(x, d) for x in v]
    if t is dict:
        return _dict(v, d)
    return _other(v, t, d)


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escape(s: str) -> str:
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _big(v: int) -> str:
    try:
        return str(v)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        return hex(v)


_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _dict(v: dict[Any, Any], d: int) -> Any:
    if all(type(k) is str and k not in TAGS for k in v):
        return {_key(k): _view(x, d) for k, x in v.items()}
    return {"$map": [[_view(k, d), _view(x, d)] for k, x in v.items()]}


def _key(k: str) -> str:
    return k if k.isascii() or _utf8_ok(k) else _escape(k)


def _sorted(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda x: json.dumps(x, sort_keys=True, ensure_ascii=False))


def _other(v: Any, t: type, d: int) -> Any:
    if isinstance(v, enum.Enum):  # before int/str: IntEnum and StrEnum members are both
        return {"$enum": f"{_ref(t)}.{v.name}", "value": _view(v.value, d)}
    if isinstance(v, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, tuple) and hasattr(t, "_fields"):
        return {"$namedtuple": _ref(t), "fields": _view(dict(zip(t._fields, v, strict=False)), d)}
    if isinstance(v, tuple):
        return {"$tuple": [_view(x, d) for x in v]}
    if isinstance(v, set | frozenset):
        return {"$set": _sorted([_view(x, d) for x in v])}
    if isinstance(v, list):
        return [_view(x, d) for x in v]
    if isinstance(v, dict):
        return _dict(v, d)
    if isinstance(v, float | int | str):  # subclasses: viewed as their base type
        base = next(c for c in t.__mro__ if c in (float, int, str))
        return _view(base(v), d - 1)
    if isinstance(v, datetime):
        return {"$datetime": v.isoformat()}
    if isinstance(v, date):
        return {"$date": v.isoformat()}
    if isinstance(v, time):
        return {"$time": v.isoformat()}
    if isinstance(v, timedelta):
        return {"$timedelta": v.total_seconds()}
    if isinstance(v, uuid.UUID):
        return {"$uuid": str(v)}
    if isinstance(v, Decimal):
        return {"$decimal": str(v)}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v) if hasattr(v, f.name)}
        return {"$dataclass": _ref(t), "fields": _view(fields, d)}
    if isinstance(v, BaseException):
        return {"$error": _ref(t), "message": _safe_str(v), "args": _view(list(v.args), d)}
    if _is_model(t):
        try:
            fields = v.model_dump(mode="python")
        except Exception:
            return _repr(v, t)
        return {"$model": _ref(t), "fields": _view(fields, d)}
    return _repr(v, t)


def _is_model(t: type) -> bool:
    return hasattr(t, "model_dump") and any(
        c.__name__ == "BaseModel" and c.__module__.startswith("pydantic") for c in t.__mro__
    )


def _ref(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


def _safe_str(v: Any) -> str:
    try:
        return _escape(str(v))
    except Exception:
        return f"<unprintable {_ref(type(v))}>"


def _repr(v: Any, t: type) -> dict[str, Any]:
    try:
        text = repr(v)
    except Exception:
        text = f"<unprintable {_ref(t)}>"
    return {"$repr": _escape(text[:_REPR_MAX]), "type": _ref(t)}
