"""What the dashboard shows: filters parsed from a query string, pages of runs (keyset cursor),
status counts, and a run with its steps decoded (:mod:`outlast.ui.steps`) and its panels
(:mod:`outlast.ui.panels`). A run comes out in the JSON view (:mod:`outlast.jsonview`), which
the API writes as it is and the pages pretty-print. No HTTP here."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import jsonview
from ..run import RunInfo
from ..store.base import STATUSES, Page, RunQuery, RunRecord, Store
from . import panels
from .steps import StepCache, decode, error_doc, last_execution, mark

if TYPE_CHECKING:
    from ..app import App

#: steps per page of the run page and of ``/api/runs/{id}``
STEP_PAGE = 200
MAX_LIMIT = 200
#: longest decoded payload shown in full on a page (the API always gives it whole)
SHOW_MAX = 20_000


class BadFilter(ValueError):
    """A query-string value the dashboard cannot use (answered 400, naming the field)."""


@dataclass(frozen=True)
class Filters:
    """The runs filters, as they appear in the URL (``/runs?status=failed&workflow=x``)."""

    status: str | None = None
    workflow: str | None = None
    q: str | None = None
    since: str | None = None
    until: str | None = None
    limit: int = 50
    cursor: str | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        """Validate query parameters; :class:`BadFilter` names the one that is wrong."""
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise BadFilter(f"status must be one of {', '.join(STATUSES)}, got {status!r:.60}")
        text = {k: (params.get(k) or None) for k in ("workflow", "q", "since", "until", "cursor")}
        for key, value in text.items():
            if value is not None and len(value) > 200:
                raise BadFilter(f"{key} is longer than 200 characters")
        raw_limit = params.get("limit") or "50"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise BadFilter(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {raw_limit!r:.20}")
        found = cls(status=status, limit=int(raw_limit), **text)
        found.query()  # refuse a bad time or cursor now, with its name
        return found

    def query(self) -> RunQuery:
        """The store query these filters mean."""
        return RunQuery(
            status=self.status, workflow=self.workflow, text=self.q,
            since=_when(self.since, "since"), until=_when(self.until, "until"),
            after=decode_cursor(self.cursor) if self.cursor else None, limit=self.limit,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The non-empty filters as query parameters, with ``changes`` applied."""
        values = {"status": self.status, "workflow": self.workflow, "q": self.q,
                  "since": self.since, "until": self.until,
                  "limit": None if self.limit == 50 else str(self.limit), "cursor": self.cursor}
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "")}


def _when(text: str | None, name: str) -> float | None:
    """Seconds since the epoch, an ISO date or an ISO date-time (local time when naive)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BadFilter(f"{name} must be a date (2026-01-31), a date-time or epoch seconds, got {text!r:.60}") from None


def encode_cursor(record: RunRecord) -> str:
    """The keyset cursor after ``record`` (opaque to callers: base64 of its sort key)."""
    raw = json.dumps([record.created_at, record.run_id], ensure_ascii=False).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, run_id = json.loads(raw.decode("utf-8", "surrogatepass"))
        if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(run_id, str):
            raise ValueError
        return float(at), run_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadFilter("cursor is not one this dashboard gave out; start from the first page") from None


# --- runs ----------------------------------------------------------------------------------------


def run_summary(record: RunRecord, steps: int | None = None) -> dict[str, Any]:
    """A run as one row of the runs list (``steps``: its journal entries, when counted): the
    fields every JSON view of a run has (:func:`outlast.jsonview.run_fields`) and the list's."""
    out = jsonview.run_fields(RunInfo.from_record(record))
    stats = out["stats"]
    end = record.ended_at or (time.time() if record.status == "running" else None)
    out.update({
        "duration": None if record.started_at is None or end is None else max(0.0, end - record.started_at),
        "steps": steps, "tokens": stats.get("tokens"), "cost": stats.get("cost"),
        "wait_event": record.wait_event, "error": error_excerpt(record),
    })
    return out


def error_excerpt(record: RunRecord) -> str | None:
    """``Type: message`` of a failed run's error, at most 300 characters."""
    if record.status != "failed" or record.error is None:
        return None
    err = error_doc(record.error)
    text = f"{err['type']}: {err['message']}"
    return text if len(text) <= 300 else text[:299] + "\u2026"


def list_runs(store: Store, filters: Filters) -> dict[str, Any]:
    """``GET /api/runs``: a page of runs, the cursor of the next page, and counts per status."""
    query = filters.query()
    records = store.browse_runs(query)
    counts = store.count_runs(query)
    steps = store.count_entries([r.run_id for r in records])
    return {
        "runs": [run_summary(r, steps.get(r.run_id, 0)) for r in records],
        "next": encode_cursor(records[-1]) if len(records) == query.limit else None,
        "counts": {s: counts.get(s, 0) for s in STATUSES},
    }


# --- one run -------------------------------------------------------------------------------------


def run_detail(
    app: App, run_id: str, *, offset: int = 0, limit: int = STEP_PAGE,
    kind: str | None = None, status: str | None = None, cache: StepCache | None = None,
) -> dict[str, Any] | None:
    """``GET /api/runs/{id}``: the run, its result or error, and a page of its steps decoded
    (only those of ``kind`` and ``status`` when given: ``steps_matching`` counts them), with
    the panels of :mod:`outlast.ui.panels`. Already in the JSON view, ready to write out."""
    store = app.store
    record = store.get_run(run_id)
    if record is None:
        return None
    journal = store.load_journal(run_id)
    out = run_summary(record, len(journal))
    out["epoch"] = record.epoch
    out["steps_total"] = len(journal)
    out["offset"] = offset
    run_input = decode(record.input, store, "input")
    out["input"] = run_input
    if record.status == "completed":
        out["result"] = decode(record.output, store, "result")
    if record.status == "failed" and record.error is not None:
        out["error_detail"] = error_doc(record.error)
    t0 = min([record.started_at or record.created_at, *(e.started_at for e in journal if e.started_at)])
    ends = [e.ended_at or e.started_at for e in journal] + [record.ended_at or 0.0]
    out["t0"] = t0
    out["t1"] = max([t0, *ends]) if record.ended_at or record.status != "running" else max([time.time(), *ends])
    out["kinds"] = sorted({e.kind for e in journal})
    out["children"] = _children(store, run_id)
    out["fork_origin"] = panels.fork_origin(out["forked_from"], out["forked_at"], run_input)
    out["snapshot"] = panels.snapshot(record)
    # the run's own fields, viewed once; the steps and panels below come viewed
    viewed: dict[str, Any] = jsonview.to_json(out)
    last = last_execution(record, journal)
    viewed["last_execution"] = last
    viewed["replayed_steps"] = sum(1 for e in journal if mark(e, last) == "replayed")
    viewed["events"] = panels.events(app, journal)
    chosen = [e for e in journal if (kind is None or e.kind == kind) and (status is None or e.status == status)]
    viewed["steps_matching"] = len(chosen)
    page = chosen[offset : offset + limit]
    cps = panels.checkpoints(app, record, journal, {e.position for e in page},
                             first=offset == 0 and kind is None and status is None)
    viewed["graph"], viewed["checkpoints_total"], viewed["checkpoints"] = cps["graph"], cps["total"], cps["list"]
    cache = StepCache(entries=0) if cache is None else cache
    steps = []
    for entry in page:
        step = cache.get(run_id, entry, store)
        step["mark"] = mark(entry, last)
        steps.append(step)
    viewed["steps"] = steps
    return viewed


def _children(store: Store, run_id: str) -> list[str]:
    return [r.run_id for r in store.list_runs(Page(parent_id=run_id, limit=100))]
