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


#: the callers' view of each workflow function's signature (no ctx, no annotations), or None
#: when it has no readable one; built once per function, as reading it costs more than a
#: short run's whole start
_SHOWN: weakref.WeakKeyDictionary[Callable[..., Any], inspect.Signature | None] = (
    weakref.WeakKeyDictionary()
)


def _shown(fn: Callable[..., Any], takes_ctx: bool) -> inspect.Signature | None:
    try:
        return _SHOWN[fn]
    except (KeyError, TypeError):
        pass
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        shown = None  # a callable without a readable signature: let the call itself decide
    else:
        params = list(signature.parameters.values())
        if takes_ctx:
            params = params[1:]
        bare = inspect.Parameter.empty
        shown = signature.replace(
            parameters=[p.replace(annotation=bare) for p in params], return_annotation=bare
        )
    with contextlib.suppress(TypeError):  # not weakly referenceable: not cached
        _SHOWN[fn] = shown
    return shown


def check_arguments(wf: Workflow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise TypeError naming the workflow and the problem when ``args``/``kwargs`` do not fit
    its function (the ``ctx`` parameter, if it has one, is supplied by outlast)."""
    shown = _shown(wf.fn, wf.takes_ctx)
    if shown is None:
        return
    try:
        shown.bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(
            f"workflow {wf.name!r} cannot take these arguments: {exc}. It is declared as "
            f"{wf.name}{shown}" + (" (ctx is passed by outlast)" if wf.takes_ctx else "")
            + "; no run was recorded"
        ) from None
