"""Journaled steps: the decorated object, and the one driver shared by sync and async steps.

A step call inside a workflow is answered from the journal when the journal has its outcome;
otherwise the step runs (with its retry policy) and its outcome is recorded in one write.
Outside a workflow, or from inside another step, a step is a plain function call.

Sync and async steps share every decision (:func:`begin`, :func:`settle`, the retry
policy); only the waiting between attempts differs. Where a step runs:

- a sync step in a sync workflow: in the workflow's thread;
- an async step in a sync workflow: on the execution's one event loop
  (:meth:`RunState.run_coroutine`), so loop-bound clients survive from step to step;
- an async step in an async workflow: on the running loop (the call returns an awaitable);
- a sync step in an async workflow: in a worker thread with the context copied, off the
  event loop; the call returns an awaitable, like an async step's.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from . import effects, previews, serde
from .context import RunState, StepScope, _run_var, _step_var
from .durable import DurableCall
from .errors import SerializationError, StoreError
from .retry import NO_RETRY, Retry

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")

_NO_ARGS = serde.fingerprint(serde.encode_args((), {}, what="arguments"))


class Step(Generic[P, R]):
    """A function whose outcome is journaled when called inside a workflow.

    Call it like the function. ``step.call(*args, key="...", **kwargs)`` gives the call an
    explicit identity (e.g. a tool-call id), so parallel calls replay by key, not by order.
    """

    #: the tool name when the step runs a model's tool calls (outlast.llm.Tools): its spans
    #: are then ``execute_tool {tool}``
    tool: str | None = None

    def __init__(
        self,
        app: App,
        fn: Callable[P, R],
        *,
        name: str,
        retry: Retry | None = None,
        kind: str = "step",
        at_most_once: bool = False,
        reconcile: Callable[[str], Any] | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.retry = retry or NO_RETRY
        self.kind = kind
        #: record a durable intent before running; never re-run blindly (see outlast.effects)
        self.at_most_once = at_most_once
        self.reconcile = reconcile
        self.is_async = inspect.iscoroutinefunction(fn)
        #: what its result is called in a SerializationError (made once, not per call)
        self.result_what = f"result of step {name!r}"
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        state = _run_var.get()
        if state is None or _step_var.get() is not None:
            return self.fn(*args, **kwargs)
        return self._invoke(state, args, kwargs, None)  # type: ignore[no-any-return]

    def call(self, *args: Any, key: str | None = None, **kwargs: Any) -> Any:
        """Call the step with an explicit identity ``key`` (unique among this step's calls)."""
        state = _run_var.get()
        if state is None or _step_var.get() is not None:
            return self.fn(*args, **kwargs)
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError(f"step {self.name!r}: key must be a non-empty string, got {key!r}")
        return self._invoke(state, args, kwargs, key)

    def __repr__(self) -> str:
        return f"<outlast step {self.name!r}>"

    def _invoke(
        self, state: RunState, args: tuple[Any, ...], kwargs: dict[str, Any], key: str | None
    ) -> Any:
        # Identity is taken now, in call order, even when the body runs later (a coroutine).
        # (begin() inlined: this runs for every step call)
        if args or kwargs:
            call = state.begin(
                self.kind, self.name, _hash_args(self, args, kwargs), key,
                lambda: previews.preview(args, kwargs),
            )
        else:
            call = state.begin(self.kind, self.name, _NO_ARGS, key)
        entry = call.entry
        if entry is not None and entry.status != "intent":  # call.replayed
            return _replayed_async(call) if state.is_async else call.value()
        if self.is_async:
            coro = _run_async(state, self, call, args, kwargs)
            return coro if state.is_async else state.run_coroutine(coro)
        if state.is_async:
            # Off the event loop, in a thread with this context, awaited like an async step.
            return _off_loop(_run_sync, state, self, call, args, kwargs)
        return _run_sync(state, self, call, args, kwargs)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _hash_args(step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A fingerprint of the call's arguments, compared on replay (never decoded)."""
    if not args and not kwargs:
        return _NO_ARGS
    if not kwargs and all(type(a) in _SCALARS for a in args):
        # Replay hashes every call again: positional scalars (the common case) skip the full
        # encoder. repr() of these types is stable across processes, and a repr (it starts
        # with "(") can never equal the encoder's output (it starts with "[").
        return serde.fingerprint(repr(args).encode())
    data = serde.encode_args(args, kwargs, what=f"arguments of step {step.name!r}")
    return serde.fingerprint(data)


def begin(
    state: RunState,
    step: Step[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: str | None,
) -> DurableCall:
    """The step call's identity and recorded entry (fingerprinting its arguments; a preview
    of them is recorded with the call, see :mod:`outlast.previews`)."""
    shown = None if not (args or kwargs) else (lambda: previews.preview(args, kwargs))
    return state.begin(step.kind, step.name, _hash_args(step, args, kwargs), key, shown)


async def _replayed_async(call: DurableCall) -> Any:
    return call.value()


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    import asyncio  # lazily: slow to import; sync users never need it
    import contextvars

    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(ctx.run, fn, *args)
    )


def settle(
    state: RunState,
    step: Step[Any, Any],
    call: DurableCall,
    attempts: int,
    started: float,
    value: Any = None,
    exc: BaseException | None = None,
) -> Any:
    """Record the step's outcome; return the value or raise the final exception.

    A result the database permanently refuses fails the step with that StoreError (recorded
    as its failure when the database takes that; an at-most-once step pauses instead, since
    its effect happened but cannot be journaled). Transient faults stop the run
    (StoreUnavailable) before anything else happens."""
    try:
        if exc is None:
            try:
                return call.complete(
                    value, attempts=attempts, started=started, what=step.result_what
                )
            except SerializationError:
                raise  # recorded by complete(): a replay fails the same way
        call.fail(exc, attempts=attempts, started=started)
    except StoreError as refused:
        if step.at_most_once:
            raise effects.unrecordable(state, step, call, refused) from refused
        if exc is None:
            with contextlib.suppress(StoreError):
                call.fail(refused, attempts=attempts, started=started)
        raise refused from exc
    raise exc


def _run_sync(
    state: RunState,
    step: Step[Any, Any],
    call: DurableCall,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if step.at_most_once:
        answer = effects.begin(state, step, call)
        if answer is not effects.RUN:
            return answer
    started = time.time()
    attempt = 0
    telemetry = state.telemetry
    while True:
        attempt += 1
        # state.scope(), inlined: this runs for every step call
        token = _step_var.set(
            StepScope(state.run.run_id, step.name, call.key, attempt, state.generation)
        )
        try:
            if telemetry.active:
                with telemetry.step_span(step.name, call.key, attempt, step.kind, step.tool):
                    value = step.fn(*args, **kwargs)
            else:
                value = step.fn(*args, **kwargs)
        except Exception as exc:
            delay = step.retry.delay(attempt, exc)
            if delay is None:
                return settle(state, step, call, attempt, started, exc=exc)
        else:
            return settle(state, step, call, attempt, started, value=value)
        finally:
            _step_var.reset(token)
        state.app._pause(delay, state)


async def _run_async(
    state: RunState,
    step: Step[Any, Any],
    call: DurableCall,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if step.at_most_once:
        answer = await effects.begin_async(state, step, call)
        if answer is not effects.RUN:
            return answer
    started = time.time()
    attempt = 0
    telemetry = state.telemetry
    while True:
        attempt += 1
        # state.scope(), inlined: this runs for every step call
        token = _step_var.set(
            StepScope(state.run.run_id, step.name, call.key, attempt, state.generation)
        )
        try:
            if telemetry.active:
                with telemetry.step_span(step.name, call.key, attempt, step.kind, step.tool):
                    value = await step.fn(*args, **kwargs)
            else:
                value = await step.fn(*args, **kwargs)
        except Exception as exc:
            delay = step.retry.delay(attempt, exc)
            if delay is None:
                return settle(state, step, call, attempt, started, exc=exc)
        else:
            return settle(state, step, call, attempt, started, value=value)
        finally:
            _step_var.reset(token)
        import asyncio  # lazily: slow to import; sync users never need it
        await asyncio.sleep(delay)
        state.check()
