"""Executing a claimed run, and driving a run to an outcome.

:func:`execute` runs a workflow body once for a claimed run (replaying its journal) and
settles the run in the store: finished, failed, suspended, paused or released. :func:`drive`
decides what to do next with a run someone waits on (claim it, wait for its owner, return its
outcome); the sync and async loops share that decision (:func:`next_action`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import children, serde, serde_errors, snapshot, telemetry
from .context import Context, RunState, _run_var
from .decide import CLAIM_RETRY, Action, next_action
from .errors import (
    Cancelled,
    LeaseLost,
    NonDeterminismError,
    Pause,
    Release,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunPaused,
    StepFailed,
    StoreError,
    StoreUnavailable,
    Suspend,
    Timeout,
    UnreadableValue,
)
from .journal import Frontier, Journal
from .run import FRONTIER
from .store.base import NewRun, RunRecord, entry_meta

if TYPE_CHECKING:
    from .app import App
    from .workflow import Workflow

log = logging.getLogger("outlast.engine")



@dataclass(frozen=True, slots=True)
class Outcome:
    """How one execution of a run ended, as far as this process knows."""

    # completed, failed, suspended, paused, cancelled, lost, released, faulted, deferred
    status: str
    value: Any = None
    error: BaseException | None = None

    def settled(self) -> bool:
        """True when the run completed here (its value is ``value``); raises the error of a
        run that failed here (the original exception, with its traceback), and the StoreError
        of a run a transient store fault stopped (it resumes later: nothing recorded is
        lost); False otherwise."""
        if self.status in ("failed", "faulted", "deferred") and self.error is not None:
            raise self.error
        return self.status == "completed"


# -- executing ---------------------------------------------------------------------------------


def _prepare(
    app: App, wf: Workflow[Any, Any], run: RunRecord, fresh: bool, unrecorded: NewRun | None
) -> tuple[RunState, Context, snapshot.ResumePoint]:
    # A run this process has just created has an empty journal: skip the read.
    entries = [] if fresh or unrecorded else app.store.load_journal(run.run_id)
    point = snapshot.resume_point(run)
    journal = Journal(run.run_id, entries, point.start, point.counts, frontier_of(run))
    state = RunState(
        app, app.store, run, journal, wf.is_async, generation=point.generation,
        unrecorded=unrecorded,
    )
    state.telemetry = telemetry.execution(app, state)
    app._heartbeat.add(state)
    return state, Context(state), point


def frontier_of(run: RunRecord) -> Frontier | None:
    """Where the run's last execution stopped, as saved in its stats (None: not known)."""
    if not run.stats or f'"{FRONTIER}"' not in run.stats:
        return None
    return Frontier.load(json.loads(run.stats).get(FRONTIER))


