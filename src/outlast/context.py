"""The run context: what a workflow sees as ``ctx``, and what the engine tracks per run.

:class:`RunState` is the engine's per-execution state (the claimed run, its epoch, its
journal). :class:`Context` is the user's view of it. Both are reachable from anywhere inside
a workflow through context variables, which is how a step call knows it is journaled and how
:func:`idempotency_key` knows the current step.
"""

from __future__ import annotations

import os
import random as _random
import time
import uuid as _uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from . import serde
from .errors import (
    Cancelled,
    Interrupt,
    LeaseLost,
    OutlastError,
    Release,
    StoreUnavailable,
    Suspend,
)
from .journal import Journal
from .store.base import Entry, RunRecord, Store

if TYPE_CHECKING:
    from .app import App

__all__ = ["Context", "current_idempotency_key", "idempotency_key"]


@dataclass(slots=True)
class StepScope:
    """The step being executed right now (one per attempt)."""

    run_id: str
    name: str
    key: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.key}"


_run_var: ContextVar[RunState | None] = ContextVar("outlast_run", default=None)
_step_var: ContextVar[StepScope | None] = ContextVar("outlast_step", default=None)

#: environment variable of the replay-each-step test mode (see RunState.recorded)
REPLAY_EACH_STEP = "OUTLAST_REPLAY_EACH_STEP"


def current_run() -> RunState | None:
    """The run executing in this thread or task, if any."""
    return _run_var.get()


def current_step() -> StepScope | None:
    """The step executing in this thread or task, if any."""
    return _step_var.get()


def idempotency_key() -> str:
    """The idempotency key of the step being executed: ``{run_id}:{step_name}:{n}``.

    Stable across retries, crashes and workers: hand it to any service that deduplicates
    (payment APIs, your own endpoints via :mod:`outlast.dedup`). ``n`` counts the calls of
    that step in the run from 1, or is the explicit ``key=`` given at call time.
    """
    scope = _step_var.get()
    if scope is None:
        raise OutlastError(
            "outlast.idempotency_key() was called outside a journaled step: call it inside a "
            "function decorated with @app.step, executing within a workflow"
        )
    return scope.idempotency_key


def current_idempotency_key() -> str | None:
    """Like :func:`idempotency_key`, but None outside a journaled step."""
    scope = _step_var.get()
    return None if scope is None else scope.idempotency_key


@dataclass(eq=False)
class RunState:
    """One execution of a claimed run in this process."""

    app: App
    store: Store
    run: RunRecord
    journal: Journal
    is_async: bool
    #: set by the heartbeat or a local cancel: stop at the next step boundary
    interrupted: bool = False
    #: set (with ``interrupted``) by a worker shutting down: release the run as pending
    releasing: bool = False
    #: spent and saved figures, merged into the run's stats at the end
    stats: dict[str, float] = field(default_factory=dict)
    #: the replay-each-step test mode, read once per execution (not on every write)
    replay_each_step: bool = field(
        default_factory=lambda: os.environ.get(REPLAY_EACH_STEP) == "1"
    )

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def epoch(self) -> int:
        return self.run.epoch

    def check(self) -> None:
        """Raise Cancelled or LeaseLost if the run was cancelled or taken over meanwhile,
        Release if the worker executing it is shutting down."""
        if not self.interrupted:
            return
        if self.releasing:
            raise Release(f"run {self.run_id!r}: the worker is shutting down", run_id=self.run_id)
        current = self.store.get_run(self.run_id)
        if current is not None and current.status == "cancelled":
            raise Cancelled(f"run {self.run_id!r} was cancelled", run_id=self.run_id)
        raise LeaseLost(
            f"run {self.run_id!r} is now owned elsewhere; this process stops executing it",
            run_id=self.run_id,
        )

    def record(self, entry: Entry, blobs: dict[str, bytes] | None = None) -> None:
        try:
            self.store.record(self.run_id, self.epoch, entry, blobs)
        except (OutlastError, Interrupt):
            raise
        except Exception as exc:
            # The store already retried; an outage must not look like the step's failure to
            # the workflow (which might catch it) nor fail the run: stop and resume later.
            raise StoreUnavailable(
                f"run {self.run_id!r}: cannot record {entry.key!r} ({type(exc).__name__}: "
                f"{exc}); the run stops here and resumes when the store is reachable",
                run_id=self.run_id,
            ) from exc
        if self.replay_each_step:
            self.recorded(entry)

    def recorded(self, entry: Entry) -> None:
        """Called after an entry is journaled. In the replay-each-step test mode
        (``OUTLAST_REPLAY_EACH_STEP=1``) the run stops here and resumes from its journal, so
        every test proves that replay reaches the same calls (Restate's "always replay")."""
        if entry.status != "intent" and self.replay_each_step:
            raise Suspend(f"replay-each-step: {entry.key} recorded", wake_at=time.time())

    def add_stat(self, name: str, amount: float) -> None:
        self.stats[name] = self.stats.get(name, 0.0) + amount

    def durable_value(self, kind: str, produce: Callable[[], Any]) -> Any:
        """A value computed once per run and replayed afterwards (time, randomness, ids)."""
        self.check()
        call = self.journal.next_call(kind, kind, None)
        if call.entry is not None:
            return serde.loads(call.entry.output or b"null", what=f"recorded {kind}")
        value = produce()
        now = time.time()
        self.record(
            Entry(call.key, call.position, kind, kind, "completed", serde.dumps(value), None, 1, now, now)
        )
        return value


