"""Checkpoints of any run, forking a run from one, and retrying a failed run.

A run's checkpoints are the points after each journaled durable call, numbered from 1 (the
number of calls kept), with 0 for the input (before the first call). A **fork** is an ordinary
new run: its own id, the same workflow and input, the origin's journal up to and including
the checkpoint (copied in one transaction; blobs shared, not duplicated) and a link to its
origin (``RunInfo.forked_from``); it executes the rest with the current code. A **retry**
makes a failed run pending again without its recorded failure: the failed call and what
follows it are dropped, so the calls before it are kept (their work, and their money) and
the rest runs again with the current code. A failure raised by workflow code itself (not by
a step) keeps the whole journal: the run re-executes from its last recorded call.

Graph runs keep their own checkpoints and forks (:mod:`outlast.timetravel`, ``update=``).
See docs/versioning.md.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import serde, timetravel
from .errors import ConfigurationError, RunNotFound
from .graph import NODE_KIND, Graph
from .run import FORKED_FROM, FRONTIER
from .runs import MAX_RUN_ID, new_run_id
from .store.base import Entry, RunRecord
from .store.sqlite_evolve import not_failed
from .timetravel import Checkpoint

if TYPE_CHECKING:
    from .app import App
    from .run import Run

__all__ = ["checkpoints", "checkpoints_of", "fork", "retry"]


def _run(app: App, run_id: str) -> RunRecord:
    run = app.store.get_run(run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def is_graph_run(app: App, run: RunRecord, entries: list[Entry] | None = None) -> bool:
    """Whether ``run`` is a graph run (known by its workflow, else by its journal)."""
    wf = app.workflows.get(run.workflow)
    if wf is not None:
        return isinstance(wf, Graph)
    entries = app.store.load_journal(run.run_id) if entries is None else entries
    return any(e.kind == NODE_KIND for e in entries) or b'"fork"' in run.input


def _summary(entry: Entry) -> str:
    if entry.status == "failed":
        try:
            doc = serde.loads(entry.output or b"null", what="recorded error")
            return f"failed: {doc['c'].rpartition(':')[2]}: {doc['m']}"[:80]
        except Exception:  # a row this process cannot read is still a checkpoint
            return "failed"
    return entry.status


def checkpoints(app: App, run_id: str) -> list[Checkpoint]:
    """The run's checkpoints in order (a graph run's are its nodes)."""
    run = _run(app, run_id)
    return checkpoints_of(app, run, app.store.load_journal(run_id))


def checkpoints_of(app: App, run: RunRecord, entries: list[Entry]) -> list[Checkpoint]:
    """:func:`checkpoints` of a run whose record and journal are already loaded (the
    dashboard has them: a 10,000-step journal is not read twice)."""
    run_id = run.run_id
    if is_graph_run(app, run, entries):
        return timetravel.checkpoints(app, run_id)
    cps = []
    if run.snapshot_position is None:
        cps.append(Checkpoint("0", run_id, 0, "start", run.created_at, "input", None, kind="start"))
    for e in entries:
        if e.status != "intent":  # an effect whose outcome is unknown is no point to resume from
            cps.append(
                Checkpoint(
                    str(e.position + 1),
                    run_id,
                    e.position + 1,
                    e.key,
                    e.ended_at or e.started_at,
                    _summary(e),
                    None,
                    e.position,
                    e.kind,
                )
            )
    return cps


def _find(app: App, run_id: str, checkpoint_id: str | int) -> Checkpoint:
    cps = checkpoints(app, run_id)
    for cp in cps:
        if cp.id == str(checkpoint_id):
            return cp
    shown = [c.id for c in cps]
    ids = ", ".join(shown if len(shown) <= 12 else [*shown[:6], "...", *shown[-5:]])
    raise ConfigurationError(
        f"run {run_id!r} has no checkpoint {checkpoint_id!r}; its checkpoints are: {ids or 'none'} "
        f"(see `outlast checkpoints {run_id}`)"
    )


def fork(
    app: App,
    run_id: str,
    checkpoint_id: str | int,
    update: dict[str, Any] | None = None,
    new_run_id_: str | None = None,
    *,
    execute: bool = True,
) -> Run[Any]:
    """A new run that keeps ``run_id``'s journal up to and including ``checkpoint_id`` and
    executes the rest with the current code (a graph run: from that checkpoint's state,
    edited by ``update``). The origin is not touched, even while it runs.

    ``execute``: start executing it here in the background (as ``app.start``); else it is
    only recorded, for a worker.
    """
    run = _run(app, run_id)
    if is_graph_run(app, run):
        return timetravel.fork(app, run_id, checkpoint_id, update, new_run_id_, execute=execute)
    if update:
        raise ConfigurationError(
            f"update= edits a graph's state, and run {run_id!r} of {run.workflow!r} is not a "
            "graph run; fork it without update"
        )
    cp = _find(app, run_id, checkpoint_id)
    if new_run_id_ is not None and (
        not isinstance(new_run_id_, str) or not new_run_id_ or len(new_run_id_) > MAX_RUN_ID
    ):
        raise ConfigurationError(
            f"new_run_id must be a non-empty string of at most {MAX_RUN_ID} characters, got "
            f"{new_run_id_!r}"
        )
    rid = new_run_id_ or new_run_id()
    stats = json.dumps({FORKED_FROM: {"run": run_id, "checkpoint": cp.id}})
    record = app.store.fork_run(run_id, rid, cp.position, stats)
    return _go(app, record, execute)


def failure_position(run: RunRecord, entries: list[Entry]) -> int | None:
    """The position of the recorded call whose failure failed the run (the latest failed
    entry holding the run's error), or None when the workflow code itself raised it."""
    wanted = _error_id(run.error)
    if wanted is None:
        return None
    for entry in reversed(entries):
        if entry.status == "failed" and _error_id(entry.output) == wanted:
            return entry.position
    return None


def _error_id(data: bytes | None) -> tuple[str, str] | None:
    """A recorded error's class and message, read without importing anything."""
    if data is None:
        return None
    try:
        doc = serde.loads(data, what="recorded error")
    except Exception:  # unreadable: compare nothing
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("c"), str):
        return None
    return doc["c"], str(doc.get("m"))


def retry(app: App, run_id: str, *, execute: bool = True) -> Run[Any]:
    """Run the failed run again from its failure: see the module docstring."""
    run = _run(app, run_id)
    if run.status != "failed":
        raise not_failed(run_id, run.status)
    cut = failure_position(run, app.store.load_journal(run_id))
    stats: dict[str, Any] = json.loads(run.stats) if run.stats else {}
    frontier = stats.get(FRONTIER)
    if cut is not None and isinstance(frontier, list) and frontier and frontier[0] >= cut:
        del stats[FRONTIER]  # the dropped part is new ground for the current code
    stats["retries"] = int(stats.get("retries", 0)) + 1
    record = app.store.retry_run(run_id, cut, json.dumps(stats, sort_keys=True))
    return _go(app, record, execute)


def _go(app: App, record: RunRecord, execute: bool) -> Run[Any]:
    from .run import Run

    app._notify()
    wf = app.workflows.get(record.workflow)
    if execute and wf is not None:
        app._launch(wf, record, owned=False)
    return Run(app, record.run_id)
