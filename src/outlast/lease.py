"""Keeping leases alive: one heartbeat thread per App renews every run it executes.

The heartbeat runs beside the workflow threads, so a step that computes for minutes keeps its
run's lease. When the store says a run is no longer ours (taken over after a long pause, or
cancelled), the run's executor is told to stop at its next step boundary; its writes are
refused by fencing anyway.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .errors import Interrupt, OutlastError

if TYPE_CHECKING:
    from .context import RunState
    from .store.base import Store

log = logging.getLogger("outlast.lease")


def confirm(state: RunState) -> None:
    """Ask the store whether ``state``'s run is still ours, and stop it here if not.

    Called when an in-memory wait ends, before the workflow goes on to its next step: a
    cancel (or a takeover) from another process reaches this process only at the next
    heartbeat, up to ``lease / 3`` seconds later, and the wait wrote nothing that fencing
    could have refused. One read per wait."""
    if not state.interrupted and state.unrecorded is None:  # unrecorded: nobody else knows it
        run = state.store.get_run(state.run_id)
        if run is None or run.epoch != state.epoch or run.status != "running":
            state.interrupted = True
    state.check()


class Heartbeat:
    """Renews the leases of the runs registered with it, every ``lease / 3`` seconds."""

    def __init__(self, store: Store, owner: str, lease: float) -> None:
        self.store = store
        self.owner = owner
        self.lease = lease
        self.interval = max(0.05, lease / 3)
        self._runs: dict[str, RunState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, state: RunState) -> None:
        with self._lock:
            self._runs[state.run_id] = state
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._loop, name="outlast-heartbeat", daemon=True
                )
                self._thread.start()

    def remove(self, state: RunState) -> None:
        with self._lock:
            if self._runs.get(state.run_id) is state:
                del self._runs[state.run_id]

    def running(self) -> list[RunState]:
        with self._lock:
            return list(self._runs.values())

    def interrupt(self, run_id: str) -> None:
        """Ask the local executor of ``run_id`` (if any) to stop at its next step boundary."""
        with self._lock:
            state = self._runs.get(run_id)
        if state is not None:
            state.interrupted = True

    def beat(self) -> None:
        """Renew all leases once (also called directly by tests and the worker)."""
        with self._lock:
            states = list(self._runs.values())
        ids = []
        for state in states:
            if state.unrecorded is not None:
                # A run app.run records with its first entry, still running its first step:
                # record it now, so a long first step leaves it unlisted (not cancellable,
                # not recoverable) for one beat at most.
                try:
                    state.created()
                except (OutlastError, Interrupt):  # its own next write meets the fault too
                    log.warning("run %s: could not record it yet", state.run_id, exc_info=True)
                    continue
            ids.append(state.run_id)
        if not ids:
            return
        lost = self.store.heartbeat(self.owner, ids, self.lease)
        for run_id in lost:
            self.interrupt(run_id)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a dropped connection must not kill the heartbeat
                log.warning("heartbeat failed; retrying", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
