"""Replaying recorded runs against the current code without executing anything.

``outlast replay MODULE:APP`` and ``app.check_replay()`` check a deploy before it meets the
runs in flight: each run's journal is replayed by the current workflow code in a check mode
(:attr:`RunState.checking`) where every durable call must be answered from the journal. A
call the journal does not answer (the end of an in-flight run's journal) stops the check
there, successfully, before it runs or writes anything; a step, a model call, an effect, a
child, a wait are never executed. A call other than the recorded one, or a finished workflow
that left recorded calls unreached, is a divergence, reported with the run, the position,
what was recorded and what the code called. The store is only read.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import snapshot
from .context import Context, RunState, _run_var
from .engine import frontier_of
from .errors import Interrupt, NonDeterminismError, ReplayEnd, RunNotFound
from .evolution import _error_id
from .journal import Journal
from .serde_errors import dump_error
from .store.base import Page, RunRecord

if TYPE_CHECKING:
    from .app import App
    from .workflow import Workflow

__all__ = ["DEFAULT_STATUSES", "ReplayResult", "check", "check_run"]

#: what is checked when no run id and no status is given: every run that may resume
DEFAULT_STATUSES = ("pending", "running", "suspended", "paused")


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The check of one run against the current code.

    ``outcome``: ``"ok"`` (the code answers the journal to its end, or finishes as recorded),
    ``"diverged"`` (``position``, ``recorded`` and ``called`` say where and how), ``"error"``
    (the code raised something else while replaying, so a worker would fail the run) or
    ``"skipped"`` (this app registers no such workflow, so nothing was checked: ``ok`` is True
    for it, ``skipped`` too; ``outlast replay --strict`` fails on it). ``calls``: recorded
    calls replayed.
    """

    run_id: str
    workflow: str
    status: str
    outcome: str
    calls: int
    detail: str
    position: int | None = None
    recorded: str | None = None
    called: str | None = None

    @property
    def ok(self) -> bool:
        """False for a divergence or an error (what makes ``outlast replay`` exit 1)."""
        return self.outcome in ("ok", "skipped")

    @property
    def skipped(self) -> bool:
        """True when the run was not checked: this app registers no workflow of its name."""
        return self.outcome == "skipped"


def check(
    app: App,
    run_ids: list[str] | None = None,
    *,
    statuses: list[str] | None = None,
    workflow: str | None = None,
    limit: int | None = None,
) -> list[ReplayResult]:
    """Check ``run_ids`` (RunNotFound for one that does not exist), or the runs of
    ``statuses`` (default :data:`DEFAULT_STATUSES`), of ``workflow`` if given, at most
    ``limit`` of them."""
    return [check_run(app, run) for run in _select(app, run_ids, statuses, workflow, limit)]


def _select(
    app: App,
    run_ids: list[str] | None,
    statuses: list[str] | None,
    workflow: str | None,
    limit: int | None,
) -> list[RunRecord]:
    store = app.store
    if run_ids:
        runs = []
        for rid in run_ids:
            run = store.get_run(rid)
            if run is None:
                raise RunNotFound(rid)
            runs.append(run)
        return runs[:limit]
    found: list[RunRecord] = []
    for status in statuses or DEFAULT_STATUSES:
        offset = 0
        while limit is None or len(found) < limit:
            page = store.list_runs(Page(status=status, workflow=workflow, limit=500, offset=offset))
            found.extend(page)
            if len(page) < 500:
                break
            offset += 500
    return found if limit is None else found[:limit]


def check_run(app: App, run: RunRecord) -> ReplayResult:
    """Replay one run's journal against the current code (see the module docstring)."""
    wf = app.workflows.get(run.workflow)
    if wf is None:
        return _result(
            run, "skipped", 0,
            f"not checked: this app registers no workflow {run.workflow!r} (import the module "
            "that declares it, or check these runs with the app that runs them)",
        )
    entries = app.store.load_journal(run.run_id)
    point = snapshot.resume_point(run)
    journal = Journal(run.run_id, entries, point.start, point.counts, frontier_of(run))
    state = RunState(
        app, app.store, run, journal, wf.is_async, generation=point.generation, checking=True
    )
    try:
        _replay(wf, run, state, point)
        journal.check_complete()
    except ReplayEnd as end:
        return _result(
            run,
            "ok",
            len(journal.replayed),
            f"replays to the end of its journal ({len(journal.replayed)} call(s)); next: "
            f"{getattr(end, 'called', '?')}",
        )
    except NonDeterminismError as exc:
        return _result(
            run,
            "diverged",
            len(journal.replayed),
            exc.message,
            getattr(exc, "position", None),
            getattr(exc, "recorded", None),
            getattr(exc, "called", None),
        )
    except Interrupt as stop:
        return _result(run, "error", len(journal.replayed), f"replay stopped: {stop.message}")
    except Exception as exc:
        if run.status == "failed" and _error_id(run.error) == _error_id(dump_error(exc)):
            return _result(run, "ok", len(journal.replayed), "replays to its recorded failure")
        return _result(
            run,
            "error",
            len(journal.replayed),
            f"the code raised {type(exc).__name__}: {exc} while replaying (a worker would fail "
            "the run with it)",
        )
    return _result(run, "ok", len(journal.replayed), "replays to the end of the workflow")


def _replay(
    wf: Workflow[Any, Any], run: RunRecord, state: RunState, point: snapshot.ResumePoint
) -> None:
    """Execute the workflow body in check mode (an async one on the process's event loop)."""
    ctx = Context(state)
    token = _run_var.set(state)
    try:
        fn, args, kwargs = snapshot.entry_point(wf, run, ctx, point)
        value = fn(*args, **kwargs)
    finally:
        _run_var.reset(token)
    if inspect.isawaitable(value):
        from . import aio

        aio.run(_awaited(state, value))


async def _awaited(state: RunState, value: Any) -> Any:
    token = _run_var.set(state)
    try:
        return await value
    finally:
        _run_var.reset(token)


def _result(
    run: RunRecord,
    outcome: str,
    calls: int,
    detail: str,
    position: int | None = None,
    recorded: str | None = None,
    called: str | None = None,
) -> ReplayResult:
    return ReplayResult(
        run.run_id, run.workflow, run.status, outcome, calls, detail, position, recorded, called
    )


def describe(result: ReplayResult, text: Callable[[str], str] = str) -> str:
    """One line for people: the run, what it replayed, and the divergence if any."""
    line = f"{result.outcome.upper():8} {text(result.run_id)} ({text(result.workflow)}, {result.status})"
    if result.outcome == "diverged":
        return (
            f"{line}: at position {result.position}: recorded {text(result.recorded or '?')}, "
            f"the code called {text(result.called or '?')}"
        )
    return f"{line}: {text(result.detail)}"
