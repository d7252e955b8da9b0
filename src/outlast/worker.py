"""The worker: claims runnable runs (new, orphaned, due) and executes them.

``outlast worker module:app --concurrency N`` runs one of these. Any number of workers, on
any number of machines, may share a store: claiming is atomic, leases are renewed by the
app's heartbeat, and fencing refuses writes from a worker that lost its lease.

Shutdown: the first SIGTERM (or :meth:`Worker.stop`) stops claiming and lets the current
runs finish, then releases nothing is left to release; a second SIGTERM or a SIGINT stops at
once, leaving the runs to be recovered elsewhere (at once on this host, after the lease
elsewhere).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import engine
from .owner import is_dead_local
from .store.base import Page

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("outlast.worker")


class Worker:
    """Executes the app's runs with up to ``concurrency`` at once.

    ``burst``: exit once nothing is runnable and nothing is executing.
    ``poll``: longest idle wait between claims (PostgreSQL wakes workers sooner via NOTIFY).
    """

    def __init__(
        self,
        app: App,
        *,
        concurrency: int = 4,
        burst: bool = False,
        poll: float = 0.5,
        on_event: Any = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.app = app
        self.concurrency = concurrency
        self.burst = burst
        self.poll = poll
        self.on_event = on_event
        self._stopping = threading.Event()
        self._active: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._slot_freed = threading.Event()
        self._last_orphan_scan = 0.0
        self.executed = 0

    # -- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; current runs finish (graceful)."""
        self._stopping.set()
        self._slot_freed.set()

    def install_signal_handlers(self) -> None:
        """First SIGTERM: graceful stop. Second SIGTERM or SIGINT: exit at once."""

        def on_term(signum: int, frame: Any) -> None:
            if self._stopping.is_set() or signum == signal.SIGINT:
                raise SystemExit(128 + signum)
            log.info("stopping: no new claims; waiting for %d run(s)", len(self._active))
            self.stop()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    # -- loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (or, with ``burst``, until nothing is left). Returns runs executed."""
        store = self.app.store
        names = list(self.app.workflows)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="outlast-worker") as pool:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._active)
                claimed = []
                if free > 0:
                    claimed = self._claim_orphans(free)
                    if len(claimed) < free:
                        claimed += store.claim(
                            self.app.owner, self.app.lease, workflows=names,
                            queues=self.app.queues or None, limit=free - len(claimed),
                        )
                for run in claimed:
                    self._submit(pool, run)
                if claimed:
                    continue
                with self._lock:
                    idle = not self._active
                if self.burst and idle:
                    break
                if free > 0:
                    self._slot_freed.clear()
                    store.wait_for_work(self.poll)
                else:
                    self._slot_freed.wait(self.poll)
                    self._slot_freed.clear()
            for future in list(self._active.values()):
                future.result()
        return self.executed

    def _claim_orphans(self, free: int) -> list[Any]:
        """Take over runs whose owner was a process on this host that has died."""
        now = time.monotonic()
        if now - self._last_orphan_scan < 1.0:
            return []
        self._last_orphan_scan = now
        taken: list[Any] = []
        for run in self.app.store.list_runs(Page(status="running", limit=500)):
            if len(taken) >= free:
                break
            if run.workflow in self.app.workflows and is_dead_local(run.owner):
                taken += self.app.store.claim(
                    self.app.owner, self.app.lease, run_id=run.run_id, steal_from=run.owner
                )
        return taken

    def _submit(self, pool: ThreadPoolExecutor, run: Any) -> None:
        wf = self.app.workflows[run.workflow]
        future = pool.submit(self._execute, wf, run)
        with self._lock:
            self._active[run.run_id] = future

    def _execute(self, wf: Any, run: Any) -> None:
        try:
            outcome = engine.execute(self.app, wf, run)
            log.info("run %s: %s", run.run_id, outcome.status)
        except Exception:
            log.exception("run %s: executor error", run.run_id)
        finally:
            with self._lock:
                self._active.pop(run.run_id, None)
                self.executed += 1
            self._slot_freed.set()
            self.app._notify()
