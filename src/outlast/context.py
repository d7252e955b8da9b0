"""The run context: what a workflow sees as ``ctx``, and what the engine tracks per run.

:class:`RunState` is the engine's per-execution state (the claimed run, its epoch, its
journal). :class:`Context` is the user's view of it. Both are reachable from anywhere inside
a workflow through context variables, which is how a step call knows it is journaled and how
:func:`idempotency_key` knows the current step.
"""

from __future__ import annotations

import os
import random as _random
import threading
import time
import uuid as _uuid
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import children, patching, snapshot, waits
from .durable import DurableCall
from .errors import (
    Cancelled,
    LeaseLost,
    OutlastError,
    Release,
    ReplayEnd,
    StoreError,
    StoreUnavailable,
    Suspend,
)
from .journal import PATCH_KIND, Journal
from .store import faults
from .store.base import Entry, NewRun, RunRecord, Store
from .telemetry.noop import NOOP

if TYPE_CHECKING:
    from .runtime import Runtime

T = TypeVar("T")

__all__ = ["Context", "current_idempotency_key", "idempotency_key"]


@dataclass(slots=True)
class StepScope:
    """The step being executed right now (one per attempt)."""

    run_id: str
    name: str
    key: str
    attempt: int
    #: the run's generation (see RunState.identity)
    generation: int = 1

    @property
    def idempotency_key(self) -> str:
        if self.generation == 1:
            return f"{self.run_id}:{self.key}"
        return f"{self.run_id}:g{self.generation}:{self.key}"


_run_var: ContextVar[RunState | None] = ContextVar("outlast_run", default=None)
_step_var: ContextVar[StepScope | None] = ContextVar("outlast_step", default=None)

#: environment variable of the replay-each-step test mode (see RunState.recorded)
REPLAY_EACH_STEP = "OUTLAST_REPLAY_EACH_STEP"


def current_run() -> RunState | None:
    """The run executing in this thread or task, if any."""
    return _run_var.get()


def _escalate(fault: StoreError) -> BaseException | None:
    # A transient store fault anywhere inside a run's execution (a read for a budget, a blob,
    # a child's status) stops the run like a failed journal write: never an Exception that
    # user code could catch and carry on with.
    state = _run_var.get()
    if state is None or not fault.transient:
        return None
    return state.fault(fault, None)