class Context:
    """What a workflow receives as its first argument (``ctx``).

    Everything here that returns a value records it, so a resumed run sees the same value.
    """

    __slots__ = ("_state",)

    def __init__(self, state: RunState) -> None:
        self._state = state

    @property
    def run_id(self) -> str:
        """The id of the run being executed."""
        return self._state.run_id

    @property
    def workflow(self) -> str:
        """The workflow's name."""
        return self._state.run.workflow

    @property
    def recoveries(self) -> int:
        """How often this run was taken over after its executor died."""
        return self._state.run.recoveries

    def now(self) -> float:
        """The current time (seconds since the epoch), recorded: replay returns the same."""
        return float(self._state.durable_value("now", time.time))

    def uuid(self) -> str:
        """A random UUID (hex string), recorded: replay returns the same."""
        return str(self._state.durable_value("uuid", lambda: str(_uuid.uuid4())))

    def random(self) -> float:
        """A random float in [0, 1), recorded: replay returns the same."""
        return float(self._state.durable_value("random", _random.random))

    # -- waits, children, snapshots (implemented in waits.py, children.py, snapshot.py) ----

    def sleep(self, seconds: float | timedelta) -> Any:
        """Sleep durably: after a crash only the remaining time is slept. Long sleeps
        hibernate the run (no thread held). Await it in async workflows."""
        from . import waits

        return waits.sleep(self._state, seconds)

    def sleep_until(self, when: datetime | float) -> Any:
        """Sleep durably until ``when`` (a datetime, or seconds since the epoch)."""
        from . import waits

        return waits.sleep_until(self._state, when)

    def wait_for(self, name: str, timeout: float | timedelta | None = None) -> Any:
        """The payload of the next event ``name`` sent to this run (``app.send``), or raise
        :class:`~outlast.Timeout` after ``timeout``. Await it in async workflows."""
        from . import waits

        return waits.wait_for(self._state, name, timeout)

    def start_child(
        self, workflow: Any, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> Any:
        """Start a child run of ``workflow`` (journaled) and return its handle
        (:class:`~outlast.children.ChildRun`); cancelling this run cancels the child."""
        from . import children

        return children.start_child(self._state, workflow, args, kwargs, run_id)

    def stash(self, value: Any) -> None:
        """Durably replace this run's snapshot with ``value``; a resume then calls the
        workflow's ``on_recovered`` handler with it, and older journal entries are dropped."""
        from . import snapshot

        snapshot.stash(self._state, value)

    def continue_as_new(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Restart this workflow under the same run id with new arguments and a fresh journal."""
        from . import snapshot

        snapshot.continue_as_new(self._state, args, kwargs)

    def __repr__(self) -> str:
        return f"<Context run_id={self.run_id!r} workflow={self.workflow!r}>"
