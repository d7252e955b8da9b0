"""Checks at the front door (``app.run``/``start``/``enqueue``, child starts): what is being
started is a workflow, and its arguments fit its signature, before any run is recorded.

A run created with arguments its workflow cannot take would fail at once and use up its run
id (a retry with the same id then conflicts); checking first keeps the id free.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable
from typing import Any

from .step import Step
from .workflow import Workflow


def not_a_workflow(obj: Any, verb: str) -> TypeError:
    """The error for ``app.<verb>(obj)`` when ``obj`` is neither a workflow nor its name."""
    if isinstance(obj, Step):
        return TypeError(
            f"app.{verb}({obj.name!r}): that is a step, not a workflow; steps run inside a "
            f"workflow. Call it from a function decorated with @app.workflow, or decorate "
            f"{obj.name!r} with @app.workflow instead"
        )
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        name = getattr(obj, "__qualname__", repr(obj))
        return TypeError(
            f"app.{verb}({name}): that is a plain function, not a workflow; decorate it with "
            "@app.workflow (or pass a registered workflow's name)"
        )
    return TypeError(
        f"app.{verb}() takes a workflow declared with @app.workflow (or its name), got "
        f"{type(obj).__name__} {obj!r:.80}"
    )


#: per workflow function, the callers' view of its signature (no ctx, no annotations; None
#: when it has none readable) and the numbers of positional arguments that surely fit it;
#: built once per function, as reading a signature costs more than a short run's whole start
_SHOWN: weakref.WeakKeyDictionary[Callable[..., Any], tuple[inspect.Signature | None, range]] = (
    weakref.WeakKeyDictionary()
)


def _shown(fn: Callable[..., Any], takes_ctx: bool) -> tuple[inspect.Signature | None, range]:
    try:
        return _SHOWN[fn]
    except (KeyError, TypeError):
        pass
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        found: tuple[inspect.Signature | None, range] = (None, range(0))
    else:
        params = list(signature.parameters.values())
        if takes_ctx:
            params = params[1:]
        bare = inspect.Parameter.empty
        shown = signature.replace(
            parameters=[p.replace(annotation=bare) for p in params], return_annotation=bare
        )
        found = (shown, _plain_counts(shown))
    with contextlib.suppress(TypeError):  # not weakly referenceable: not cached
        _SHOWN[fn] = found
    return found


def _plain_counts(signature: inspect.Signature) -> range:
    """The numbers of positional arguments that surely fit ``signature``: from its required
    parameters to all of them when every one is plainly positional (no ``*args``,
    ``**kwargs`` or keyword-only); none otherwise (``bind`` decides)."""
    params = signature.parameters.values()
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind not in plain for p in params):
        return range(0)
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    return range(required, len(signature.parameters) + 1)


def check_arguments(wf: Workflow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise TypeError naming the workflow and the problem when ``args``/``kwargs`` do not fit
    its function (the ``ctx`` parameter, if it has one, is supplied by outlast)."""
    shown, plain = _shown(wf.fn, wf.takes_ctx)
    if shown is None:
        return
    if not kwargs and len(args) in plain:
        return  # positional arguments that fill plain parameters: nothing for bind() to find
    try:
        shown.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"workflow {wf.name!r} cannot take these arguments: {exc}. It is declared as "
            f"{wf.name}{shown}" + (" (ctx is passed by outlast)" if wf.takes_ctx else "")
            + "; no run was recorded"
        ) from None
