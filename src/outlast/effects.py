"""At-most-once effects: a durable intent before the step runs, and what a crash leaves behind.

A step declared ``@app.step(at_most_once=True)`` records an ``intent`` entry (fenced, committed)
before its function runs; its outcome replaces the intent afterwards. When a run resumes and
finds an intent with no outcome, the process that wrote it stopped while the effect may or may
not have happened, so the step is never re-run blindly:

- with ``reconcile=fn``, outlast calls ``fn(idempotency_key)`` to ask the outside world. It
  returns :data:`NOT_DONE` (the step runs now) or the step's result (recorded as its outcome,
  the function is not called);
- without one, or when ``reconcile`` raises or returns a value that cannot be stored, the run
  is released as ``paused`` with a reason starting ``outcome unknown``; the intent stays, so
  nothing is lost. An operator decides with :func:`resolve` (``outlast resolve``).

The decisions live here; ``step.py``'s driver calls :func:`begin` / :func:`begin_async` before
the first attempt of an at-most-once step.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from . import serde
from .context import RunState, _step_var
from .errors import (
    ConfigurationError,
    NotPaused,
    Pause,
    RunNotFound,
    SerializationError,
    StoreError,
)
from .store.base import Entry, RunRecord

if TYPE_CHECKING:
    from .app import App
    from .durable import DurableCall
    from .step import Step

__all__ = ["NOT_DONE", "resolve"]


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Returned by a ``reconcile`` function: the effect did not happen, run the step.
NOT_DONE: Final[Any] = _Marker("outlast.effects.NOT_DONE")
#: Returned by :func:`begin`: no outcome is known, the driver runs the step's function.
RUN: Final[Any] = _Marker("outlast.effects.RUN")
_UNSET: Final[Any] = _Marker("<unset>")


def check_options(
    name: str, fn: Callable[..., Any], at_most_once: bool, reconcile: Callable[..., Any] | None
) -> None:
    """Decoration-time checks of ``@app.step(at_most_once=..., reconcile=...)``."""
    if reconcile is None:
        return
    if not at_most_once:
        raise ConfigurationError(
            f"step {name!r}: reconcile= applies to at-most-once steps; add at_most_once=True"
        )
    if not callable(reconcile):
        raise ConfigurationError(
            f"step {name!r}: reconcile must be a function of the idempotency key, got {reconcile!r}"
        )
    if inspect.iscoroutinefunction(reconcile) and not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"step {name!r} is sync but its reconcile {reconcile.__name__!r} is async; make "
            "both async or both sync"
        )


# -- the driver's hook ---------------------------------------------------------------------------


def begin(state: RunState, step: Step[Any, Any], call: DurableCall) -> Any:
    """Before the first attempt: write the intent, or settle an intent left by a crash.

    Returns :data:`RUN` when the function must run, else the step's (reconciled) result.
    Raises :class:`~outlast.errors.Pause` when the outcome cannot be known.
    """
    if call.entry is None:
        # Committed (and fenced) before the function runs: a worker that lost the run cannot
        # start the effect, and whoever resumes the run sees that it may have happened.
        call.intent()
        return RUN
    if step.reconcile is None:
        raise _unknown(state, step, call)
    try:
        answer = _ask(state, step, call)
    except Exception as exc:  # the run pauses with the error in its reason; nothing is lost
        raise _unknown(state, step, call, exc) from exc
    return _settle(state, step, call, answer)


async def begin_async(state: RunState, step: Step[Any, Any], call: DurableCall) -> Any:
    """:func:`begin` for async steps: an async ``reconcile`` is awaited."""
    if call.entry is None:
        call.intent()
        return RUN
    if step.reconcile is None:
        raise _unknown(state, step, call)
    try:
        answer = _ask(state, step, call)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception as exc:
        raise _unknown(state, step, call, exc) from exc
    return _settle(state, step, call, answer)


def _ask(state: RunState, step: Step[Any, Any], call: DurableCall) -> Any:
    assert step.reconcile is not None
    scope = state.scope(step.name, call.key, 0)
    token = _step_var.set(scope)  # outlast.idempotency_key() works inside reconcile too
    try:
        return step.reconcile(scope.idempotency_key)
    finally:
        _step_var.reset(token)


def _settle(state: RunState, step: Step[Any, Any], call: DurableCall, answer: Any) -> Any:
    if answer is NOT_DONE:
        return RUN  # the intent stays until the outcome replaces it
    try:
        output = serde.dumps(answer, what=f"reconciled result of step {step.name!r}")
    except SerializationError as exc:
        raise _unknown(state, step, call, exc) from exc
    assert call.entry is not None
    try:
        call.record(
            "completed", output, attempts=call.entry.attempts, started=call.entry.started_at,
            meta=json.dumps({"reconciled": True}),
        )
    except StoreError as refused:
        raise _unknown(state, step, call, refused) from refused
    return answer


def unrecordable(state: RunState, step: Step[Any, Any], call: DurableCall, error: StoreError) -> Pause:
    """The pause of an at-most-once step whose effect ran but whose outcome the database
    refuses to record: its intent stays, and an operator decides."""
    key = state.identity(call.key)
    rid = state.run_id
    reason = (
        f"outcome unknown: step {step.name!r} (idempotency key {key}) ran but its outcome "
        f"could not be recorded ({error.reason}). Check the effect, then "
        f"`outlast resolve {rid} --done JSON` records its result, `outlast resolve {rid} "
        "--redo` runs it again"
    )
    return Pause(reason, reason=reason, run_id=rid, step=step.name, key=key)


def _unknown(
    state: RunState, step: Step[Any, Any], call: DurableCall, error: BaseException | None = None
) -> Pause:
    key = state.identity(call.key)
    why = (
        "it has no reconcile function"
        if error is None
        else f"its reconcile failed: {type(error).__name__}: {error}"
    )
    rid = state.run_id
    reason = (
        f"outcome unknown: step {step.name!r} (idempotency key {key}) recorded its intent but no "
        f"outcome (the process stopped while the effect may have run) and {why}. Check whether "
        f"the effect happened, then `outlast resolve {rid} --done JSON` records its result, "
        f"`outlast resolve {rid} --redo` runs it again"
        + ("" if error is None else f", `outlast resolve {rid} --retry` asks reconcile again")
    )
    return Pause(reason, reason=reason, run_id=rid, step=step.name, key=key)


# -- the operator's decision ---------------------------------------------------------------------


def resolve(
    app: App,
    run_id: str,
    *,
    done: Any = _UNSET,
    redo: bool = False,
    retry: bool = False,
    key: str | None = None,
) -> RunRecord:
    """Decide a paused run's unknown outcome, then make the run pending (see ``App.resolve``)."""
    chosen = [name for name, on in (("done", done is not _UNSET), ("redo", redo), ("retry", retry)) if on]
    if len(chosen) != 1:
        raise ConfigurationError(
            f"resolve run {run_id!r}: give exactly one of done=<result>, redo=True, retry=True "
            f"(got {', '.join(chosen) or 'none'})"
        )
    run = app.store.get_run(run_id)
    if run is None:
        raise RunNotFound(run_id)
    if run.status != "paused":
        raise NotPaused(
            f"run {run_id!r} is {run.status}, not paused: only a paused run can be resolved "
            "(`outlast runs --status paused` lists them)",
            run_id=run_id,
            status=run.status,
        )
    target = _target(run_id, app.store.load_journal(run_id), key, needed=not retry)
    entry: Entry | None = None
    drop: str | None = None
    if done is not _UNSET:
        if target is None:
            raise ConfigurationError(
                f"run {run_id!r} has no step awaiting an outcome (paused because: {run.reason}); "
                "resume it with redo=True (`--redo`)"
            )
        output = serde.dumps(done, what=f"result given for step {target.name!r}")
        entry = replace(
            target, status="completed", output=output, ended_at=time.time(),
            meta=json.dumps({"resolved": "done"}),
        )
    elif redo and target is not None:
        drop = target.key
    # The store re-checks "paused" atomically: a concurrent resolve gets NotPaused.
    resolved = app.store.resolve(run_id, entry, drop)
    app._notify()
    return resolved


def _target(run_id: str, journal: list[Entry], key: str | None, *, needed: bool) -> Entry | None:
    """The intent the operator decides about: the one named by ``key``, or the only one."""
    intents = [e for e in journal if e.status == "intent"]
    keys = ", ".join(e.key for e in intents) or "none"
    if key is not None:
        for e in intents:
            if key in (e.key, f"{run_id}:{e.key}"):
                return e
        raise ConfigurationError(
            f"run {run_id!r} has no step awaiting an outcome under key {key!r}; waiting: {keys}"
        )
    if len(intents) > 1 and needed:
        raise ConfigurationError(
            f"run {run_id!r} has {len(intents)} steps awaiting an outcome ({keys}); name one "
            "with key= (`--step KEY`)"
        )
    return intents[0] if intents else None
