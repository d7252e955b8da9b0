"""Time travel over graph runs: list checkpoints, rebuild the state at one, fork from it.

A graph run's checkpoints are its node entries, numbered from 0 (the input, before the first
node). A fork is a new run whose input names its source run and checkpoint: its history is
the source's up to that checkpoint (shared, not copied: the fork's first entry holds a
snapshot whose blobs are the source's own), followed by its own nodes. Checkpoint ids are
those numbers as strings, unique along a run's lineage, so ``state(fork, "3")`` answers with
the source's checkpoint 3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import serde
from .errors import ConfigurationError, RunNotFound
from .graph import NODE_KIND, START, Graph, fold, node_meta
from .run import FORKED_FROM, Run
from .store.base import Entry, RunRecord

if TYPE_CHECKING:
    from .app import App

__all__ = ["Checkpoint", "checkpoints", "fork", "state"]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint of a run: for a graph run, the state after ``node`` ran; for any other
    run, the point after one journaled durable call (see :mod:`outlast.evolution`).

    ``id``: pass it to ``app.fork`` (and ``app.state`` for graphs). ``run_id``: the run that
    recorded it (the source run, for a graph fork's inherited history). ``node``: the graph
    node, or the call's key (``"search:2"``). ``next``: the node that comes after it (graphs).
    ``position``: the journal position of its entry (-1: before the first call).
    ``kind``: the entry's kind (``"step"``, ``"event"``, ``"node"``...; ``"start"`` for 0).
    """

    id: str
    run_id: str
    seq: int
    node: str
    at: float
    summary: str
    next: str | None
    position: int = -1
    kind: str = NODE_KIND


def _run(app: App, run_id: str) -> RunRecord:
    run = app.store.get_run(run_id)
    if run is None:
        raise RunNotFound(run_id)
    return run


def _lineage(app: App, run: RunRecord) -> tuple[dict[str, Any], dict[str, Any] | None, list[Entry]]:
    """The run's input state, its fork origin (or None), and its node entries."""
    args, kwargs = serde.decode_args(run.input, what=f"input of run {run.run_id!r}")
    entries = sorted(
        (e for e in app.store.load_journal(run.run_id) if e.kind == NODE_KIND), key=lambda e: e.position
    )
    base = args[0] if args and isinstance(args[0], dict) else kwargs.get("state") or {}
    return base, kwargs.get("fork"), entries


def _checkpoint(run_id: str, entry: Entry) -> Checkpoint:
    meta = node_meta(entry)
    return Checkpoint(str(meta["seq"]), run_id, int(meta["seq"]), entry.name,
                      entry.ended_at or entry.started_at, str(meta.get("summary", "")), meta.get("next"),
                      entry.position)


def checkpoints(app: App, run_id: str) -> list[Checkpoint]:
    """The run's checkpoints in order, a fork's inherited ones first."""
    run = _run(app, run_id)
    _graph_of(app, run, required=False)
    base, origin, entries = _lineage(app, run)
    if origin is not None:
        upto = int(origin["checkpoint"])
        inherited = [c for c in checkpoints(app, origin["run"]) if c.seq <= upto]
    else:
        graph = _graph_of(app, run, required=False)
        first = graph.successor(START, base, run_id) if graph is not None else None
        inherited = [
            Checkpoint("0", run_id, 0, START, run.created_at, f"input: {sorted(base)}", first,
                       kind="start")
        ]
    return inherited + [_checkpoint(run_id, e) for e in entries]


def _graph_of(app: App, run: RunRecord, *, required: bool = True) -> Graph | None:
    wf = app.workflows.get(run.workflow)
    if isinstance(wf, Graph):
        return wf
    if wf is not None or required:
        what = "is not a graph" if wf is not None else "is not registered in this app"
        raise ConfigurationError(
            f"run {run.run_id!r} is a run of {run.workflow!r}, which {what}; checkpoints belong "
            "to graph runs (import the module that declares the graph first)"
        )
    return None


def _find(app: App, run_id: str, checkpoint_id: str | int) -> Checkpoint:
    cps = checkpoints(app, run_id)
    for cp in cps:
        if cp.id == str(checkpoint_id):
            return cp
    ids = ", ".join(c.id for c in cps)
    raise ConfigurationError(
        f"run {run_id!r} has no checkpoint {checkpoint_id!r}; its checkpoints are: {ids} "
        f"(see app.checkpoints or `outlast show {run_id}`)"
    )


def state(app: App, run_id: str, checkpoint_id: str | int | None = None) -> dict[str, Any]:
    """The graph state at ``checkpoint_id`` (default: the latest checkpoint)."""
    run = _run(app, run_id)
    graph = _graph_of(app, run)
    assert graph is not None
    base, origin, entries = _lineage(app, run)
    if checkpoint_id is None:
        if entries or origin is None:
            return fold(graph, base, entries, app.store.get_blobs)
        # A fork that has not recorded its first entry yet: the source's state, edited.
        source, _ = fork_base(app, graph, origin["run"], origin["checkpoint"])
        return graph.apply(source, origin.get("update") or {})
    cp = _find(app, run_id, checkpoint_id)
    if cp.run_id != run_id:  # inherited history: the run that recorded it answers
        return state(app, cp.run_id, cp.id)
    upto = [e for e in entries if int(node_meta(e)["seq"]) <= cp.seq]
    return fold(graph, base, upto, app.store.get_blobs)


def fork_base(app: App, graph: Graph, run_id: str, checkpoint_id: str | int) -> tuple[dict[str, Any], Checkpoint]:
    """The state at a source run's checkpoint, and that checkpoint (for starting a fork)."""
    source = _run(app, run_id)
    if source.workflow != graph.name:
        raise ConfigurationError(
            f"run {run_id!r} is a run of {source.workflow!r}, not of graph {graph.name!r}"
        )
    cp = _find(app, run_id, checkpoint_id)
    return state(app, run_id, cp.id), cp


def fork(
    app: App,
    run_id: str,
    checkpoint_id: str | int,
    update: dict[str, Any] | None = None,
    new_run_id: str | None = None,
    *,
    execute: bool = True,
) -> Run[Any]:
    """Start a new run from the state at ``checkpoint_id`` of ``run_id`` (edited by ``update``,
    applied through the reducers), continuing after that checkpoint's node.

    With ``execute=False`` the run is only recorded, for a worker (the CLI's default).
    """
    run = _run(app, run_id)
    graph = _graph_of(app, run)
    assert graph is not None
    cp = _find(app, run_id, checkpoint_id)
    origin = {"run": run_id, "checkpoint": cp.id, "update": dict(update or {})}
    serde.dumps(origin, what="fork update")  # refuse an unstorable edit before recording a run
    # The origin is also kept where every fork keeps it (RunInfo.forked_from, outlast show).
    stats = json.dumps({FORKED_FROM: {"run": run_id, "checkpoint": cp.id}})
    record, owned = app._create(
        graph, (None,), {"fork": origin}, run_id=new_run_id, queue=None, priority=None,
        concurrency_key=None, claim=execute, stats=stats,
    )
    return app._launch(graph, record, owned) if execute else Run(app, record.run_id)
