"""The run page's panels beside the steps: the run's checkpoints, the events the run
received, its snapshot (``ctx.stash`` / ``continue_as_new``) and where it was forked from.

:func:`checkpoints` and :func:`events` give values in the JSON view (:mod:`outlast.jsonview`),
like the steps; :func:`fork_origin` and :func:`snapshot` give decoded values, viewed with the
rest of the run by :func:`outlast.ui.data.run_detail`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import evolution, jsonview, serde
from ..errors import OutlastError
from ..store.base import Entry, RunRecord
from .steps import decode

if TYPE_CHECKING:
    from ..app import App

#: events received listed on the run page (the newest last; the steps list has them all)
EVENTS_SHOWN = 100


def fork_origin(forked_from: str | None, forked_at: str | None, run_input: Any) -> dict[str, Any] | None:
    """``{"run", "checkpoint"}`` of the run this one was forked from, or None.

    A fork of any run (``app.fork``) is known by its ``forked_from`` and ``forked_at``
    (:func:`outlast.run.shown_stats`); a graph fork also names its origin in its input
    (``fork={"run", "checkpoint", "update"}``, see :mod:`outlast.timetravel`), with the edit
    (``"update"``); graph forks recorded before 0.2.0 only there.
    """
    fork = None
    if isinstance(run_input, list) and len(run_input) == 2 and isinstance(run_input[1], dict):
        fork = run_input[1].get("fork")
    # (the same origin as the stats', or none there: a plain run's own argument named fork
    # is no origin)
    if isinstance(fork, dict) and isinstance(fork.get("run"), str) and forked_from in (None, fork["run"]):
        return {
            "run": fork["run"],
            "checkpoint": str(fork.get("checkpoint")),
            "update": fork.get("update") or {},
        }
    if forked_from is not None:
        return {"run": forked_from, "checkpoint": forked_at}
    return None


def checkpoints(
    app: App, record: RunRecord, journal: list[Entry], shown: set[int], first: bool
) -> dict[str, Any]:
    """The run's checkpoints (those of :meth:`outlast.App.checkpoints`), as ``{"graph", "total",
    "list"}``: a graph run's all (its nodes, a fork's inherited ones first); any other run's,
    one after each journaled call, only those after the steps at the positions in ``shown``
    (the steps page), and the start (0) on the ``first`` page. A 10,000-step run lists a page."""
    graph = evolution.is_graph_run(app, record, journal)
    try:
        found = evolution.checkpoints_of(app, record, journal)  # app.checkpoints, journal read
    except OutlastError as exc:  # an origin pruned since, a graph this App does not know
        return {"graph": graph, "total": 0, "list": [{"id": None, "error": str(exc)}]}
    total = len(found)
    if not graph:
        found = [c for c in found if c.position in shown or (first and c.kind == "start")]
    listed = [
        {
            "id": c.id,
            "run_id": c.run_id,
            "inherited": c.run_id != record.run_id,
            "node": c.node,
            "kind": c.kind,
            "position": c.position,
            "at": c.at,
            "summary": c.summary,
            "next": c.next,
        }
        for c in found
    ]
    return {"graph": graph, "total": total, "list": jsonview.to_json(listed)}


def events(app: App, journal: list[Entry]) -> list[dict[str, Any]]:
    """The events the run received (its ``event`` entries), with their payloads."""
    received = [e for e in journal if e.kind == "event" and e.status == "completed"][-EVENTS_SHOWN:]
    return [
        {
            "name": e.name,
            "key": e.key,
            "position": e.position,
            "at": e.ended_at or e.started_at,
            "payload": jsonview.to_json(decode(e.output, app.store, f"event {e.key}")),
        }
        for e in received
    ]


def snapshot(record: RunRecord) -> dict[str, Any] | None:
    """The run's restart point: the stashed value, the arguments of a continued run."""
    if record.snapshot is None:
        return None
    try:
        doc = serde.loads(record.snapshot, what=f"snapshot of run {record.run_id!r}")
    except OutlastError as exc:
        return {"unreadable": str(exc)}
    if not isinstance(doc, dict):
        return {"unreadable": "not a snapshot document"}
    stash = doc.get("stash")
    out: dict[str, Any] = {
        "position": record.snapshot_position,
        "generation": doc.get("generation") or 1,
    }
    if isinstance(stash, dict):
        out["stash"] = stash.get("value")
    if doc.get("continued") is not None:
        out["continued"] = doc["continued"]
    return out
