"""What a caller that wants a run's outcome does next: pure decisions, no I/O.

:func:`next_action` looks at a stored run and the time, and says whether its outcome is
there, whether to claim it (runnable, or orphaned by a dead process on this host or an
expired lease), to wait, or to detach from a hibernating run. The sync and async drivers
(:mod:`outlast.engine`) and a parent waiting on a child (:mod:`outlast.children`) share it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .owner import is_dead_local
from .store.base import TERMINAL, RunRecord

__all__ = ["CLAIM_RETRY", "Action", "next_action"]

#: seconds a caller waits before claiming again a run it could not claim (queue limits)
CLAIM_RETRY = 0.1


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
