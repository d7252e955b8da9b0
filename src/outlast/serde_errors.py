"""Recorded exceptions: how a step's final error is stored and rebuilt (see :mod:`outlast.serde`).

A recorded error is ``{"c":"mod:Qual","m":str(exc),"a":args,...}`` plus, when present:
``"k"`` an outlast error's keyword attributes, ``"x"`` the other exceptions' ``__dict__``
attributes that can be stored, ``"h"`` HTTP responses and requests held in attributes
(recorded as what a handler reads), ``"os"`` an ``OSError``'s errno, strerror and filenames.

Rebuilding, so that ``except QuotaError`` and ``e.code`` behave the same on replay:

* Only subclasses of :class:`Exception` are rebuilt, and never outlast's internal classes:
  a record naming ``SystemExit``, ``KeyboardInterrupt`` or outlast's control flow
  (``Suspend``, ``Cancelled``...) loads as :class:`~outlast.errors.StepFailed`.
* The class must already be imported (nothing is imported here); otherwise
  :class:`~outlast.errors.StepFailed` names the original type and message.
* A class whose constructor is Python code is rebuilt without calling it, like pickle builds
  objects: ``cls.__new__(cls, *args)``, then ``args`` and the recorded attributes are set.
  A constructor that is all built-in (``ValueError``, ``OSError``...) is called with the args.
* An attribute holding an HTTP response (``status_code`` and ``headers``, as on
  ``openai.APIStatusError``) comes back as a :class:`RecordedResponse` with its status,
  headers (no ``Set-Cookie``), text (at most :data:`MAX_TEXT` characters) and ``json()``; a
  request as a :class:`RecordedRequest` with its method and URL (no query, no headers:
  they may hold credentials).
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import OutlastError, SerializationError, StepFailed, _rebuild
from .serde import _enc, _text, loads
from .serde_classes import class_ref, find_class
from .serde_tags import _MISSING, _TAG, _name

__all__ = ["MAX_TEXT", "RecordedRequest", "RecordedResponse", "dump_error", "load_error"]

#: The most characters of an HTTP response body kept with a recorded error.
MAX_TEXT = 64 * 1024
_OS_FIELDS = ("errno", "strerror", "filename", "filename2")


class RecordedRequest:
    """The HTTP request an error held when it was recorded: ``method`` and ``url``."""

    def __init__(self, method: str, url: str) -> None:
        self.method = method
        self.url = url

    def __repr__(self) -> str:
        return f"<RecordedRequest {self.method} {self.url}>"


class _Headers(Mapping[str, str]):
    """Response headers, case-insensitive like an HTTP client's."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._items = {k.lower(): v for k, v in pairs}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class RecordedResponse:
    """The HTTP response an error held when it was recorded (e.g. ``openai.APIStatusError``'s
    ``response``): ``status_code``, ``headers``, ``text``, ``content``, ``json()``, ``request``."""

    def __init__(self, status_code: int, headers: list[tuple[str, str]], text: str,
                 request: RecordedRequest | None = None) -> None:
        self.status_code = status_code
        self.headers: Mapping[str, str] = _Headers(headers)
        self.text = text
        self.request = request

    @property
    def content(self) -> bytes:
        return self.text.encode("utf-8", "surrogatepass")

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<RecordedResponse [{self.status_code}]>"


# --- writing --------------------------------------------------------------------------------


def _try_enc(value: Any) -> Any:
    try:
        return _enc(value, None)
    except Exception:  # a failure must be recorded whatever its attributes hold
        return _MISSING


def _pairs(values: Mapping[str, Any] | list[list[Any]]) -> Any:
    return {_TAG: "d", "v": list(values.items()) if isinstance(values, Mapping) else values}


def dump_error(exc: BaseException) -> bytes:
    """Encode an exception: its class by name, ``str(exc)``, its args and attributes when
    they can be stored (see the module docstring)."""
    t = type(exc)
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {_name(t)}>"
    doc: dict[str, Any] = {"c": class_ref(t), "m": message}
    if (args := _try_enc(exc.args)) is not _MISSING:
        doc["a"] = args
    if isinstance(exc, OutlastError):
        raw = getattr(exc, "_attrs", {})  # a subclass may skip OutlastError.__init__
        doc["k"] = _pairs([[k, x] for k, v in raw.items() if (x := _try_enc(v)) is not _MISSING])
        return _text(doc, "error")
    attrs: list[list[Any]] = []
    http: list[list[Any]] = []
    for name, value in getattr(exc, "__dict__", {}).items():
        if type(name) is not str:
            continue
        if (enc := _try_enc(value)) is not _MISSING:
            attrs.append([name, enc])
        elif (stub := _http_stub(value)) is not None:
            http.append([name, stub])
    if attrs:
        doc["x"] = _pairs(attrs)
    if http:
        doc["h"] = _pairs(http)
    if isinstance(exc, OSError):
        fields = [getattr(exc, f) for f in _OS_FIELDS]
        if (enc := _try_enc(fields)) is not _MISSING:
            doc["os"] = enc
    return _text(doc, "error")


