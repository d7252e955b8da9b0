"""Input from the web surfaces (``outlast serve``, ``outlast ui``), checked before anything is stored.

* :func:`parse_json`: strict JSON: no ``NaN``/``Infinity``, no lone surrogates, at most
  :data:`MAX_DEPTH` levels, ints of at most 4,300 digits. Such values could be stored but not
  shown back as JSON, so they are refused at the door.
* :func:`bind_workflow_args`: positional and keyword arguments checked against the
  workflow's signature (unknown or missing ones refused before a run is created) and converted
  from JSON to the annotated parameter types: dataclasses, pydantic models, tuples, datetimes
  (through pydantic's ``TypeAdapter`` when pydantic is importable; dataclasses without it).
* :func:`enqueue_options`: the separate ``queue``/``priority``/``concurrency_key`` fields of
  ``POST /runs``, validated against the app's declared queues and bounds.

Every refusal is a :class:`BadInput` whose message names the field and the fix.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App
    from .workflow import Workflow

__all__ = ["MAX_DEPTH", "PRIORITY_RANGE", "BadInput", "bind_workflow_args", "enqueue_options", "parse_json"]

#: deepest nesting of arrays and objects accepted in a request body
MAX_DEPTH = 64
#: bounds of the ``priority`` field of ``POST /runs``
PRIORITY_RANGE = (-1000, 1000)
#: names app.enqueue keeps for itself: a workflow parameter of that name cannot be passed
RESERVED = frozenset({"self", "workflow", "run_id", "queue", "priority", "concurrency_key"})


class BadInput(ValueError):
    """Input refused with a message for the caller (HTTP 400)."""


def _refuse_constant(name: str) -> Any:
    raise BadInput(f"{name} is not JSON; send numbers only (or a string)")


def parse_json(data: bytes, *, what: str = "body") -> Any:
    """``data`` as strict JSON (see the module docstring); :class:`BadInput` otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{what} is not UTF-8: {exc}") from None
    try:
        value = json.loads(text or "null", parse_constant=_refuse_constant)
    except BadInput as exc:
        raise BadInput(f"{what}: {exc}") from None
    except RecursionError:
        raise BadInput(f"{what} is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, or an int over sys.get_int_max_str_digits()
        raise BadInput(f"{what} is not valid JSON: {exc}") from None
    _check_tree(value, what)
    return value


def _check_tree(value: Any, what: str) -> None:
    # Iterative: a recursive walk would itself overflow on the depths it is meant to refuse.
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            _check_str(v, what)
        elif isinstance(v, list | dict):
            if depth >= MAX_DEPTH:
                raise BadInput(f"{what} is nested deeper than {MAX_DEPTH} levels")
            if isinstance(v, dict):
                for k in v:
                    _check_str(k, what)
                stack.extend((x, depth + 1) for x in v.values())
            else:
                stack.extend((x, depth + 1) for x in v)


def _check_str(s: str, what: str) -> None:
    if s.isascii():
        return
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(
            f"{what} holds a lone surrogate (\\ud800-\\udfff without its pair); send valid Unicode"
        ) from None


# --- workflow arguments ------------------------------------------------------------------------


def bind_workflow_args(
    wf: Workflow[Any, Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Check ``args``/``kwargs`` against ``wf``'s signature and convert them to its annotated
    types; return what to pass to ``app.enqueue``. :class:`BadInput` names what is wrong."""
    try:
        sig = inspect.signature(wf.fn)
    except (TypeError, ValueError):  # a callable without a signature: nothing to check
        return tuple(args), kwargs
    params = list(sig.parameters.values())[1 if wf.takes_ctx else 0 :]
    sig = sig.replace(parameters=params)
    if clash := sorted(RESERVED & {p.name for p in params if p.kind != p.VAR_KEYWORD}):
        raise BadInput(f"workflow {wf.name!r} has a parameter named {clash[0]!r}, which app.enqueue "
                       "keeps for itself; rename the parameter to start it over HTTP")
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise BadInput(f"arguments do not fit workflow {wf.name!r}{sig}: {exc}") from None
    hints = _hints(wf.fn)
    for name, value in list(bound.arguments.items()):
        param = sig.parameters[name]
        hint = hints.get(name)
        if hint is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        bound.arguments[name] = _convert(value, hint, f"argument {name!r} of workflow {wf.name!r}")
    return tuple(bound.args), dict(bound.kwargs)


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # an unresolvable forward reference: leave values as sent
        return {}


def _convert(value: Any, hint: Any, what: str) -> Any:
    if hint is Any or hint is inspect.Parameter.empty:
        return value
    try:
        from pydantic import TypeAdapter, ValidationError
    except ImportError:
        return _convert_plain(value, hint, what)
    try:
        adapter: Any = TypeAdapter(hint)
    except Exception:  # a type pydantic has no schema for: passed as sent
        return _convert_plain(value, hint, what)
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise BadInput(f"{what} does not fit {_type_name(hint)}: {exc}") from None


def _convert_plain(value: Any, hint: Any, what: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        hints = _hints(hint)
        fields = {f.name for f in dataclasses.fields(hint) if f.init}
        if unknown := sorted(value.keys() - fields):
            raise BadInput(f"{what}: {_type_name(hint)} has no field {unknown[0]!r}")
        values = {k: _convert_plain(v, hints.get(k, Any), f"{what}.{k}") for k, v in value.items()}
        try:
            return hint(**values)
        except TypeError as exc:
            raise BadInput(f"{what} does not fit {_type_name(hint)}: {exc}") from None
    return value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__qualname__", None) or repr(hint)


# --- enqueue options ---------------------------------------------------------------------------


def enqueue_options(app: App, wf: Workflow[Any, Any], doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``queue``, ``priority`` and ``concurrency_key`` fields of a ``POST /runs`` body,
    validated: a queue the app declared (or the workflow's own), a priority within
    :data:`PRIORITY_RANGE`, a key of at most 200 characters."""
    options: dict[str, Any] = {}
    queue = doc.get("queue")
    if queue is not None:
        allowed = {wf.queue, *app.queues}
        if not isinstance(queue, str) or queue not in allowed:
            raise BadInput(f'"queue" must be one of the declared queues {sorted(allowed)}, got {queue!r:.80}')
        options["queue"] = queue
    priority = doc.get("priority")
    if priority is not None:
        low, high = PRIORITY_RANGE
        if type(priority) is not int or not low <= priority <= high:
            raise BadInput(f'"priority" must be an integer from {low} to {high}, got {priority!r:.80}')
        options["priority"] = priority
    key = doc.get("concurrency_key")
    if key is not None:
        if not isinstance(key, str) or not 0 < len(key) <= 200:
            raise BadInput(f'"concurrency_key" must be a string of 1 to 200 characters, got {key!r:.80}')
        options["concurrency_key"] = key
    return options
