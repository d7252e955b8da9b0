"""The run page's panels beside the steps: a graph run's checkpoints, the events the run
received, its snapshot (``ctx.stash`` / ``continue_as_new``) and where it was forked from.

:func:`checkpoints` and :func:`events` give values in the JSON view (:mod:`outlast.jsonview`),
like the steps; :func:`fork_origin` and :func:`snapshot` give decoded values, viewed with the
rest of the run by :func:`outlast.ui.data.run_detail`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import jsonview, serde
from ..errors import OutlastError
from ..graph import NODE_KIND
from ..store.base import Entry, RunRecord
from .steps import decode

if TYPE_CHECKING:
    from ..app import App

#: events received listed on the run page (the newest last; the steps list has them all)
EVENTS_SHOWN = 100


def fork_origin(record: RunRecord, run_input: Any) -> dict[str, Any] | None:
    """``{"run", "checkpoint"}`` of the run this one was forked from, or None.

    A graph fork names its origin in its input (``fork={"run", "checkpoint", "update"}``, see
    :mod:`outlast.timetravel`).
    """
    # FORKED_FROM: forks of any run (the evolution issue) record ``forked_from`` on the run;
    # prefer it here once it exists, then fall back to a graph fork's input below.
    forked_from = getattr(record, "forked_from", None)
    if isinstance(forked_from, str) and forked_from:
        return {"run": forked_from, "checkpoint": getattr(record, "forked_at", None)}
    if not (isinstance(run_input, list) and len(run_input) == 2 and isinstance(run_input[1], dict)):
        return None
    fork = run_input[1].get("fork")
    if isinstance(fork, dict) and isinstance(fork.get("run"), str):
        return {
            "run": fork["run"],
            "checkpoint": str(fork.get("checkpoint")),
            "update": fork.get("update") or {},
        }
    return None


def checkpoints(
    app: App, record: RunRecord, journal: list[Entry], forked: bool
) -> list[dict[str, Any]] | None:
    """A graph run's checkpoints (a fork's inherited ones first), or None for other runs."""
    if not forked and not any(e.kind == NODE_KIND for e in journal):
        return None
    from ..timetravel import checkpoints as listed

    try:
        found = listed(app, record.run_id)
    except OutlastError as exc:  # an origin pruned since, or an unreadable input
        return [{"id": None, "error": str(exc)}]
    return [
        {
            "id": c.id,
            "run_id": c.run_id,
            "inherited": c.run_id != record.run_id,
            "node": c.node,
            "at": c.at,
            "summary": c.summary,
            "next": c.next,
        }
        for c in found
    ]


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