def _http_stub(value: Any) -> list[Any] | None:
    """What a handler reads from an HTTP response or request, as stored data; else None."""
    try:
        if isinstance(status := getattr(value, "status_code", None), int) and hasattr(
            value, "headers"
        ):
            headers = [[str(k), str(v)] for k, v in value.headers.items()
                       if str(k).lower() != "set-cookie"]
            try:
                text = str(value.text)[:MAX_TEXT]
            except Exception:  # a streamed body that was never read
                text = ""
            request = getattr(value, "_request", None) or _safe_request(value)
            return ["response", status, headers, text, _http_stub(request) if request else None]
        method, url = getattr(value, "method", None), getattr(value, "url", None)
        if isinstance(method, str | bytes) and url is not None:
            method = method.decode("ascii", "replace") if isinstance(method, bytes) else method
            return ["request", method, str(url).split("?", 1)[0].split("#", 1)[0]]
    except Exception:  # an object that only looks like one: leave the attribute out
        return None
    return None


def _safe_request(response: Any) -> Any:
    try:  # httpx raises when a response was built without a request
        return getattr(response, "request", None)
    except Exception:
        return None


# --- reading --------------------------------------------------------------------------------


def load_error(data: bytes, *, step: str | None = None) -> BaseException:
    """Rebuild an exception written by :func:`dump_error`, or a :class:`StepFailed` for it
    (see the module docstring for what is rebuilt)."""
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
    cls = find_class(module, qualname)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        reason = (f"class {type_name} is not loaded in this process; import {module} before "
                  "resuming to get the original exception")
    elif not issubclass(cls, Exception) or _internal(cls):
        reason = "only Exception subclasses are rebuilt, never control flow"
    elif isinstance(err := _construct(cls, message, doc), cls):
        return err
    else:
        reason = "its class could not be rebuilt from the recorded arguments"
    return StepFailed(f"{where} failed with {type_name}: {message} ({reason})", step=step,
                      error_type=type_name, error_message=message)


def _internal(cls: type) -> bool:
    # outlast's private exceptions (_Unsupported, _Reject...) signal inside one call only.
    return cls.__module__.split(".")[0] == "outlast" and cls.__name__.startswith("_")


def _construct(cls: type[Exception], message: str, doc: dict[str, Any]) -> Any:
    """The exception rebuilt from what was recorded, or None if the class refuses it."""
    args = doc["a"] if type(doc.get("a")) is tuple else (message,)
    try:
        if issubclass(cls, OutlastError):
            attrs = doc.get("k")
            return _rebuild(cls, message, attrs if type(attrs) is dict else {})
        if _python_init(cls):
            # Not called: it may want other arguments than args (openai.APIStatusError takes
            # response=), and stored data must not run user code. Built the way pickle builds.
            err = cls.__new__(cls, *args)
        else:
            try:
                err = cls(*args)
            except Exception:
                err = cls.__new__(cls, *args)
        err.args = args
        _restore(err, doc)
        str(err)  # a __str__ that needs an attribute that could not be stored: not rebuilt
        return err
    except Exception:
        return None


def _python_init(cls: type) -> bool:
    """Whether any class in ``cls``'s MRO defines ``__init__`` in Python."""
    return any(isinstance(vars(k).get("__init__"), types.FunctionType) for k in cls.__mro__)


def _restore(err: BaseException, doc: dict[str, Any]) -> None:
    namespace = vars(err)  # set directly: a property's setter would be user code
    if type(attrs := doc.get("x")) is dict:
        namespace.update((k, v) for k, v in attrs.items() if type(k) is str)
    if type(http := doc.get("h")) is dict:
        for name, stub in http.items():
            if type(name) is str and (obj := _http_object(stub)) is not None:
                namespace[name] = obj
    fields = doc.get("os")
    if isinstance(err, OSError) and type(fields) is list and len(fields) == len(_OS_FIELDS):
        for name, value in zip(_OS_FIELDS, fields, strict=True):
            # None stays unset: a set filename of None would show in str() as "None".
            if type(value) in (int, str, bytes):
                getattr(OSError, name).__set__(err, value)


def _http_object(stub: Any) -> RecordedResponse | RecordedRequest | None:
    if type(stub) is not list or not stub:
        return None
    if stub[0] == "request" and len(stub) == 3 and all(type(x) is str for x in stub[1:]):
        return RecordedRequest(stub[1], stub[2])
    if stub[0] == "response" and len(stub) == 5:
        _, status, headers, text, request = stub
        if type(status) is not int or type(text) is not str or type(headers) is not list:
            return None
        pairs = [(p[0], p[1]) for p in headers
                 if type(p) is list and len(p) == 2 and type(p[0]) is type(p[1]) is str]
        req = _http_object(request)
        return RecordedResponse(status, pairs, text, req if isinstance(req, RecordedRequest)
                                else None)
    return None
