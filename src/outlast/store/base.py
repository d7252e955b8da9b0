"""The storage contract: what every backend (SQLite, PostgreSQL) must do.

The store sees bytes and plain records only; serialization sits above it. Framework
checkpoints (the LangGraph saver, the Agent Framework storage) have a protocol of their own,
:class:`~outlast.store.checkpoints.CheckpointStore`, implemented by the same backends. Every method is
safe to call from several threads of one process and from several processes at once. The
docstrings are the contract, checked by ``tests/test_store_contract.py`` on every backend.

Fencing: a run has an ``epoch`` that grows by one whenever ownership changes (claim, takeover,
cancel, release). Every write a run's executor makes (:meth:`Store.record`, :meth:`Store.finish`,
:meth:`Store.release`, :meth:`Store.take_event`, :meth:`Store.stash`, :meth:`Store.transaction`)
carries the epoch it was given at claim time, and is refused with :class:`~outlast.errors.LeaseLost`
when the run's epoch is no longer that one, so a worker that was paused past its lease can never
write into a run someone else now owns. A fenced write also needs the run to be ``running``
(a finished run refuses more writes), and a run that no longer exists refuses it with
LeaseLost too, not RunNotFound: either way the executor has nothing left to write into.
When a write is both stale and conflicting, LeaseLost wins over RunConflict.

Times are seconds since the epoch (floats). Leases are computed with the store's own clock
(the database server's, for PostgreSQL) so workers on machines with skewed clocks agree.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pending", "running", "suspended", "completed", "failed", "cancelled", "paused"]
STATUSES: tuple[str, ...] = (
    "pending",
    "running",
    "suspended",
    "completed",
    "failed",
    "cancelled",
    "paused",
)
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create. ``input`` is the serialized ``(args, kwargs)``."""

    run_id: str
    workflow: str
    input: bytes
    input_hash: str
    queue: str = "default"
    priority: int = 0
    concurrency_key: str | None = None
    parent_id: str | None = None
    #: the run's stats column from the start (a graph fork's origin; see outlast.run)
    stats: str | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as stored."""

    run_id: str
    workflow: str
    status: Status
    input: bytes
    input_hash: str
    output: bytes | None
    error: bytes | None
    queue: str
    priority: int
    concurrency_key: str | None
    parent_id: str | None
    owner: str | None
    epoch: int
    lease_expires_at: float | None
    wake_at: float | None
    wait_event: str | None
    reason: str | None
    snapshot: bytes | None
    snapshot_position: int | None
    stats: str | None
    recoveries: int
    created_at: float
    started_at: float | None
    ended_at: float | None
    #: W3C traceparent of the run's first traced execution (see :meth:`Store.set_trace_context`)
    trace_context: str | None = None


@dataclass(slots=True)
class Entry:
    """One journal entry: the recorded outcome of one durable call in a run.

    Treat entries as immutable (use ``dataclasses.replace``). Not frozen only because a frozen
    dataclass costs ~2 us more to build, and one is built for every journaled step.

    ``key`` is unique within a run (``"{name}:{n}"`` by default, or a caller's explicit key);
    ``position`` is the call's place in the run's order of durable calls. ``status`` is
    ``"completed"`` (``output`` holds the serialized value), ``"failed"`` (``output`` holds the
    serialized error) or ``"intent"`` (an at-most-once effect was about to run; no outcome yet).
    ``meta`` is JSON text for extra facts (tokens, cost, latency of model calls).
    ``epoch`` is the run's epoch when the entry was written (the execution that recorded it;
    for an operator's entry, the paused run's), set by the store from the fence, never by the
    caller; None for entries written before outlast 0.2.0. Not part of equality.
    """

    key: str
    position: int
    kind: str
    name: str
    status: str
    output: bytes | None = None
    args_hash: str | None = None
    attempts: int = 1
    started_at: float = 0.0
    ended_at: float | None = None
    meta: str | None = None
    epoch: int | None = field(default=None, compare=False)


#: how an encrypted entry's ``meta`` begins (then the base64 of the sealed value; sealed.py)
SEALED_META = "~sealed:"


def entry_meta(entry: Entry) -> dict[str, Any]:
    """The facts in ``entry.meta`` (JSON text), ``{}`` when there are none. Raises
    UnreadableValue naming the key id when they are encrypted and the store has no key."""
    meta = entry.meta
    if not meta:
        return {}
    if meta.startswith(SEALED_META):
        import base64

        from ..encryption import missing_key
        from ..errors import UnreadableValue

        why = missing_key(base64.b64decode(meta[len(SEALED_META):]), None)
        what = f"the facts of journal entry {entry.key!r}"
        raise UnreadableValue(f"cannot read {what}: {why.message}", what=what,
                              key_id=getattr(why, "key_id", None))
    import json

    found: dict[str, Any] = json.loads(meta)
    return found


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """Flow control for one named queue, enforced by :meth:`Store.claim` across all workers.

    ``concurrency``: runs of this queue running at once, fleet-wide (None: unlimited).
    ``worker_concurrency``: runs of this queue one worker runs at once (None: unlimited).
    ``rate_limit`` starts per ``rate_period`` seconds, fleet-wide (None: unlimited). Every
    claim of a run of the queue counts as a start, resumptions and recoveries included, in a
    sliding window of ``rate_period`` seconds.
    ``key_concurrency``: runs sharing one ``concurrency_key`` running at once (None: unlimited).

    "Running" counts runs whose lease has not expired: a run whose lease ran out is claimable
    again, and counts once it is claimed.
    """

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: int | None = None
    rate_period: float = 1.0
    key_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depth and load of one queue, for ``outlast queues``."""

    name: str
    pending: int
    running: int
    suspended: int
    spec: QueueSpec | None = None


