"""Child workflows: ``ctx.start_child`` and the handle whose result is journaled in the parent.

Starting a child records its run id in the parent's journal (a ``child`` entry). The default
child id is ``"{parent_id}:{key}"``, derived from the call's journal key, so a parent that
crashed between creating the child and recording it creates the same child again (creation
is idempotent). The child is stored ``pending`` with ``parent_id`` set: a worker may take it
at once, and ``store.cancel(parent)`` cancels it with the parent.

``handle.result()`` records the child's outcome in the parent's journal (a ``child_result``
entry keyed by the child id, so the order in which parallel children finish does not
matter). While the child is unowned, the parent executes it inline, in its own thread or on
its own event loop: a plain script needs no worker. When the child hibernates or runs
elsewhere, the parent hibernates too, woken by an event the child's executor sends when the
child finishes (plus a backstop timer, in case that process died between the two writes).
A retried child (``app.retry``) notifies under a name of its own (see :func:`child_event`): a
parent still waiting gets its new outcome; a parent that journaled the failure keeps it until
the parent is retried itself (docs/versioning.md).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from . import serde, serde_errors
from .decide import next_action
from .errors import RunCancelled, RunConflict, RunNotFound, Suspend
from .store.base import RunRecord

if TYPE_CHECKING:
    from .context import RunState
    from .durable import DurableCall
    from .workflow import Workflow

#: a parent waiting on a child it cannot see finish rechecks at least this often (seconds)
BACKSTOP = 60.0
#: a parent whose pending child its queue's limits kept from starting here looks again after
PENDING_RETRY = 1.0
_MISSING = object()


def child_event(child_id: str, retries: int = 0) -> str:
    """The name of the event a finished child sends its parent, one per outcome: a retried
    child (``app.retry``) notifies under its retry count, so the notice of the outcome the
    retry dropped (still queued at the parent) cannot wake a parent waiting for the new one."""
    if retries:
        return f"outlast.child-retry{retries}:{child_id}"
    return f"outlast.child:{child_id}"


def retries_of(run: RunRecord) -> int:
    """How many times ``app.retry`` made the run run again (its stats' ``retries``)."""
    try:
        stats = json.loads(run.stats) if run.stats else {}
        return int(stats.get("retries", 0)) if isinstance(stats, dict) else 0
    except (ValueError, TypeError):  # unreadable stats: the first outcome's name
        return 0


def notify_parent(state: RunState) -> None:
    """Tell the parent of a run that just finished (called by the engine after ``finish``)."""
    parent = state.run.parent_id
    if parent is None:
        return
    with contextlib.suppress(RunNotFound):  # the parent was pruned; nobody waits
        state.store.send_event(parent, child_event(state.run_id, retries_of(state.run)), b"null")


def start_child(
    state: RunState,
    workflow: Workflow[Any, Any] | str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    run_id: str | None,
) -> ChildRun:
    """``ctx.start_child``: see :meth:`~outlast.Context.start_child`."""
    wf = state.app._resolve(workflow)
    data = serde.encode_args(args, kwargs, what=f"arguments of child workflow {wf.name!r}")
    call = state.begin("child", wf.name, serde.fingerprint(data))
    if call.replayed:
        return ChildRun(state, call.value(what="child run id", blobs=False), wf.name)
    child_id = run_id or state.identity(call.key)
    record, _ = state.write(
        state.app._create, wf, args, kwargs, run_id=child_id, queue=None, priority=None,
        concurrency_key=None, claim=False, parent_id=state.run_id, step=wf.name,
    )
    if record.parent_id != state.run_id:
        raise RunConflict(
            f"run {child_id!r} already exists and is not a child of run {state.run_id!r}; "
            "pass another run_id to ctx.start_child (or none)",
            run_id=child_id,
        )
    call.complete(child_id, large=False)
    return ChildRun(state, child_id, wf.name)


class ChildRun:
    """A child run started by ``ctx.start_child``. Only valid inside the parent's execution.

    ``result()`` waits for the child's outcome (awaitable in async workflows) and journals it
    in the parent, so a replayed parent never waits again.
    """

    __slots__ = ("_state", "run_id", "workflow", "_outcome")

    def __init__(self, state: RunState, run_id: str, workflow: str) -> None:
        self._state = state
        #: the child's run id
        self.run_id = run_id
        #: the child's workflow name
        self.workflow = workflow
        self._outcome: tuple[Any, BaseException | None] | object = _MISSING

    def result(self) -> Any:
        """The child's result (or raise its error); in async workflows, an awaitable."""
        state = self._state
        if self._outcome is _MISSING:
            call = state.begin("child_result", self.workflow, key=self.run_id)
            if not call.replayed:
                return self._wait_async(call) if state.is_async else self._wait(call)
            self._outcome = _replay(call)
        return self._give_async() if state.is_async else self._give()

    def _give(self) -> Any:
        value, error = self._outcome  # type: ignore[misc]
        if error is not None:
            raise error
        return value

    async def _give_async(self) -> Any:
        return self._give()

    def _wait(self, call: DurableCall) -> Any:
        while True:
            claimed = self._next(call)
            if claimed is None:
                return self._give()
            self._state.app._execute(claimed)

    async def _wait_async(self, call: DurableCall) -> Any:
        while True:
            claimed = self._next(call)
            if claimed is None:
                return self._give()
            await self._state.app._execute_async(claimed)

    def _next(self, call: DurableCall) -> RunRecord | None:
        """Record the child's outcome (None), claim it to run here, or hibernate the parent."""
        state = self._state
        state.check()
        child = state.store.get_run(self.run_id)
        if child is None:
            raise RunNotFound(self.run_id, f"child of run {state.run_id!r} is gone (pruned?)")
        action = next_action(child, time.time(), detach_on_suspend=True)
        if action.kind == "done" and child.status != "paused":
            self._settle(call, child)
            return None
        if action.kind == "claim":
            # The same admission as a worker's claim: a limited queue's limits hold here too.
            claimed = state.store.claim(
                state.app.owner, state.app.lease, run_id=self.run_id,
                steal_from=action.steal_from, queues=state.app.queues or None,
            )
            if claimed:
                return claimed[0]
            child = state.store.get_run(self.run_id) or child
        # Wake with the child's event (it finished), or when the child needs an executor and
        # this parent's process may be the only one around (no worker): its timer is due,
        # its lease ran out; else at the backstop.
        wake_at = time.time() + BACKSTOP
        if child.status == "suspended" and child.wake_at is not None:
            wake_at = min(wake_at, child.wake_at)
        elif child.status == "running" and child.lease_expires_at is not None:
            wake_at = min(wake_at, child.lease_expires_at + 0.1)
        elif child.status == "pending":  # refused by its queue's limits: try again soon
            wake_at = min(wake_at, time.time() + PENDING_RETRY)
        raise Suspend(
            f"run {state.run_id!r} waits for child {self.run_id!r} ({child.status})",
            wake_at=wake_at, wait_event=child_event(self.run_id, retries_of(child)),
        )

    def _settle(self, call: DurableCall, child: RunRecord) -> None:
        if child.status == "completed":
            output, status = child.output or b"null", "completed"
        elif child.status == "failed":
            output, status = child.error or b"null", "failed"
        else:
            err = RunCancelled(f"child run {child.run_id!r} was cancelled", run_id=child.run_id)
            output, status = serde_errors.dump_error(err), "failed"
        call.entry = call.record(status, output)
        self._outcome = _replay(call)

    def __repr__(self) -> str:
        return f"<ChildRun {self.run_id!r} of {self.workflow!r}>"


def _replay(call: DurableCall) -> tuple[Any, BaseException | None]:
    try:
        return call.value(what=f"result of child {call.key!r}"), None
    except Exception as exc:  # the child's recorded error: raised when the result is asked
        return None, exc

