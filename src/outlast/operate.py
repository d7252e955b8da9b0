"""What an App does with runs already stored: inspect and list them, send events, cancel,
resolve a paused outcome, list checkpoints, fork, retry, and check them against the code.

A part of :class:`~outlast.app.App` (its base class), kept apart from registration and
starting runs; every method works on any run in the store, whichever process created it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from . import effects, evolution, replaycheck, serde, timetravel
from .errors import ConfigurationError, RunNotFound
from .run import Run, RunInfo
from .store.base import TERMINAL, RunQuery

if TYPE_CHECKING:
    from .app import App
    from .replaycheck import ReplayResult
    from .timetravel import Checkpoint


class Operations:
    """Operator actions on stored runs (mixed into :class:`~outlast.app.App`)."""

    @property
    def _app(self) -> App:
        """This object as the App it is part of (for the helpers that take one)."""
        return cast("App", self)

    def checkpoints(self, run_id: str) -> list[Checkpoint]:
        """The run's checkpoints in order: one per journaled durable call, 0 being the input
        (a graph run's are its nodes; see :mod:`outlast.evolution`)."""
        return evolution.checkpoints(self._app, run_id)

    def state(self, run_id: str, checkpoint_id: str | int | None = None) -> dict[str, Any]:
        """A graph run's state at a checkpoint (default: the latest)."""
        return timetravel.state(self._app, run_id, checkpoint_id)

    def fork(
        self,
        run_id: str,
        checkpoint_id: str | int,
        update: dict[str, Any] | None = None,
        new_run_id: str | None = None,
        *,
        execute: bool = True,
    ) -> Run[Any]:
        """Start a new run that keeps ``run_id``'s journal up to and including the checkpoint
        and executes the rest with the current code (its blobs shared; the origin untouched);
        returns its handle like :meth:`start`. A graph run forks from the checkpoint's state,
        edited by ``update``. ``execute=False``: only record it, for a worker."""
        return evolution.fork(self._app, run_id, checkpoint_id, update, new_run_id, execute=execute)

    def retry(self, run_id: str, *, execute: bool = True) -> Run[Any]:
        """Run a failed run again from its failure with the current code: the failed call and
        what follows it are dropped, the calls before it kept (a failure raised by workflow
        code keeps the whole journal). Raises NotFailed for a run that is not failed.
        ``execute=False``: only make it pending, for a worker."""
        return evolution.retry(self._app, run_id, execute=execute)

    def check_replay(
        self,
        run_ids: list[str] | None = None,
        *,
        statuses: list[str] | None = None,
        workflow: str | None = None,
        limit: int | None = None,
    ) -> list[ReplayResult]:
        """Replay recorded runs against this code without executing anything (see
        :mod:`outlast.replaycheck`): every non-terminal run by default, or ``run_ids``, or
        runs of ``statuses``. A result per run; ``all(r.ok for r in results)`` in CI."""
        return replaycheck.check(self._app, run_ids, statuses=statuses, workflow=workflow, limit=limit)

    def handle(self, run_id: str) -> Run[Any]:
        """A handle on an existing run; raises RunNotFound."""
        self._app.get_run(run_id, steps=False)
        return Run(self._app, run_id)

    def get_run(self, run_id: str, *, steps: bool = True) -> RunInfo:
        """The run as stored, with its journaled steps; raises RunNotFound."""
        record = self._app.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        entries = self._app.store.load_journal(run_id) if steps else None
        return RunInfo.from_record(record, entries, self._app.store.get_blobs)

    def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[RunInfo]:
        """Runs, newest first (without their steps). ``after``: the last run id of the
        previous page; the page goes on from there (a keyset: as fast on the millionth page
        as on the first, and no run is shown twice when new ones arrive meanwhile)."""
        store = self._app.store
        cursor = None
        if after is not None:
            last = store.get_run(after)
            if last is None:
                raise RunNotFound(after, "the page cursor must be the id of a listed run")
            cursor = (last.created_at, last.run_id)
        query = RunQuery(status=status, workflow=workflow, after=cursor, limit=limit)
        return [RunInfo.from_record(r, None, store.get_blobs) for r in store.browse_runs(query)]

    def cancel(self, run_id: str) -> list[str]:
        """Cancel the run and its unfinished children; a running run stops at its next step
        boundary. Returns the ids cancelled (empty when the run had already ended)."""
        cancelled = self._app.store.cancel(run_id)
        for rid in cancelled:
            self._app._heartbeat.interrupt(rid)
        self._app._notify()
        return cancelled

    def send(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send event ``name`` with a JSON-like ``payload`` to a run (see ``ctx.wait_for``)."""
        record = self._app.store.get_run(run_id)
        if record is None:
            raise RunNotFound(run_id, "events can only be sent to an existing run")
        if record.status in TERMINAL:
            raise ConfigurationError(
                f"run {run_id!r} is {record.status}; it will never read event {name!r}"
            )
        self._app.store.send_event(run_id, name, serde.dumps(payload, what=f"payload of event {name!r}"))
        self._app._notify()

    def resolve(
        self,
        run_id: str,
        *,
        done: Any = effects._UNSET,
        redo: bool = False,
        retry: bool = False,
        key: str | None = None,
    ) -> RunInfo:
        """Decide a paused run's unknown outcome and make it runnable again (give one of):

        ``done=result``: the effect happened; record ``result`` as the step's outcome.
        ``redo=True``: it did not; run the step again. ``retry=True``: decide nothing, ask the
        step's ``reconcile`` again. ``key`` names the step when several await an outcome.
        Raises NotPaused when the run is not paused; bad input leaves the run as it was.
        """
        return RunInfo.from_record(
            effects.resolve(self._app, run_id, done=done, redo=redo, retry=retry, key=key),
            None,
            self._app.store.get_blobs,
        )
