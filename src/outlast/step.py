"""Journaled steps: the decorated object, and the one driver shared by sync and async steps.

A step call inside a workflow is answered from the journal when the journal has its outcome;
otherwise the step runs (with its retry policy) and its outcome is recorded in one write.
Outside a workflow, or from inside another step, a step is a plain function call.

Sync and async steps share every decision (:func:`_begin`, :func:`_settle`, the retry
policy); only the waiting between attempts differs.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from . import effects, serde
from .context import RunState, StepScope, _run_var, _step_var
from .errors import SerializationError
from .journal import Call
from .retry import NO_RETRY, Retry
from .store.base import Entry

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
        call, args_hash = _begin(state, self, args, kwargs, key)
        if not self.is_async:
            if call.entry is not None and call.entry.status != "intent":
                return _replay(state, self, call)
            return _run_sync(state, self, call, args_hash, args, kwargs)
        if call.entry is not None and call.entry.status != "intent":
            coro: Awaitable[Any] = _replay_async(state, self, call)
        else:
            coro = _run_async(state, self, call, args_hash, args, kwargs)
        if state.is_async:
            return coro
        # An async step called from a sync workflow: no loop runs in this thread.
        import asyncio  # lazily: slow to import; sync users never need it
        return asyncio.run(coro)  # type: ignore[arg-type]


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


def _begin(
    state: RunState,
    step: Step[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: str | None,
) -> tuple[Call, str]:
    state.check()
    args_hash = _hash_args(step, args, kwargs)
    return state.journal.next_call(step.kind, step.name, args_hash, key), args_hash


def _replay(state: RunState, step: Step[Any, Any], call: Call) -> Any:
    entry = call.entry
    assert entry is not None
    if entry.status == "failed":
        raise serde.load_error(entry.output or b"null", step=step.name)
    return serde.loads(
        entry.output or b"null", what=f"recorded result of step {step.name!r}",
        blobs=state.store.get_blobs,
    )


async def _replay_async(state: RunState, step: Step[Any, Any], call: Call) -> Any:
    return _replay(state, step, call)


def _settle(
    state: RunState,
    step: Step[Any, Any],
    call: Call,
    args_hash: str,
    attempts: int,
    started: float,
    value: Any = None,
    exc: BaseException | None = None,
) -> Any:
    """Record the step's outcome; return the value or raise the final exception."""
    status = "completed"
    blobs: dict[str, bytes] = {}
    if exc is None:
        try:
            output = serde.dumps(value, what=f"result of step {step.name!r}")
            if len(output) >= serde.BLOB_THRESHOLD:
                # Large: encode again with its big parts as content-addressed blobs, stored
                # once however many steps return them. Small values pay nothing for this.
                output = serde.pack(
                    serde.dumps(value, what=f"result of step {step.name!r}", blobs=blobs)
                )
        except SerializationError as bad:
            # The value cannot be stored: the step fails with that error, recorded, so the
            # journal stays consistent and a replay fails the same way.
            exc = bad
    if exc is not None:
        status = "failed"
        output = serde.dump_error(exc)
    entry = Entry(
        call.key, call.position, step.kind, step.name, status, output, args_hash,
        attempts, started, time.time(),
    )
    state.record(entry, blobs or None)
    if exc is not None:
        raise exc
    return value


def _run_sync(
    state: RunState,
    step: Step[Any, Any],
    call: Call,
    args_hash: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if step.at_most_once:
        answer = effects.begin(state, step, call, args_hash)
        if answer is not effects.RUN:
            return answer
    started = time.time()
    attempt = 0
    while True:
        attempt += 1
        token = _step_var.set(StepScope(state.run_id, step.name, call.key, attempt))
        try:
            value = step.fn(*args, **kwargs)
        except Exception as exc:
            delay = step.retry.delay(attempt, exc)
            if delay is None:
                return _settle(state, step, call, args_hash, attempt, started, exc=exc)
        else:
            return _settle(state, step, call, args_hash, attempt, started, value=value)
        finally:
            _step_var.reset(token)
        state.app._pause(delay, state)


async def _run_async(
    state: RunState,
    step: Step[Any, Any],
    call: Call,
    args_hash: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if step.at_most_once:
        answer = await effects.begin_async(state, step, call, args_hash)
        if answer is not effects.RUN:
            return answer
    started = time.time()
    attempt = 0
    while True:
        attempt += 1
        token = _step_var.set(StepScope(state.run_id, step.name, call.key, attempt))
        try:
            value = await step.fn(*args, **kwargs)
        except Exception as exc:
            delay = step.retry.delay(attempt, exc)
            if delay is None:
                return _settle(state, step, call, args_hash, attempt, started, exc=exc)
        else:
            return _settle(state, step, call, args_hash, attempt, started, value=value)
        finally:
            _step_var.reset(token)
        import asyncio  # lazily: slow to import; sync users never need it
        await asyncio.sleep(delay)
        state.check()