@dataclass(slots=True)
class Page:
    """A filter for :meth:`Store.list_runs`. ``extra`` is reserved for backend-specific filters;
    the built-in stores ignore it."""

    status: str | None = None
    workflow: str | None = None
    parent_id: str | None = None
    limit: int = 100
    offset: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Store(abc.ABC):
    """Runs, their journals, events and leases. One instance per process and URL."""

    #: "sqlite" or "postgresql"
    dialect: str
    #: the URL the store was opened with, password removed
    url: str

    # -- runs -------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_run(
        self,
        run: NewRun,
        *,
        owner: str | None = None,
        lease: float = 0.0,
        first: Entry | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> tuple[RunRecord, bool]:
        """Insert the run unless its id exists; return ``(stored run, created)``.

        Atomic: of several concurrent creators of one id exactly one gets ``created=True`` and
        all get the same stored row. With ``owner`` the new run is created already claimed by
        it (status ``running``, epoch 1, lease ``lease`` seconds) in the same statement; an
        existing run is returned untouched. Wakes idle workers when the run is ``pending``.

        With ``first`` (which needs ``owner``) the new run's first journal entry, and the
        ``blobs`` it refers to (as :meth:`record` stores them), are written in the same
        transaction as the run: one commit for a run and its first durable call (a short run
        pays for one commit less). When the run exists already, nothing of it is written.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""

    @abc.abstractmethod
    def list_runs(self, page: Page) -> list[RunRecord]:
        """Runs matching ``page``, newest first."""

    @abc.abstractmethod
    def claim(
        self,
        owner: str,
        lease: float,
        *,
        run_id: str | None = None,
        steal_from: str | None = None,
        workflows: Iterable[str] | None = None,
        queues: Mapping[str, QueueSpec] | None = None,
        limit: int = 1,
        in_queues: Iterable[str] | None = None,
        grace: float = 0.0,
    ) -> list[RunRecord]:
        """Take ownership of up to ``limit`` runnable runs and return them as claimed.

        Runnable: ``pending``; ``running`` with a lease that expired more than ``grace``
        seconds ago (a run whose lease expired more recently is neither taken nor free: it
        counts against its queue's limits); ``suspended`` with ``wake_at`` due. With ``run_id``, only that run is considered. With ``steal_from``
        (a dead process on this host), runs still running under that owner are taken too,
        lease or not: that one run with ``run_id``, any of them without. With ``workflows``,
        only runs of those workflow names; with ``in_queues``, only runs of those queues (a
        worker started with ``--queue``). Queue limits in ``queues`` are honoured
        fleet-wide (queues not listed are unlimited). Highest priority first, then oldest.

        Atomic per run: a run is claimed by one caller only. Claiming sets status ``running``,
        ``owner``, a lease of ``lease`` seconds, ``started_at`` if unset, bumps ``epoch`` and
        counts a recovery when the run had been running before (lease expired or stolen).
        """

    @abc.abstractmethod
    def heartbeat(self, owner: str, run_ids: Sequence[str], lease: float) -> set[str]:
        """Extend the lease of each listed run still running and owned by ``owner``.

        Returns the ids among ``run_ids`` that the owner no longer holds (taken over,
        cancelled, finished elsewhere), so their executors can stop. One round trip.
        """

    @abc.abstractmethod
    def finish(
        self,
        run_id: str,
        epoch: int,
        status: str,
        *,
        output: bytes | None = None,
        error: bytes | None = None,
        stats: str | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> None:
        """End the run as ``completed`` or ``failed``; fenced (raises LeaseLost).

        ``blobs`` (hash -> bytes) referenced by ``output`` are stored in the same transaction,
        each once, and referenced from the run, as :meth:`record` does.

        Clears owner and lease, sets ``ended_at``. Atomic with the fencing check.
        """

    @abc.abstractmethod
    def release(
        self,
        run_id: str,
        epoch: int,
        status: str,
        *,
        wake_at: float | None = None,
        wait_event: str | None = None,
        reason: str | None = None,
        stats: str | None = None,
    ) -> None:
        """Give the run up without ending it; fenced (raises LeaseLost).

        ``status`` is ``pending`` (anyone may claim it now), ``suspended`` (claimable when
        ``wake_at`` is due, or at once when an event named ``wait_event`` is sent; a pending
        event of that name makes it due at once) or ``paused`` (only an operator's
        :meth:`resolve` makes it runnable; ``reason`` says why). Clears owner and lease and
        bumps the epoch. Wakes idle workers when the run is runnable now.
        """

    @abc.abstractmethod
    def cancel(self, run_id: str) -> list[str]:
        """Cancel the run and, recursively, its unfinished children; return the ids cancelled.

        A terminal run is left as it is (and not listed); the recursion still goes through it
        to its unfinished descendants. Bumps each epoch, so a process still executing the run
        is fenced out at its next write. Raises RunNotFound.
        """

    @abc.abstractmethod
    def resolve(self, run_id: str, entry: Entry | None, drop_key: str | None = None) -> RunRecord:
        """Operator decision on a paused run, atomically: record ``entry`` (replacing whatever
        the journal holds under its key: the operator's word is final), or with ``drop_key``
        delete that key's intent (an outcome under that key is kept) so the step runs again;
        then make the run ``pending`` and bump its epoch. Raises RunNotFound, NotPaused when the
        run is not paused.
        """

    # -- journal ----------------------------------------------------------------------------

    @abc.abstractmethod
    def load_journal(self, run_id: str) -> list[Entry]:
        """Every journal entry of the run, ordered by position."""

    @abc.abstractmethod
    def record(
        self, run_id: str, epoch: int, entry: Entry, blobs: Mapping[str, bytes] | None = None
    ) -> None:
        """Append ``entry`` to the run's journal, fenced, in one transaction.

        An existing entry with the same key is replaced only if its status is ``intent``;
        otherwise the write is refused with RunConflict (a step recorded twice). ``blobs``
        (hash -> bytes) are stored first in the same transaction, each once, and referenced
        from the run. This is the hot path: one statement where the backend allows it.
        A blob's hash is :func:`outlast.serde.fingerprint` of its bytes, 32 lowercase hex
        digits (PostgreSQL keeps it as a uuid and refuses any other with ValueError).
        """

    @abc.abstractmethod
    def get_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """The stored blobs among ``hashes``."""

    @abc.abstractmethod
    def stash(self, run_id: str, epoch: int, snapshot: bytes, position: int) -> None:
        """Replace the run's snapshot, taken after journal position ``position``; fenced.

        Entries before ``position`` (strictly lower positions) are deleted in the same
        transaction (compaction); the entry at ``position`` is kept.
        """

    @abc.abstractmethod
    def transaction(
        self, run_id: str, epoch: int, work: Callable[[Any], Entry]
    ) -> Entry:
        """Run ``work(connection)`` and record the entry it returns, in one database
        transaction, fenced: the user's writes and the journal entry commit together or not
        at all. ``connection`` is the backend's DB-API connection (``sqlite3.Connection``,
        ``psycopg.Connection``), inside the store's transaction: ``work`` must not commit, roll
        back or change session settings. The fence is checked before ``work`` runs and again,
        atomically, by the journal write.
        """

    # -- events -----------------------------------------------------------------------------

    @abc.abstractmethod
    def send_event(self, run_id: str, name: str, payload: bytes) -> int:
        """Store an event for the run and return its sequence number.

        Events of one name are delivered in sending order. If the run is suspended waiting
        for ``name``, it becomes due at once (and idle workers are woken). Raises RunNotFound.
        """

    @abc.abstractmethod
    def take_event(self, run_id: str, epoch: int, name: str, entry: Entry) -> Entry | None:
        """Consume the oldest undelivered event ``name`` and record it, fenced, atomically.

        The recorded entry is ``entry`` with the event payload as output; it is returned.
        None when no event is waiting (nothing written). When the entry cannot be recorded
        (RunConflict), the event stays undelivered.
        """

    # -- maintenance ------------------------------------------------------------------------

    @abc.abstractmethod
    def queue_stats(self) -> list[QueueStats]:
        """Depth and load per queue, by queue name. A queue with no pending, running or
        suspended run may be left out."""

    @abc.abstractmethod
    def prune(self, older_than: float, limit: int | None = None) -> int:
        """Delete terminal runs that ended before ``older_than`` with their journals,
        events and blob references, then the blobs they referenced that nothing references
        any more; never a run that is not terminal, nor a finished child of a live parent.
        Returns the number of runs deleted.

        One transaction for at most ``limit`` runs, those that ended first (None: all of
        them at once). Callers with millions of runs call it in a loop until it returns less
        than ``limit`` (``outlast prune --batch``): each batch commits on its own, so workers
        are never blocked for long and an interrupted prune resumes where it stopped."""

    @abc.abstractmethod
    def wait_for_work(self, timeout: float, group: str = "") -> bool:
        """Block up to ``timeout`` seconds, returning early when new work may be runnable.

        Returns True when the caller should claim now (early returns may be spurious:
        callers claim, then wait again); False when the store knows nothing became runnable
        for this caller (PostgreSQL: another idle worker holds the wake token, see
        :mod:`~outlast.store.postgres_session`), so a claim would be wasted.

        ``group``: waiters that claim the same runs (workers of the same ``--queue`` set)
        name the same group; each group has its own wake token, so a worker of one group is
        never left asleep because a worker of another group took the wake-up. A process
        waits in one group (the first it names).
        """

    def wake_waiters(self) -> None:
        """End this process's :meth:`wait_for_work` early (a local slot freed, a stop)."""
        return None

    def attach(self, owner: str, on_cancel: Callable[[str], None]) -> str:
        """This process executes runs as ``owner``: keep it visibly alive, and call
        ``on_cancel(run_id)`` when another process cancels a run. Returns the owner id to
        use (PostgreSQL marks ids backed by a liveness lock). Default: nothing to do."""
        return owner

    def dead_owners(self) -> list[str] | None:
        """Owners of running runs whose processes are known to be gone (whatever their
        host), for this caller to take over now; ``[]`` when none (or another process
        scans); None when this store cannot tell (callers check local pids instead)."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. The store cannot be used afterwards."""

    # -- telemetry ----------------------------------------------------------------------------

    def set_trace_context(self, run_id: str, epoch: int, context: str) -> None:
        """Store ``context`` (a W3C traceparent) as the run's ``trace_context`` unless one is
        stored, while the run's epoch is ``epoch``: later executions link their spans to it.
        Writes nothing otherwise, and never raises LeaseLost (telemetry never fences a run).
        A backend without it keeps nothing (resumed executions are then not linked)."""
        return None
    # -- evolution (fork and retry; see outlast.evolution) --------------------------------------

    def fork_run(self, source_id: str, new_run_id: str, upto: int, stats: str | None) -> RunRecord:
        """Create run ``new_run_id`` as a fork of run ``source_id``, in one transaction, and
        return it.

        The new run has the source's workflow, input, queue, priority and concurrency key, no
        parent, status ``pending`` (idle workers are woken), epoch 0 and ``stats``. The
        source's journal entries at positions up to ``upto`` (inclusive; -1 for none) are
        copied under the new run, except intents; its snapshot and snapshot position too when
        that position is at most ``upto + 1``. Every blob the source references is referenced
        from the new run as well: blobs are shared, never copied. The source is not changed
        (it may be running). Raises RunNotFound (no source), RunConflict (``new_run_id``
        exists; nothing is written).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement fork_run")

    def retry_run(self, run_id: str, cut: int | None, stats: str | None) -> RunRecord:
        """Make the failed run ``run_id`` ``pending`` again, atomically, and return it.

        Its journal entries at positions ``cut`` and after are deleted (none when ``cut`` is
        None); its output, error, reason and end time are cleared; its stats become ``stats``;
        its epoch is bumped and idle workers are woken. Raises RunNotFound, NotFailed when the
        run is not ``failed`` (nothing is changed).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement retry_run")

    # -- browsing (the dashboard, outlast ui) ---------------------------------------------------

    def browse_runs(self, query: RunQuery) -> list[RunRecord]:
        """Runs matching ``query``, newest first (``created_at`` then ``run_id``, both
        descending), at most ``query.limit``. With ``query.after`` (the ``(created_at, run_id)``
        of the last run of the previous page) only runs strictly after it in that order: keyset
        pagination, stable while runs are added, and as fast on page 1,000 as on page 1."""
        raise NotImplementedError(f"{type(self).__name__} does not implement browse_runs")

    def count_runs(self, query: RunQuery) -> dict[str, int]:
        """Number of runs per status among those matching ``query`` (its ``status``, ``after``
        and ``limit`` ignored). A status with no run may be missing."""
        raise NotImplementedError(f"{type(self).__name__} does not implement count_runs")

    def count_entries(self, run_ids: Sequence[str]) -> dict[str, int]:
        """Journal entries per run among ``run_ids``, in one round trip (a run with none, or
        that does not exist, may be missing). Entries compacted away by :meth:`stash` are gone
        and not counted."""
        raise NotImplementedError(f"{type(self).__name__} does not implement count_entries")


@dataclass(frozen=True, slots=True)
class RunQuery:
    """A filter for :meth:`Store.browse_runs` and :meth:`Store.count_runs`.

    ``text``: a case-sensitive substring of the run id. ``since``/``until``: ``created_at``
    in ``[since, until)``. ``after``: the keyset cursor (see :meth:`Store.browse_runs`).
    """

    status: str | None = None
    workflow: str | None = None
    text: str | None = None
    since: float | None = None
    until: float | None = None
    after: tuple[float, str] | None = None
    limit: int = 50
