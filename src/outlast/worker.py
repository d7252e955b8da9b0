"""The worker: claims runnable runs (new, orphaned, due) and executes them.

``outlast worker module:app --concurrency N`` runs one of these. Any number of workers, on
any number of machines, may share a store: claiming is atomic, leases are renewed by the
app's heartbeat, and fencing refuses writes from a worker that lost its lease. Queue limits
declared with ``app.queue(...)`` are passed to every claim, so the database enforces them
across the whole fleet.

Shutdown:

- :meth:`Worker.stop` (the first SIGTERM): no new claims; each run in progress finishes its
  current step, then is released as ``pending`` at its next step boundary, so another worker
  takes it over at once instead of after its lease. A run on its last step simply completes.
- :meth:`Worker.abort` (a second SIGTERM, or SIGINT): releases every run in progress at once
  (its step in flight is abandoned and runs again elsewhere, as after a crash) and exits the
  process. When the store cannot be reached within a couple of seconds it exits anyway; the
  runs then come back when their leases expire.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import engine
from .errors import ConfigurationError, LeaseLost, StoreError
from .owner import is_dead_local
from .store.base import Page, RunRecord

if TYPE_CHECKING:
    from .app import App
    from .context import RunState

log = logging.getLogger("outlast.worker")

#: seconds an abort spends handing runs back before the process exits regardless
ABORT_GRACE = 2.0
#: seconds between scans for runs whose owner died on this host
ORPHAN_SCAN = 1.0
#: longest wait between claim attempts while the store is unreachable
MAX_BACKOFF = 5.0


class Worker:
    """Executes the app's runs, up to ``concurrency`` at once.

    ``burst``: exit once nothing is runnable and nothing is executing: runs that are pending,
    due, or owned by a dead process on this host are all taken, in rounds of ``concurrency``,
    and a last scan finds none left.
    ``poll``: longest idle wait between claims (PostgreSQL wakes workers sooner via NOTIFY).
    ``queues``: claim only runs of these queues (None: any queue), so a fleet can be split by
    queue (``outlast worker --queue NAME``); takeovers of dead workers' runs are limited to
    them too.
    """

    def __init__(
        self,
        app: App,
        *,
        concurrency: int = 4,
        burst: bool = False,
        poll: float = 0.5,
        queues: Iterable[str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        names = None if queues is None else list(queues)
        if names is not None and not all(names):
            raise ValueError(f"queue names must not be empty, got {names!r}")
        self.queues = None if names is None else sorted(set(names))
        # workers claiming the same queues share a wake token (see Store.wait_for_work)
        self._group = "" if self.queues is None else "queues:" + ",".join(self.queues)
        self.app = app
        self.concurrency = concurrency
        self.burst = burst
        self.poll = poll
        #: runs executed to an outcome (or handed back) by this worker
        self.executed = 0
        self._stopping = threading.Event()
        self._active: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._slot_freed = threading.Event()
        self._last_orphan_scan = 0.0
        self._seen_fault = 0.0  # the store's last fault this worker has settled after
        self._outage = (0.0, 0.0)  # (when its faults began, when its grace ends): monotonic
        #: runs this worker released itself (their executors then find them gone)
        self._handed_back: set[str] = set()
        self._signals = 0

    # -- control ------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming; runs in progress are released as pending at their next step boundary."""
        self._stopping.set()
        self._release_at_boundary()
        self._slot_freed.set()
        if self.app._store is not None:
            self.app._store.wake_waiters()

    def abort(self, code: int = 1) -> None:
        """Hand every run in progress back now (best effort, bounded) and exit the process."""
        self._stopping.set()
        handback = threading.Thread(target=self._release_now, name="outlast-abort", daemon=True)
        handback.start()
        handback.join(ABORT_GRACE)
        logging.shutdown()
        os._exit(code)

    def install_signal_handlers(self) -> None:
        """First SIGTERM: :meth:`stop`. Second SIGTERM, or SIGINT: :meth:`abort`."""

        def on_signal(signum: int, frame: Any) -> None:
            self._signals += 1
            # The handler interrupts the main thread wherever it is (maybe holding a lock):
            # the work happens on a thread of its own.
            if signum == signal.SIGINT or self._signals > 1:
                target: Any = lambda: self.abort(128 + signum)  # noqa: E731
            else:
                log.info("stopping: no new claims; %d run(s) hand back at their next step",
                         len(self._active))
                target = self.stop
            threading.Thread(target=target, name="outlast-signal", daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _mine(self) -> list[RunState]:
        with self._lock:
            active = set(self._active)
        if not active:  # also: nothing to hand back before the store was ever reached
            return []
        return [s for s in self.app._heartbeat.running() if s.run_id in active]

    def _release_at_boundary(self) -> None:
        for state in self._mine():
            state.releasing = True
            state.interrupted = True

    def _release_now(self) -> None:
        for state in self._mine():
            try:
                self.app.store.release(state.run_id, state.epoch, "pending")
                with self._lock:
                    self._handed_back.add(state.run_id)
                log.info("run %s: released", state.run_id)
            except LeaseLost:
                pass  # finished or taken over meanwhile: nothing to hand back
            except Exception:
                log.warning("run %s: could not release; its lease will expire", state.run_id,
                            exc_info=True)

    # -- loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (or, with ``burst``, until nothing is left). Returns runs executed."""
        should_claim = True
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="outlast-worker") as pool:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._active)
                claimed = self._claim(free) if free > 0 and should_claim else []
                should_claim = True
                for run in claimed:
                    self._submit(pool, run)
                if claimed:
                    continue
                with self._lock:
                    idle = not self._active
                if self.burst and idle:
                    # The orphan scan is rate-limited and each claim took at most the free
                    # slots: look once more, now, before deciding that nothing is left.
                    claimed = self._claim(self.concurrency, rescan=True)
                    if not claimed:
                        break
                    for run in claimed:
                        self._submit(pool, run)
                    continue
                if free > 0 and not self._stopping.is_set():  # (stopped: maybe no store yet)
                    self._slot_freed.clear()
                    # False: another idle worker holds the wake token; claim only when a
                    # run of ours ended meanwhile (its slot may take queued work)
                    woken = self.app.store.wait_for_work(self.poll, self._group)
                    should_claim = woken or self._slot_freed.is_set()
                else:
                    self._slot_freed.wait(self.poll)
                    self._slot_freed.clear()
            # Runs claimed in the instant stop() was flagging the others are flagged here.
            while self._active:
                self._release_at_boundary()
                self._slot_freed.wait(0.05)
                self._slot_freed.clear()
        return self.executed

    def _claim(self, free: int, rescan: bool = False) -> list[RunRecord]:
        """Claim up to ``free`` runs; while the store is unreachable (also at start-up), retry
        with backoff instead of exiting, as the store itself does for a mid-run outage."""
        delay = 0.5
        while True:
            try:
                return self._try_claim(free, rescan, self._outage_grace())
            except Exception as exc:
                if not _store_fault(exc):
                    raise
                log.warning("store unreachable (%s: %s); retrying in %.1f s",
                            type(exc).__name__, str(exc).strip(), delay)
            if self._stopping.wait(delay):
                return []
            delay = min(delay * 2, MAX_BACKOFF)

    def _outage_grace(self) -> float:
        """Seconds of grace for leases that ran out recently (0.0: none), after a store fault.

        Once this process met the store unreachable (a claim, a journal write, a heartbeat,
        or its session's connection: the store records when the faults began), it claims
        only after the store answers a read again (the read raises the fault meanwhile, and
        the caller backs off). Then, for one heartbeat and a retry's back-off (``lease / 3 +
        2`` s), it leaves alone the runs whose leases ran out since the faults began: their
        executors, here and in other workers, kept running through the outage and renew those
        leases at their next beat, and taking the runs over would run their steps in flight a
        second time. Everything else (new runs, due timers, leases that ran out before the
        outage) is claimed at once, and owners are not judged by their sessions meanwhile."""
        store = self.app.store
        last = float(getattr(store, "last_fault", 0.0) or 0.0)
        if not last:
            return 0.0
        if last != self._seen_fault:
            store.get_run("")  # answers (retried through a blip) or raises the fault
            self._seen_fault = last
            began = float(getattr(store, "fault_began", 0.0) or last)
            self._outage = (began, time.monotonic() + self.app.lease / 3 + 2.0)
            log.warning(
                "store was unreachable; for %.1f s, runs whose leases ran out meanwhile are "
                "left to their owners to renew", self._outage[1] - time.monotonic(),
            )
        began, until = self._outage
        now = time.monotonic()
        return 0.0 if now >= until else now - began + 1.0

    def _try_claim(self, free: int, rescan: bool, grace: float = 0.0) -> list[RunRecord]:
        if rescan:
            self._last_orphan_scan = 0.0
        claimed = [] if grace else self._claim_orphans(free)
        if len(claimed) < free:
            claimed += self.app.store.claim(
                self.app.owner, self.app.lease, workflows=list(self.app.workflows),
                queues=self.app.queues or None, limit=free - len(claimed),
                in_queues=self.queues, grace=grace,
            )
        return claimed

    def _claim_orphans(self, free: int) -> list[RunRecord]:
        """Take over runs whose owner died: on PostgreSQL, owners whose session ended (any
        host, judged by one worker at a time); otherwise processes on this host that are gone."""
        now = time.monotonic()
        if now - self._last_orphan_scan < ORPHAN_SCAN:
            return []
        rescan = self._last_orphan_scan == 0.0
        self._last_orphan_scan = now
        taken: list[RunRecord] = []
        dead = self.app.store.dead_owners()
        if dead is not None:
            for owner in dead:
                if len(taken) >= free:
                    break
                log.info("owner %s: its session ended; taking its runs over", owner)
                taken += self.app.store.claim(
                    self.app.owner, self.app.lease, steal_from=owner,
                    workflows=list(self.app.workflows), queues=self.app.queues or None,
                    limit=free - len(taken), in_queues=self.queues,
                )
            # Sessions answer for any host, but not during this worker's start-up grace (see
            # postgres_session); a process of this host that is gone is certain at once: a
            # worker about to decide that nothing is left (``--burst``) looks for those too.
            if not rescan or len(taken) >= free:
                return taken
        for run in self.app.store.list_runs(Page(status="running", limit=500)):
            if len(taken) >= free:
                break
            if self.queues is not None and run.queue not in self.queues:
                continue
            if run.workflow in self.app.workflows and is_dead_local(run.owner):
                taken += self.app.store.claim(
                    self.app.owner, self.app.lease, run_id=run.run_id, steal_from=run.owner,
                    queues=self.app.queues or None, in_queues=self.queues,
                )
        return taken

    def _submit(self, pool: ThreadPoolExecutor, run: RunRecord) -> None:
        wf = self.app.workflows[run.workflow]
        with self._lock:
            self._active[run.run_id] = pool.submit(self._execute, wf, run)

    def _execute(self, wf: Any, run: RunRecord) -> None:
        try:
            outcome = engine.execute(self.app, wf, run)
            status = outcome.status
            with self._lock:
                if status == "lost" and run.run_id in self._handed_back:
                    status = "released"  # handed back on shutdown, not taken by another
            log.info("run %s: %s", run.run_id, status)
        except Exception:
            log.exception("run %s: executor error", run.run_id)
        finally:
            with self._lock:
                self._active.pop(run.run_id, None)
                self.executed += 1
            self._slot_freed.set()
            self.app.store.wake_waiters()
            self.app._notify()


def _store_fault(exc: BaseException) -> bool:
    """An unreachable or failing database (worth waiting out), not a bug or a bad setting."""
    if isinstance(exc, StoreError):  # classified by the store: connection lost, locked...
        return exc.transient
    if isinstance(exc, ConfigurationError):  # raised while opening the store
        return bool(getattr(exc, "transient", False))
    # psycopg's errors carry a sqlstate; the worker does not import psycopg itself
    return isinstance(exc, OSError | sqlite3.Error) or hasattr(exc, "sqlstate")