faults.escalate = _escalate


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

    #: the narrow runtime (the App) through which the run reaches the world
    app: Runtime
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
    #: True once this execution has written to the store (store-fault back-off resets)
    wrote: bool = False
    #: 1, plus one per continue_as_new (see snapshot.ResumePoint.generation)
    generation: int = 1
    #: this execution's telemetry (outlast.telemetry): the no-op unless someone observes
    telemetry: Any = NOOP
    #: a replay check (``outlast replay``): every call must be answered from the journal;
    #: one that is not stops the execution (ReplayEnd) before anything runs or is written
    checking: bool = False
    #: a run ``app.run`` has not recorded yet: it is created with its first journal entry, in
    #: one commit, or before any other write of the run (see :meth:`created`)
    unrecorded: NewRun | None = None
    #: the store's ``record`` without its boundary guard, and the store's fault classifier
    #: (see :meth:`write_entry`)
    _record: Callable[..., None] = field(init=False, repr=False)
    _classify: Callable[[BaseException], StoreError | None] = field(init=False, repr=False)
    _creating: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._record, self._classify = faults.unguarded(self.store, "record")

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def epoch(self) -> int:
        return self.run.epoch

    def identity(self, key: str) -> str:
        """A call's identity outside the journal (a child's default run id): the run id and
        the call's key, with the generation after a continue_as_new, so that iterations of a
        long loop never repeat one another's children or idempotency keys."""
        if self.generation == 1:
            return f"{self.run_id}:{key}"
        return f"{self.run_id}:g{self.generation}:{key}"

    def scope(self, name: str, key: str, attempt: int) -> StepScope:
        """The step scope of one attempt (what ``outlast.idempotency_key()`` reads)."""
        return StepScope(self.run_id, name, key, attempt, self.generation)

    def check(self) -> None:
        """Raise Cancelled or LeaseLost if the run was cancelled or taken over meanwhile,
        Release if the worker executing it is shutting down."""
        if not self.interrupted:
            return
        if self.releasing:
            raise Release(f"run {self.run_id!r}: the worker is shutting down", run_id=self.run_id)
        try:
            current = self.store.get_run(self.run_id)
        except StoreError as exc:
            raise self.fault(exc, None) from exc
        if current is not None and current.status == "cancelled":
            raise Cancelled(f"run {self.run_id!r} was cancelled", run_id=self.run_id)
        raise LeaseLost(
            f"run {self.run_id!r} is now owned elsewhere; this process stops executing it",
            run_id=self.run_id,
        )

    def begin(
        self,
        kind: str,
        name: str,
        args_hash: str | None = None,
        key: str | None = None,
        preview: Callable[[], str] | None = None,
    ) -> DurableCall:
        """The next durable call of this run: its identity and recorded entry (see
        :mod:`outlast.durable`). Stops first if the run was cancelled or taken over; raises
        NonDeterminismError when the journal recorded something else here. ``preview`` makes
        a short picture of the call's arguments (:mod:`outlast.previews`): recorded with the
        call, and shown beside the recorded one when the arguments differ."""
        if self.interrupted:
            self.check()
        position, full_key, occurrence, entry = self.journal.take(
            kind, name, args_hash, key, preview
        )
        if self.checking and (entry is None or entry.status == "intent"):
            raise self.end_of_journal(f"{kind} {name!r} ({full_key})", position)
        return DurableCall(
            self, kind, name, full_key, position, occurrence, args_hash, entry, preview
        )

    def begin_patch(self, patch_id: str) -> tuple[bool, DurableCall | None]:
        """``ctx.patched``'s decision (see :meth:`Journal.patch`), with the marker's durable
        call when there is one to replay or to record."""
        self.check()
        taken, c = self.journal.patch(patch_id)
        if c is None:
            return taken, None
        if self.checking and c.entry is None:
            raise self.end_of_journal(f"patch marker {patch_id!r}", c.position)
        return taken, DurableCall(self, PATCH_KIND, patch_id, c.key, c.position, 0, None, c.entry)

    def end_of_journal(self, what: str, position: int) -> ReplayEnd:
        """A replay check reached a call its journal does not answer: the end of the check."""
        return ReplayEnd(
            f"run {self.run_id!r}: the journal ends before {what} at position {position}",
            run_id=self.run_id, position=position, called=what,
        )
    def created(self) -> None:
        """Record the run now if ``app.run`` deferred it (see :attr:`unrecorded`): before a
        write other than a journal entry, when its id is handed out (``ctx.run_id``), and by
        the heartbeat once a first step runs longer than a beat. Under the fault rule."""
        if self.unrecorded is not None:
            self._write(self._create, None, None)

    def _create(self, first: Entry | None, blobs: Mapping[str, bytes] | None) -> bool:
        """Create the deferred run (with ``first`` as its first entry); False when it already
        was (by another thread of this execution: the heartbeat)."""
        with self._creating:
            new = self.unrecorded
            if new is None:
                return False
            run, created = self.store.create_run(
                new, owner=self.run.owner, lease=self.app.lease, first=first, blobs=blobs
            )
            if not created:  # a fresh id never collides; refuse rather than write into it
                raise LeaseLost(
                    f"run id {new.run_id!r} already names a run recorded elsewhere; this "
                    "execution stops without writing to it",
                    run_id=new.run_id,
                )
            self.run = run
            self.unrecorded = None
            return True

    def write(self, op: Callable[..., T], *args: Any, step: str | None = None, **kwargs: Any) -> T:
        """Run one store operation of this run under the one fault rule (recording the run
        first if that was deferred, see :meth:`created`).

        A transient store fault (after the store's own retries) raises StoreUnavailable: the
        run stops here and resumes later with back-off, and user code cannot catch it. A
        permanent one raises StoreError naming the run, the step and the database's reason:
        the step (or primitive) fails as any failed step would. Fencing (LeaseLost) and
        outlast's own errors pass through. A replay check never writes: it ends here.
        """
        if self.checking:
            raise self.end_of_journal(f"a write of {step or 'the run'}", self.journal.position)
        self.created()
        return self._write(op, *args, step=step, **kwargs)

    def _write(self, op: Callable[..., T], *args: Any, step: str | None = None, **kwargs: Any) -> T:
        try:
            result = op(*args, **kwargs)
        except StoreError as exc:
            raise self.fault(exc, step) from exc
        except StoreUnavailable as exc:  # escalated at the boundary: name the step
            if step is None or exc.__dict__.get("step") is not None:
                raise
            raise self.fault(exc.fault, step) from exc.__cause__
        self.wrote = True
        return result

    def fault(self, exc: StoreError, step: str | None) -> BaseException:
        """The exception a store fault becomes inside this run (see :meth:`write`)."""
        what = f"step {step!r} of run {self.run_id!r}" if step else f"run {self.run_id!r}"
        if exc.transient:
            return StoreUnavailable(
                f"{what} stopped: {exc.message}", run_id=self.run_id, step=step, fault=exc
            )
        return StoreError(
            f"{what} could not be recorded: {exc.message}. The step fails with this error; "
            "fix the value (or the database) and retry the run",
            transient=False, reason=exc.reason, url=exc.url, run_id=self.run_id, step=step,
        )

    def write_entry(
        self, entry: Entry, blobs: Mapping[str, bytes] | None = None, *, step: str | None = None
    ) -> None:
        """Journal ``entry`` (fenced) under the fault rule of :meth:`write`.

        The hot path: the store's unguarded ``record`` is called directly and a driver error
        is classified here, with the same outcome as :meth:`write` through the store's guard
        (two frames fewer for every journaled call)."""
        if self.unrecorded is not None and self._write(
            self._create, entry, blobs, step=step or entry.name
        ):
            self.wrote = True
            if self.replay_each_step:
                self.recorded(entry)
            return
        run = self.run
        try:
            self._record(run.run_id, run.epoch, entry, blobs)
        except StoreError as exc:  # classified by the store itself (a backend's own retries)
            raise self.fault(exc, step or entry.name) from exc
        except StoreUnavailable as exc:  # escalated by a wrapped store's guard: name the step
            if exc.__dict__.get("step") is not None:
                raise
            raise self.fault(exc.fault, step or entry.name) from exc.__cause__
        except (OutlastError, faults.UserError):
            raise  # RunConflict and the like pass through, as they do the guard
        except Exception as exc:
            fault = self._classify(exc)
            if fault is None:
                raise
            raise self.fault(fault, step or entry.name) from exc
        self.wrote = True
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
        call = self.begin(kind, kind)
        if call.replayed:
            return call.value(blobs=False)
        return call.complete(produce(), large=False)

    # -- async code in a sync execution --------------------------------------------------------

    def run_coroutine(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` (an async step called from a sync workflow) on the process's one event
        loop (:mod:`outlast.aio`), so loop-bound clients such as ``AsyncOpenAI`` or
        ``httpx.AsyncClient`` keep working from one step to the next and across runs."""
        from . import aio

        return aio.run(coro)


class Context:
    """What a workflow receives as its first argument (``ctx``).

    Everything here that returns a value records it, so a resumed run sees the same value.
    """

    __slots__ = ("_state",)

    def __init__(self, state: RunState) -> None:
        self._state = state

    @property
    def run_id(self) -> str:
        """The id of the run being executed (recorded by then, so others can look it up)."""
        self._state.created()
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
        return waits.sleep(self._state, seconds)

    def sleep_until(self, when: datetime | float) -> Any:
        """Sleep durably until ``when`` (a datetime, or seconds since the epoch)."""
        return waits.sleep_until(self._state, when)

    def wait_for(self, name: str, timeout: float | timedelta | None = None) -> Any:
        """The payload of the next event ``name`` sent to this run (``app.send``), or raise
        :class:`~outlast.Timeout` after ``timeout``. Await it in async workflows."""
        return waits.wait_for(self._state, name, timeout)

    def start_child(
        self, workflow: Any, *args: Any, run_id: str | None = None, **kwargs: Any
    ) -> Any:
        """Start a child run of ``workflow`` (journaled) and return its handle
        (:class:`~outlast.children.ChildRun`); cancelling this run cancels the child."""
        return children.start_child(self._state, workflow, args, kwargs, run_id)

    def stash(self, value: Any) -> None:
        """Durably replace this run's snapshot with ``value``; a resume then calls the
        workflow's ``on_recovered`` handler with it, and older journal entries are dropped."""
        snapshot.stash(self._state, value)

    def patched(self, patch_id: str) -> bool:
        """True where this run takes the new code path guarded by ``patch_id``.

        Runs that reach this point for the first time on code that has the patch take it
        (a marker is journaled, so they keep taking it on every replay); runs whose journal
        was written before the patch was deployed get False, and nothing is consumed from
        their journal. See docs/versioning.md.
        """
        return patching.patched(self._state, patch_id)

    def deprecate_patch(self, patch_id: str) -> None:
        """Retire ``patched(patch_id)`` once no run needs the old path: keep only the new
        code and call this where ``patched`` was. Runs that recorded the marker still
        replay; new runs record nothing. Remove the call once those runs are gone."""
        patching.deprecate_patch(self._state, patch_id)

    def continue_as_new(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Restart this workflow under the same run id with new arguments and a fresh journal."""
        snapshot.continue_as_new(self._state, args, kwargs)

    def __repr__(self) -> str:
        return f"<Context run_id={self.run_id!r} workflow={self.workflow!r}>"