def _call_args(
    wf: Workflow[Any, Any], run: RunRecord, ctx: Context, point: snapshot.ResumePoint
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    # The workflow, or its on_recovered handler when the run resumes from a stash.
    return snapshot.entry_point(wf, run, ctx, point)


def execute(
    app: App, wf: Workflow[Any, Any], run: RunRecord, *, fresh: bool = False,
    unrecorded: NewRun | None = None,
) -> Outcome:
    """Execute a claimed run (an async workflow runs on the process's event loop, see
    :mod:`outlast.aio`, so loop-bound clients survive from run to run).

    ``fresh``: the run was created by this caller just now (its journal is empty).
    ``unrecorded``: ``run`` is not stored yet; it is created with its first journal entry
    (see :attr:`outlast.context.RunState.unrecorded`)."""
    if wf.is_async:
        from . import aio

        return aio.run(execute_async(app, wf, run, fresh=fresh, unrecorded=unrecorded))
    state, ctx, point = _prepare(app, wf, run, fresh, unrecorded)
    try:
        token = _run_var.set(state)
        try:
            fn, args, kwargs = _call_args(wf, run, ctx, point)
            value = fn(*args, **kwargs)
        except BaseException as exc:
            error: BaseException | None = exc
        else:
            error = None
        finally:
            _run_var.reset(token)
        # Settled outside the run's context: a store fault here is the engine's to handle.
        outcome = _settle_ok(state, value) if error is None else _settle_error(state, error)
        state.telemetry.finish(outcome, error)
        return outcome
    finally:
        app._heartbeat.remove(state)
        state.telemetry.finish(None)  # ends the run span if settling raised


async def execute_async(
    app: App, wf: Workflow[Any, Any], run: RunRecord, *, fresh: bool = False,
    unrecorded: NewRun | None = None,
) -> Outcome:
    """Execute a claimed run on the running event loop (a sync workflow goes to a thread)."""
    if not wf.is_async:
        import asyncio  # lazily: slow to import; sync users never need it
        return await asyncio.to_thread(
            functools.partial(execute, app, wf, run, fresh=fresh, unrecorded=unrecorded)
        )
    state, ctx, point = _prepare(app, wf, run, fresh, unrecorded)
    try:
        token = _run_var.set(state)
        try:
            fn, args, kwargs = _call_args(wf, run, ctx, point)
            value = fn(*args, **kwargs)
            if inspect.isawaitable(value):  # a recovery handler may be sync
                value = await value
        except BaseException as exc:
            error: BaseException | None = exc
        else:
            error = None
        finally:
            _run_var.reset(token)
        outcome = _settle_ok(state, value) if error is None else _settle_error(state, error)
        state.telemetry.finish(outcome, error)
        return outcome
    finally:
        app._heartbeat.remove(state)
        state.telemetry.finish(None)  # ends the run span if settling raised


#: the stats of a run's first execution that spent nothing (most short runs): what
#: :func:`_stats` computes for it, without the JSON round trip
_NOTHING_SPENT = json.dumps({"last_cost": 0, "last_llm_calls": 0, "last_tokens": 0})


def _stats(state: RunState, *, completed: bool = False) -> str:
    """The run's accumulated figures, with what this execution served from the journal, and
    where it stopped (the frontier ``ctx.patched`` needs; not kept for a completed run)."""
    frontier = None if completed else state.journal.reached()
    if not (state.run.stats or state.stats or state.run.recoveries or frontier is not None):
        return _NOTHING_SPENT
    old: dict[str, Any] = json.loads(state.run.stats) if state.run.stats else {}
    stats = {**old}
    for name, amount in state.stats.items():
        stats[name] = stats.get(name, 0.0) + amount
    # Savings count only when this execution recovered a crashed run, not on every wake-up.
    if state.run.recoveries > old.get("recoveries_seen", 0):
        stats["recoveries_seen"] = state.run.recoveries
        for entry in state.journal.replayed:
            stats["saved_steps"] = stats.get("saved_steps", 0) + 1
            if entry.ended_at is not None:
                stats["saved_seconds"] = stats.get("saved_seconds", 0.0) + max(
                    0.0, entry.ended_at - entry.started_at
                )
            if entry.meta:
                meta = entry_meta(entry)
                for field in ("tokens", "cost"):
                    if isinstance(meta.get(field), (int, float)):
                        stats[f"saved_{field}"] = stats.get(f"saved_{field}", 0.0) + meta[field]
    # What this execution itself spent, beside the running totals (see run.accounting).
    for name in ("llm_calls", "tokens", "cost"):
        stats[f"last_{name}"] = state.stats.get(name, 0)
    if frontier is not None:
        stats[FRONTIER] = frontier.dump()
    return json.dumps(stats, sort_keys=True)


def _settle_ok(state: RunState, value: Any) -> Outcome:
    try:
        state.journal.check_complete()
    except NonDeterminismError as exc:
        return _settle_error(state, exc)
    what = f"result of workflow {state.run.workflow!r}"
    blobs: dict[str, bytes] = {}
    try:
        output = serde.dumps(value, what=what)
        if len(output) >= serde.BLOB_THRESHOLD:
            # Large results (a graph's final state, a conversation) share their parts with
            # the journal's blobs instead of being stored again whole.
            output = serde.dumps(value, what=what, blobs=blobs)
    except serde.SerializationError as exc:
        return _settle_error(state, exc)
    try:
        state.write(
            state.store.finish, state.run_id, state.epoch, "completed", output=output,
            stats=_stats(state, completed=True), blobs=blobs or None,
        )
    except LeaseLost:
        return Outcome("lost")
    except StoreUnavailable as exc:
        return _stopped(state, exc)
    except StoreError as exc:  # the result is refused: the run fails with the reason
        return _settle_error(state, exc)
    _notify_parent(state)
    return Outcome("completed", value=value)


def _notify_parent(state: RunState) -> None:
    # The parent also wakes at its backstop timer, so a fault here loses nothing.
    try:
        children.notify_parent(state)
    except StoreError as exc:
        log.warning("run %s: could not wake its parent (%s)", state.run_id, exc.reason)


#: seconds before a run stopped by a transient store fault may be claimed again, growing with
#: each consecutive fault up to the lease
FAULT_BACKOFF = 0.5


def backoff(faults: int, lease: float) -> float:
    """Seconds before the ``faults``-th consecutive store-fault stop may be claimed again."""
    return float(min(FAULT_BACKOFF * 2 ** max(0, faults - 1), max(lease, FAULT_BACKOFF)))


def _hand_back(state: RunState, counter: str, tries: int, reason: str) -> float:
    """Release the run ``suspended``, due after a back-off for its ``tries``-th consecutive
    stop of this kind (counted in its stats under ``counter``), so nobody re-executes it in a
    tight loop; if the store is away, its lease expires instead. Returns the back-off."""
    delay = backoff(tries, state.app.lease)
    stats = json.loads(_stats(state))
    stats[counter] = tries
    try:
        state.store.release(
            state.run_id, state.epoch, "suspended", wake_at=time.time() + delay,
            reason=reason, stats=json.dumps(stats, sort_keys=True),
        )
    except (StoreError, LeaseLost):  # else its lease expires and any worker resumes it
        log.warning("run %s: could not hand it back; its lease will expire", state.run_id)
    return delay


def _previous(state: RunState, counter: str) -> int:
    old = json.loads(state.run.stats) if state.run.stats else {}
    return int(old.get(counter, 0))


def _stopped(state: RunState, exc: StoreUnavailable) -> Outcome:
    """A transient store fault stopped the run: hand it back after a back-off."""
    if state.unrecorded is not None:  # the run was never recorded: nothing to hand back
        return Outcome("faulted", error=StoreError(
            f"{exc.message}. Nothing of the run was recorded; start it again",
            transient=True, reason=getattr(exc.fault, "reason", exc.message),
            url=getattr(exc.fault, "url", ""), run_id=state.run_id,
        ))
    faults = 1 if state.wrote else _previous(state, "store_faults") + 1
    fault = getattr(exc, "fault", None)
    reason = getattr(fault, "reason", exc.message)
    log.warning(
        "run %s stopped by a store fault (%s); it may resume in %.1f s (consecutive fault %d)",
        state.run_id, reason, backoff(faults, state.app.lease), faults,
    )
    delay = _hand_back(state, "store_faults", faults, f"store fault: {reason}")
    return Outcome("faulted", error=StoreError(
        f"{exc.message}. Nothing recorded is lost: the run resumes from its journal when run "
        f"again (same run id) or by a worker, claimable again in {delay:.1f} s",
        transient=True, reason=reason, url=getattr(fault, "url", ""), run_id=state.run_id,
    ))


def _settle_error(state: RunState, exc: BaseException) -> Outcome:
    store, run_id, epoch = state.store, state.run_id, state.epoch
    try:
        if state.unrecorded is not None and isinstance(exc, Exception | Suspend | Pause):
            state.created()  # a run that ends before its first entry is recorded all the same
        if isinstance(exc, Suspend):
            store.release(
                run_id, epoch, "suspended",
                wake_at=getattr(exc, "wake_at", None),
                wait_event=getattr(exc, "wait_event", None),
                stats=_stats(state),
            )
            return Outcome("suspended")
        if isinstance(exc, Pause):
            reason = str(getattr(exc, "reason", exc.message))
            store.release(run_id, epoch, "paused", reason=reason, stats=_stats(state))
            return Outcome("paused")
        if isinstance(exc, Release):
            store.release(run_id, epoch, "pending", stats=_stats(state))
            return Outcome("released")
        if isinstance(exc, Cancelled):
            return Outcome("cancelled", error=exc)
        if isinstance(exc, LeaseLost):
            log.warning("%s", exc.message)
            return Outcome("lost", error=exc)
        if isinstance(exc, StoreUnavailable):
            return _stopped(state, exc)
        if isinstance(exc, UnreadableValue):
            return _deferred(state, exc)
        if not isinstance(exc, Exception):
            # KeyboardInterrupt, SystemExit: leave the run for another process, at once
            # (a run never recorded leaves nothing).
            if state.unrecorded is None:
                with contextlib.suppress(StoreError):
                    store.release(run_id, epoch, "pending", stats=_stats(state))
            raise exc
        _fail(state, exc)
        _notify_parent(state)
        return Outcome("failed", error=exc)
    except LeaseLost as lost:
        log.warning("%s", lost.message)
        return Outcome("lost", error=lost)
    except StoreError as fault:  # the run could not be settled: it stays for resumption
        if fault.transient:
            return _stopped(state, state.fault(fault, None))  # type: ignore[arg-type]
        raise


def _deferred(state: RunState, exc: UnreadableValue) -> Outcome:
    """This process cannot read one of the run's values (its class is not imported here):
    not the run's failure. Hand it back, due after a back-off, for a process that can."""
    tries = _previous(state, "unreadable") + 1
    type_name = getattr(exc, "type_name", "?")
    if tries == 1:
        log.warning(
            "run %s: this process cannot read a value of type %s (%s); left for a process "
            "that imports it", state.run_id, type_name, exc.message,
        )
    _hand_back(
        state, "unreadable", tries,
        f"unreadable here: {type_name} is not importable by the process that claimed it; "
        "run it where the module that defines it is imported",
    )
    return Outcome("deferred", error=exc)


def _fail(state: RunState, exc: BaseException) -> None:
    """Store the run's failure; an error the database refuses is stored as plain text."""
    try:
        state.store.finish(
            state.run_id, state.epoch, "failed", error=serde_errors.dump_error(exc), stats=_stats(state)
        )
    except StoreError as refused:
        if refused.transient:
            raise
        plain = StepFailed(
            f"{type(exc).__name__}: {str(exc).encode('utf-8', 'backslashreplace').decode()}",
            error_type=type(exc).__name__,
        )
        state.store.finish(
            state.run_id, state.epoch, "failed", error=serde_errors.dump_error(plain), stats=_stats(state)
        )


# -- driving -----------------------------------------------------------------------------------


def outcome_of(app: App, run: RunRecord) -> Any:
    """The stored result of a finished run, or raise what it ended with."""
    if run.status == "completed":
        return serde.loads(
            run.output or b"null", what=f"result of run {run.run_id!r}", blobs=app.store.get_blobs
        )
    if run.status == "failed":
        error = serde_errors.load_error(run.error or b"null")
        if isinstance(error, StepFailed) and getattr(error, "step", None) is None:
            raise RunFailed(
                f"run {run.run_id!r} failed: {error.message}", run_id=run.run_id
            ) from error
        raise error
    if run.status == "cancelled":
        raise RunCancelled(f"run {run.run_id!r} was cancelled", run_id=run.run_id)
    if run.status == "paused":
        reason = run.reason or "no reason recorded"
        # Most reasons already say how to resolve: say it once.
        how = "" if "outlast resolve" in reason else (
            f". An operator must resolve it: `outlast resolve {run.run_id} --done JSON` records "
            f"the step's result, `outlast resolve {run.run_id} --redo` runs it again")
        raise RunPaused(
            f"run {run.run_id!r} is paused: {reason}{how} (or app.resolve())",
            run_id=run.run_id,
            reason=run.reason,
        )
    raise RuntimeError(f"run {run.run_id!r} has no outcome yet (status {run.status})")


def _load(app: App, run_id: str) -> RunRecord:
    run = app.store.get_run(run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def _timed_out(run_id: str, timeout: float | None) -> Timeout:
    return Timeout(
        f"run {run_id!r} did not finish within {timeout} s; it goes on (wait again with "
        "handle.result(), or cancel it with app.cancel)",
        run_id=run_id,
    )


def drive(
    app: App,
    wf: Workflow[Any, Any] | None,
    run_id: str,
    *,
    timeout: float | None = None,
    detach_on_suspend: bool = False,
) -> tuple[bool, Any]:
    """Bring the run to an outcome, executing it here whenever it is ours to execute.

    Returns ``(True, value)`` when finished, ``(False, None)`` when detached from a
    suspended run; raises what the run ended with.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    run = _load(app, run_id)
    while True:
        action = next_action(run, time.time(), detach_on_suspend=detach_on_suspend)
        if action.kind == "done":
            return True, outcome_of(app, run)
        if action.kind == "detach":
            return False, None
        if action.kind == "claim":
            claimed = app.store.claim(
                app.owner, app.lease, run_id=run_id, steal_from=action.steal_from,
                queues=app.queues or None,
            )
            if claimed:
                outcome = execute(app, wf or app._workflow_for(claimed[0]), claimed[0])
                if outcome.settled():
                    return True, outcome.value
                run = _load(app, run_id)
                continue
            # Refused (its queue is at a limit, or another claimer won): wait for our turn.
            action = Action("wait", run, seconds=CLAIM_RETRY)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise _timed_out(run_id, timeout)
        app._wait(action.seconds if remaining is None else min(action.seconds, remaining))
        run = _load(app, run_id)


async def drive_async(
    app: App, wf: Workflow[Any, Any] | None, run_id: str, *, timeout: float | None = None
) -> Any:
    """:func:`drive` for async callers: async workflows execute on the running loop."""
    deadline = None if timeout is None else time.monotonic() + timeout
    run = _load(app, run_id)
    while True:
        action = next_action(run, time.time(), detach_on_suspend=False)
        if action.kind == "done":
            return outcome_of(app, run)
        if action.kind == "claim":
            claimed = app.store.claim(
                app.owner, app.lease, run_id=run_id, steal_from=action.steal_from,
                queues=app.queues or None,
            )
            if claimed:
                outcome = await execute_async(app, wf or app._workflow_for(claimed[0]), claimed[0])
                if outcome.settled():
                    return outcome.value
                run = _load(app, run_id)
                continue
            action = Action("wait", run, seconds=CLAIM_RETRY)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise _timed_out(run_id, timeout)
        import asyncio  # lazily: slow to import; sync users never need it
        await asyncio.sleep(action.seconds if remaining is None else min(action.seconds, remaining))
        run = _load(app, run_id)
