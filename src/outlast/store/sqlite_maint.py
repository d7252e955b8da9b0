"""Reading and tidying a SQLite store: listing and counting runs for the CLI and the
dashboard, queue depths, and pruning finished runs.

A mixin of :class:`~outlast.store.sqlite.SQLiteStore`, kept apart so that file holds the
connection and the writes of running runs; the methods' contracts are in
:class:`~outlast.store.base.Store`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from .base import Page, QueueStats, RunQuery, RunRecord
from .browse import browse_sql, count_entries_sql, count_sql
from .sqlite_schema import FINISHED, LIVE, RUN_COLUMNS

SELECT_RUN = f"SELECT {', '.join(RUN_COLUMNS)} FROM outlast_runs"
_SELECT_RUN = SELECT_RUN


class SQLiteMaintenance:
    """Listing, counting and pruning runs in one SQLite file."""

    _lock: threading.RLock
    _conn: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]

    def list_runs(self, page: Page) -> list[RunRecord]:
        where, params = [], []
        for column in ("status", "workflow", "parent_id"):
            value = getattr(page, column)
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = _SELECT_RUN + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, run_id LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._conn.execute(sql, (*params, page.limit, page.offset)).fetchall()
        return [RunRecord(*row) for row in rows]

    def browse_runs(self, query: RunQuery) -> list[RunRecord]:
        sql, params = browse_sql(query, "sqlite", _SELECT_RUN)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [RunRecord(*row) for row in rows]

    def count_runs(self, query: RunQuery) -> dict[str, int]:
        sql, params = count_sql(query, "sqlite", "outlast_runs")
        with self._lock:
            return {status: n for status, n in self._conn.execute(sql, params).fetchall()}

    def count_entries(self, run_ids: Sequence[str]) -> dict[str, int]:
        ids = list(run_ids)[:500]  # SQLite's parameter limit; pages show far fewer
        if not ids:
            return {}
        with self._lock:
            rows = self._conn.execute(count_entries_sql("sqlite", "outlast_journal", len(ids)), ids)
            return {run_id: n for run_id, n in rows.fetchall()}

    def queue_stats(self) -> list[QueueStats]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT queue, sum(status = 'pending'), sum(status = 'running'), "
                f"sum(status = 'suspended') FROM outlast_runs WHERE {LIVE} "
                "GROUP BY queue ORDER BY queue"
            ).fetchall()
        return [QueueStats(q, int(p or 0), int(r or 0), int(s or 0)) for q, p, r, s in rows]

    def prune(self, older_than: float, limit: int | None = None) -> int:
        # the oldest-ended first, from the partial index outlast_runs_ended; a live parent
        # has not necessarily collected its finished child's result yet
        doomed = (
            f"SELECT run_id FROM outlast_runs AS r WHERE {FINISHED} AND ended_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM outlast_runs AS p WHERE p.run_id = r.parent_id "
            "AND p.status NOT IN ('completed', 'failed', 'cancelled')) "
            "ORDER BY ended_at LIMIT ?"
        )
        with self._tx() as conn:
            ids = [row[0] for row in conn.execute(doomed, (older_than, limit or -1))]
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                hashes = [row[0] for row in conn.execute(
                    f"SELECT DISTINCT hash FROM outlast_blob_refs WHERE run_id IN ({marks})", chunk
                )]
                for table in ("outlast_journal", "outlast_events", "outlast_blob_refs",
                              "outlast_runs"):
                    conn.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", chunk)
                conn.execute(
                    "DELETE FROM outlast_blobs WHERE hash IN (SELECT value FROM json_each(?)) "
                    "AND NOT EXISTS (SELECT 1 FROM outlast_blob_refs AS r "
                    "WHERE r.hash = outlast_blobs.hash)",
                    (json.dumps(hashes),),
                )
        return len(ids)
