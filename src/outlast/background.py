"""Runs started with ``app.start()`` that are still going when the interpreter exits.

``app.start()`` executes a run on a daemon thread, so a script that ends normally would
otherwise abandon it mid-way with status ``running`` until its lease expires. At exit each
such run is asked to stop at its next step boundary (as a worker does on SIGTERM) and handed
back as ``pending``; a step still in flight after a short grace is abandoned and runs again
wherever the run resumes (as after a crash). A warning names the runs and how to finish them.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING

from .errors import LeaseLost

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("outlast")

#: seconds the runs get to reach a step boundary before they are handed back mid-step
EXIT_GRACE = 2.0


class Background:
    """The ids of one app's runs executing on ``app.start()`` threads in this process."""

    def __init__(self, app: App) -> None:
        self._app = weakref.ref(app)
        #: run id -> the epoch it was claimed with when started here (None: not claimed)
        self._ids: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._pid = os.getpid()
        self._registered = False
        #: set at exit: background threads stop instead of claiming their run again
        self.exiting = False

    def add(self, run_id: str, epoch: int | None) -> None:
        """Track a run started in the background (registers the exit hook once); ``epoch``:
        the claim it was created with, when it was created owned by this process."""
        with self._lock:
            self._ids[run_id] = epoch
            if not self._registered:
                atexit.register(self.hand_back)
                self._registered = True

    def discard(self, run_id: str) -> None:
        """The run's thread ended (finished, suspended or handed back)."""
        with self._done:
            self._ids.pop(run_id, None)
            self._done.notify_all()

    def _wait(self, seconds: float) -> set[str]:
        deadline = time.monotonic() + seconds
        with self._done:
            while self._ids and (left := deadline - time.monotonic()) > 0:
                self._done.wait(left)
            return set(self._ids)

    @staticmethod
    def _release(app: App, run_id: str, epoch: int) -> None:
        assert app._store is not None
        try:
            app._store.release(run_id, epoch, "pending")
        except LeaseLost:
            pass  # it finished, suspended, released itself or was taken over meanwhile
        except Exception:
            log.warning("run %s: could not hand back; its lease will expire", run_id,
                        exc_info=True)

    def hand_back(self, grace: float = EXIT_GRACE) -> list[str]:
        """Stop this process's background runs and release them as pending; returns their ids.

        Called at interpreter exit. Runs not executing here (waiting for their turn, or
        asleep until a timer) need nothing: they are already in the store for a worker.
        """
        app = self._app()
        if app is None or app._hb is None or app._store is None or os.getpid() != self._pid:
            return []  # gone, closed, or a forked child: nothing of ours runs here
        with self._lock:
            self.exiting = True
            ids = dict(self._ids)
        if not ids:
            return []
        states = {s.run_id: s for s in app._hb.running() if s.run_id in ids}
        for state in states.values():
            state.releasing = True
            state.interrupted = True
        claims = {rid: epoch for rid, epoch in ids.items() if epoch is not None}
        claims.update({rid: s.epoch for rid, s in states.items()})
        # Claimed at creation, its thread not executing yet: released now (a thread that
        # starts meanwhile has its first write refused, and does not claim again).
        for run_id in set(claims) - set(states):
            self._release(app, run_id, claims[run_id])
        left = self._wait(grace)
        for run_id in set(states) & left:
            self._release(app, run_id, claims[run_id])  # still mid-step: abandoned
        handed = []
        for run_id in sorted(claims):
            record = app._store.get_run(run_id)
            if record is not None and record.status == "pending":
                handed.append(run_id)
        if handed:
            log.warning(
                "outlast: the program ended while %d run(s) started with app.start() were "
                "unfinished; they were handed back as pending: %s. Finish them with "
                "`outlast worker MODULE:APP`, or wait for them before exiting "
                "(handle.result()).",
                len(handed),
                ", ".join(handed[:20]) + (f" and {len(handed) - 20} more" if len(handed) > 20 else ""),
            )
        return handed
