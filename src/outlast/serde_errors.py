"""Recorded exceptions: how a step's final error is stored and rebuilt (see :mod:`outlast.serde`).

The class is stored by name and rebuilt only when it is already imported; otherwise the
replay raises :class:`~outlast.errors.StepFailed` naming the original type and message.
"""

from __future__ import annotations

from typing import Any

from .errors import (
    Interrupt,
    OutlastError,
    SerializationError,
    StepFailed,
    _rebuild,
    _rebuild_interrupt,
)
from .serde import _MISSING, _TAG, _enc, _find_class, _name, _text, _Unsupported, loads

__all__ = ["dump_error", "load_error"]



def _try_enc(value: Any) -> Any:
    try:
        return _enc(value, None)
    except (_Unsupported, RecursionError, ValueError):
        return _MISSING


def dump_error(exc: BaseException) -> bytes:
    """Encode an exception: its class by name, ``str(exc)``, and its args when they can be
    stored; for an outlast error, also its keyword attributes that can be stored."""
    t = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {_name(t)}>"
    doc: dict[str, Any] = {"c": f"{t.__module__}:{t.__qualname__}", "m": message}
    if (args := _try_enc(exc.args)) is not _MISSING:
        doc["a"] = args
    if isinstance(exc, OutlastError | Interrupt):
        raw = getattr(exc, "_attrs", {})  # a subclass may skip OutlastError.__init__
        attrs = [[k, x] for k, v in raw.items() if (x := _try_enc(v)) is not _MISSING]
        doc["k"] = {_TAG: "d", "v": attrs}
    return _text(doc, "error")


def load_error(data: bytes, *, step: str | None = None) -> BaseException:
    """Rebuild an exception written by :func:`dump_error`, or a :class:`StepFailed` for it.

    The original class is used when it is already imported (never imported here), is an
    exception class, and accepts the recorded args (outlast errors: message and attributes).
    """
    where = f"step {step!r}" if step else "the run"
    what = f"recorded error of {where}"
    doc = loads(data, what=what)
    if doc is None:
        return StepFailed(f"{where} failed without a recorded error", step=step,
                          error_type="", error_message="")
    if type(doc) is not dict or type(doc.get("c")) is not str or type(doc.get("m")) is not str:
        raise SerializationError(f"cannot read {what}: it is not an error", what=what)
    module, _, qualname = doc["c"].partition(":")
    type_name, message = f"{module}.{qualname}", doc["m"]
    cls = _find_class(module, qualname)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        if isinstance(err := _construct(cls, message, doc.get("a"), doc.get("k")), cls):
            return err
        reason = "its class could not be rebuilt from the recorded arguments"
    else:
        reason = (f"class {type_name} is not loaded in this process; import {module} before "
                  "resuming to get the original exception")
    return StepFailed(f"{where} failed with {type_name}: {message} ({reason})", step=step,
                      error_type=type_name, error_message=message)


def _construct(cls: type[BaseException], message: str, args: Any, attrs: Any) -> Any:
    """The exception rebuilt from what was recorded, or None if the class does not accept it."""
    attrs = attrs if type(attrs) is dict else {}
    try:
        if issubclass(cls, OutlastError):
            return _rebuild(cls, message, attrs)  # the same path as unpickling
        if issubclass(cls, Interrupt):
            return _rebuild_interrupt(cls, message, attrs)
        return cls(*args) if type(args) is tuple else cls(message)
    except Exception:
        return None
