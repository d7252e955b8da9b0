"""Executing a claimed run, and driving a run to an outcome.

:func:`execute` runs a workflow body once for a claimed run (replaying its journal) and
settles the run in the store: finished, failed, suspended, paused or released. :func:`drive`
decides what to do next with a run someone waits on (claim it, wait for its owner, return its
outcome); the sync and async loops share that decision (:func:`next_action`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import children, serde, snapshot
from .context import Context, RunState, _run_var
from .errors import (
    Cancelled,
    LeaseLost,
    Pause,
    Release,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunPaused,
    StepFailed,
    StoreUnavailable,
    Suspend,
    Timeout,
)
from .journal import Journal
from .owner import is_dead_local
from .store.base import TERMINAL, RunRecord

if TYPE_CHECKING:
    from .app import App
    from .workflow import Workflow

log = logging.getLogger("outlast.engine")

#: seconds a caller waits before claiming again a run it could not claim (queue limits)
CLAIM_RETRY = 0.1


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one execution of a run ended, as far as this process knows."""

    status: str  # completed, failed, suspended, paused, cancelled, lost, released
    value: Any = None
    error: BaseException | None = None

    def settled(self) -> bool:
        """True when the run completed here (its value is ``value``); raises the error of a
        run that failed here (the original exception, with its traceback); False otherwise."""
        if self.status == "failed" and self.error is not None:
            raise self.error
        return self.status == "completed"


# -- executing ---------------------------------------------------------------------------------


def _prepare(app: App, wf: Workflow[Any, Any], run: RunRecord, fresh: bool) -> tuple[RunState, Context]:
    # A run this process has just created has an empty journal: skip the read.
    entries = [] if fresh else app.store.load_journal(run.run_id)
    point = snapshot.resume_point(run)
    journal = Journal(run.run_id, entries, point.start, point.counts)
    state = RunState(app, app.store, run, journal, wf.is_async)
    app._heartbeat.add(state)
    return state, Context(state)


def _call_args(
    wf: Workflow[Any, Any], run: RunRecord, ctx: Context
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    # The workflow, or its on_recovered handler when the run resumes from a stash.
    return snapshot.entry_point(wf, run, ctx, snapshot.resume_point(run))


def execute(app: App, wf: Workflow[Any, Any], run: RunRecord, *, fresh: bool = False) -> Outcome:
    """Execute a claimed run of a sync workflow (an async one gets a fresh event loop).

    ``fresh``: the run was created by this caller just now (its journal is empty)."""
    if wf.is_async:
        import asyncio  # lazily: slow to import; sync users never need it
        return asyncio.run(execute_async(app, wf, run, fresh=fresh))
    state, ctx = _prepare(app, wf, run, fresh)
    token = _run_var.set(state)
    try:
        fn, args, kwargs = _call_args(wf, run, ctx)
        value = fn(*args, **kwargs)
    except BaseException as exc:
        return _settle_error(state, exc)
    else:
        return _settle_ok(state, value)
    finally:
        _run_var.reset(token)
        app._heartbeat.remove(state)


async def execute_async(
    app: App, wf: Workflow[Any, Any], run: RunRecord, *, fresh: bool = False
) -> Outcome:
    """Execute a claimed run on the running event loop (a sync workflow goes to a thread)."""
    if not wf.is_async:
        import asyncio  # lazily: slow to import; sync users never need it
        return await asyncio.to_thread(functools.partial(execute, app, wf, run, fresh=fresh))
    state, ctx = _prepare(app, wf, run, fresh)
    token = _run_var.set(state)
    try:
        fn, args, kwargs = _call_args(wf, run, ctx)
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):  # a recovery handler may be sync
            value = await value
    except BaseException as exc:
        return _settle_error(state, exc)
    else:
        return _settle_ok(state, value)
    finally:
        _run_var.reset(token)
        app._heartbeat.remove(state)


def _stats(state: RunState) -> str:
    """The run's accumulated figures, with what this execution served from the journal."""
    old: dict[str, float] = json.loads(state.run.stats) if state.run.stats else {}
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
                meta = json.loads(entry.meta)
                for field in ("tokens", "cost"):
                    if isinstance(meta.get(field), (int, float)):
                        stats[f"saved_{field}"] = stats.get(f"saved_{field}", 0.0) + meta[field]
    # What this execution itself spent, beside the running totals (see run.accounting).
    for name in ("llm_calls", "tokens", "cost"):
        stats[f"last_{name}"] = state.stats.get(name, 0)
    return json.dumps(stats, sort_keys=True)


def _settle_ok(state: RunState, value: Any) -> Outcome:
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
        state.store.finish(
            state.run_id, state.epoch, "completed", output=output, stats=_stats(state),
            blobs=blobs or None,
        )
    except LeaseLost:
        return Outcome("lost")
    children.notify_parent(state)
    return Outcome("completed", value=value)


def _settle_error(state: RunState, exc: BaseException) -> Outcome:
    store, run_id, epoch = state.store, state.run_id, state.epoch
    try:
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
            log.warning("%s", exc.message)
            try:  # hand the run back at once if the store is reachable again
                store.release(run_id, epoch, "pending", stats=_stats(state))
            except Exception:  # else its lease expires and any worker resumes it
                log.warning("run %s: could not release it; its lease will expire", run_id)
            return Outcome("lost", error=exc)
        if not isinstance(exc, Exception):
            # KeyboardInterrupt, SystemExit: leave the run for another process, at once.
            store.release(run_id, epoch, "pending", stats=_stats(state))
            raise exc
        store.finish(
            run_id, epoch, "failed", error=serde.dump_error(exc), stats=_stats(state)
        )
        children.notify_parent(state)
        return Outcome("failed", error=exc)
    except LeaseLost as lost:
        log.warning("%s", lost.message)
        return Outcome("lost", error=lost)


# -- driving -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """What a waiting caller does next with a run."""

    kind: str  # "done", "claim", "wait", "detach"
    run: RunRecord
    steal_from: str | None = None
    seconds: float = 0.0


def next_action(run: RunRecord, now: float, *, detach_on_suspend: bool) -> Action:
    """Decide the next move for a caller that wants ``run``'s outcome."""
    if run.status in TERMINAL or run.status == "paused":
        return Action("done", run)
    if run.status == "pending":
        return Action("claim", run)
    if run.status == "suspended":
        if run.wake_at is not None and run.wake_at <= now:
            return Action("claim", run)
        if detach_on_suspend:
            return Action("detach", run)
        until = (run.wake_at - now) if run.wake_at is not None else 1.0
        return Action("wait", run, seconds=min(until, 1.0))
    # running elsewhere
    if is_dead_local(run.owner):
        return Action("claim", run, steal_from=run.owner)
    if run.lease_expires_at is not None and run.lease_expires_at < now:
        return Action("claim", run)
    until = (run.lease_expires_at - now) if run.lease_expires_at is not None else 0.2
    return Action("wait", run, seconds=min(max(until, 0.01), 0.2))


def outcome_of(app: App, run: RunRecord) -> Any:
    """The stored result of a finished run, or raise what it ended with."""
    if run.status == "completed":
        return serde.loads(
            run.output or b"null", what=f"result of run {run.run_id!r}", blobs=app.store.get_blobs
        )
    if run.status == "failed":
        error = serde.load_error(run.error or b"null")
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
