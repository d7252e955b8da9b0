"""Why a store refused a call: the policy both SQL backends share, written once.

Each backend finds the facts with its own SQL (the run's current epoch and status, the entry
already stored under a key) and hands them here; this module decides which error they mean
and words it. Keeping the decision in one place is what makes SQLite and PostgreSQL refuse
the same calls with the same messages (``tests/test_store_contract.py`` checks both).
"""

from __future__ import annotations

from ..errors import LeaseLost, NotPaused, RunConflict, RunNotFound

#: What :meth:`Store.finish` and :meth:`Store.release` accept.
FINISH_STATUSES: tuple[str, ...] = ("completed", "failed")
RELEASE_STATUSES: tuple[str, ...] = ("pending", "suspended", "paused")

#: A run's fence state as a backend reads it: ``(epoch, status)``, or None when it is gone.
FenceState = tuple[int, str] | None


def check_finish_status(status: str) -> None:
    if status not in FINISH_STATUSES:
        raise ValueError(f"finish() takes completed or failed, not {status!r}")


def check_release_status(status: str) -> None:
    if status not in RELEASE_STATUSES:
        raise ValueError(f"release() takes pending, suspended or paused, not {status!r}")


def fenced_out(state: FenceState, epoch: int) -> bool:
    """True when a fenced write with ``epoch`` must be refused with :class:`LeaseLost`."""
    return state is None or state[0] != epoch or state[1] != "running"


def lease_lost(run_id: str, epoch: int, state: FenceState) -> LeaseLost:
    """The executor holding ``epoch`` no longer owns the run (or the run is gone)."""
    if state is None:
        return LeaseLost(f"run {run_id!r} no longer exists", run_id=run_id)
    return LeaseLost(
        f"run {run_id!r} is no longer owned by this executor (epoch {epoch}, now "
        f"{state[0]}, status {state[1]}); another worker or a cancel took it over",
        run_id=run_id,
    )


def already_recorded(run_id: str, key: str, position: int) -> RunConflict:
    return RunConflict(
        f"run {run_id!r} already has a recorded result for {key!r} "
        f"(position {position}); a step cannot be recorded twice",
        run_id=run_id,
        key=key,
    )


def record_refused(
    run_id: str, epoch: int, key: str, position: int, state: FenceState
) -> LeaseLost | RunConflict:
    """A fenced journal write that wrote nothing: stale executor first, else a second result.

    LeaseLost wins over RunConflict when both hold (the contract in ``store/base.py``).
    """
    if fenced_out(state, epoch):
        return lease_lost(run_id, epoch, state)
    return already_recorded(run_id, key, position)


def not_paused(run_id: str, status: str) -> NotPaused:
    return NotPaused(
        f"run {run_id!r} is {status}, not paused: nothing to resolve",
        run_id=run_id,
        status=status,
    )


def no_event_target(run_id: str) -> RunNotFound:
    return RunNotFound(run_id, "events can only be sent to an existing run")
