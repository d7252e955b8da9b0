"""Workflows: the decorated function whose durable calls make up a run."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from .budget import Budget
from .context import Context, _run_var

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")


def _takes_ctx(fn: Callable[..., Any]) -> bool:
    """A workflow receives ``ctx`` when its first parameter is named ``ctx`` or typed Context."""
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return False
    first = params[0]
    annotation = first.annotation
    if annotation is Context:
        return True
    if isinstance(annotation, str) and annotation.split(".")[-1] == "Context":
        return True
    return first.name == "ctx"


class Workflow(Generic[P, R]):
    """A durable function. Start it with ``app.run``/``app.start``/``app.enqueue``.

    Typed by what a caller passes and gets: ``P`` are the workflow's parameters without its
    ``ctx``, ``R`` its result (awaited, for an async workflow), so ``app.run(wf, ...)`` is
    checked against the signature and returns ``R``.

    Called directly inside another workflow, its body runs inline as part of that run (its
    steps are journaled in the caller's journal). Called directly anywhere else, it runs as
    ``app.run(workflow, ...)`` with a fresh run id.
    """

    def __init__(
        self,
        app: App,
        fn: Callable[..., Any],
        *,
        name: str,
        queue: str = "default",
        priority: int = 0,
        budget: Budget | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        #: limits on each run's model spending (enforced by outlast.llm)
        self.budget = budget
        self.is_async = inspect.iscoroutinefunction(fn)
        self.takes_ctx = _takes_ctx(fn)
        #: the fiber-style recovery handler, if registered with :meth:`on_recovered`
        self.recovery_handler: Callable[..., Any] | None = None
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        state = _run_var.get()
        if state is None:
            if self.is_async:
                return self.app.run_async(self, *args, **kwargs)
            return self.app.run(self, *args, **kwargs)
        call_args = (Context(state), *args) if self.takes_ctx else args
        return self.fn(*call_args, **kwargs)

    def on_recovered(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``handler(ctx, snapshot, *args, **kwargs)``, called instead of replaying
        from the top when an interrupted run that stashed a snapshot resumes."""
        self.recovery_handler = handler
        return handler

    def __repr__(self) -> str:
        return f"<outlast workflow {self.name!r}>"


class WorkflowDecorator(Protocol):
    """What ``@app.workflow(...)`` with options returns: a decorator typed as the bare one."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> Workflow[P, R]: ...

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], R], /
    ) -> Workflow[P, R]: ...

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Workflow[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Workflow[P, R]: ...
