"""The SQL of :meth:`Store.browse_runs` and :meth:`Store.count_runs`, written once for both
dialects (placeholders and the substring test differ; the rest is the same)."""

from __future__ import annotations

from typing import Any

from .base import RunQuery

#: per dialect: a named placeholder, and "column contains parameter" (case-sensitive)
DIALECTS = {
    "sqlite": (":{}", "instr(run_id, {}) > 0"),
    "postgresql": ("%({})s", "strpos(run_id, {}) > 0"),
}


def where(query: RunQuery, dialect: str, *, keyset: bool) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (or "") and its parameters for ``query``."""
    mark, contains = DIALECTS[dialect]
    parts: list[str] = []
    params: dict[str, Any] = {}
    for column in ("status", "workflow") if keyset else ("workflow",):
        value = getattr(query, column)
        if value is not None:
            parts.append(f"{column} = {mark.format(column)}")
            params[column] = value
    if query.text:
        parts.append(contains.format(mark.format("text")))
        params["text"] = query.text
    if query.since is not None:
        parts.append(f"created_at >= {mark.format('since')}")
        params["since"] = float(query.since)
    if query.until is not None:
        parts.append(f"created_at < {mark.format('until')}")
        params["until"] = float(query.until)
    if keyset and query.after is not None:
        # Written out rather than as a row value so both planners use the created_at index;
        # the first term bounds the scan of the (status or workflow, created_at) indexes too,
        # so a page far down a filtered list starts where it is, not at the top.
        c, r = mark.format("after_at"), mark.format("after_id")
        parts.append(f"created_at <= {c} AND (created_at < {c} OR (created_at = {c} AND run_id < {r}))")
        params["after_at"], params["after_id"] = float(query.after[0]), query.after[1]
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def browse_sql(query: RunQuery, dialect: str, select: str) -> tuple[str, dict[str, Any]]:
    """``select`` (``SELECT columns FROM runs``) filtered, ordered and limited for a page."""
    clause, params = where(query, dialect, keyset=True)
    mark = DIALECTS[dialect][0]
    params["limit"] = max(0, int(query.limit))
    order = " ORDER BY created_at DESC, run_id DESC"
    table = select.rsplit(" FROM ", 1)[1]
    # Pick the page's ids first, then read their rows: a filter the planner serves from the
    # status index sorts its matches, and sorting narrow rows is 4x faster than whole ones.
    inner = f"SELECT run_id FROM {table}{clause}{order} LIMIT {mark.format('limit')}"
    return f"{select} WHERE run_id IN ({inner}){order}", params


def count_sql(query: RunQuery, dialect: str, table: str) -> tuple[str, dict[str, Any]]:
    """Counts per status of the runs in ``table`` matching ``query``."""
    clause, params = where(query, dialect, keyset=False)
    return f"SELECT status, count(*) FROM {table}{clause} GROUP BY status", params


def count_entries_sql(dialect: str, table: str, count: int) -> str:
    """Journal entries per run for ``count`` run ids (positional ``?`` / a PostgreSQL array)."""
    if dialect == "postgresql":
        return f"SELECT run_id, count(*) FROM {table} WHERE run_id = ANY(%(ids)s) GROUP BY run_id"
    marks = ",".join("?" * count)
    return f"SELECT run_id, count(*) FROM {table} WHERE run_id IN ({marks}) GROUP BY run_id"
