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
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._pid = os.getpid()
        self._registered = False

    def add(self, run_id: str) -> None:
        """Track a run started in the background (registers the exit hook once)."""
        with self._lock:
            self._ids.add(run_id)
            if not self._registered:
                atexit.register(self.hand_back)
                self._registered = True

    def discard(self, run_id: str) -> None:
        """The run's thread ended (finished, suspended or handed back)."""
        with self._done:
            self._ids.discard(run_id)
            self._done.notify_all()

    def _wait(self, seconds: float) -> set[str]:
        deadline = time.monotonic() + seconds
        with self._done:
            while self._ids and (left := deadline - time.monotonic()) > 0:
                self._done.wait(left)
            return set(self._ids)

    def hand_back(self, grace: float = EXIT_GRACE) -> list[str]:
        """Stop this process's background runs and release them as pending; returns their ids.

        Called at interpreter exit. Runs not executing here (waiting for their turn, or
        asleep until a timer) need nothing: they are already in the store for a worker.
        """
        app = self._app()
        if app is None or app._hb is None or app._store is None or os.getpid() != self._pid:
            return []  # gone, closed, or a forked child: nothing of ours runs here
        with self._lock:
            ids = set(self._ids)
        if not ids:
            return []
        states = [s for s in app._hb.running() if s.run_id in ids]
        for state in states:
            state.releasing = True
            state.interrupted = True
        left = self._wait(grace)
        for state in states:
            if state.run_id in left:
                try:
                    app._store.release(state.run_id, state.epoch, "pending")
                except LeaseLost:
                    pass  # it finished or was taken over meanwhile
                except Exception:
                    log.warning("run %s: could not hand back; its lease will expire",
                                state.run_id, exc_info=True)
        handed = sorted(s.run_id for s in states)
        if handed:
            log.warning(
                "outlast: the program ended while %d run(s) started with app.start() were "
                "unfinished; they were handed back as pending: %s. Finish them with "
                "`outlast worker MODULE:APP`, or wait for them before exiting "
                "(handle.result()).",
                len(handed), ", ".join(handed),
            )
        return handed
