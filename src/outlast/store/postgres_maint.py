"""Reading and tidying a PostgreSQL store: listing and counting runs for the CLI and the
dashboard, queue depths, and pruning finished runs in batches.

A mixin of :class:`~outlast.store.postgres.PostgresStore`, kept apart so that file holds the
connections and the writes of running runs; the methods' contracts are in
:class:`~outlast.store.base.Store`, the SQL in :mod:`~outlast.store.postgres_sql`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from .base import Page, QueueStats, RunQuery, RunRecord
from .browse import browse_sql, count_entries_sql, count_sql
from .postgres_sql import Queries

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

T = TypeVar("T")


def fields_of(record: Any) -> dict[str, Any]:
    """A dataclass record's fields by name, as statement parameters."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


class PostgresMaintenance:
    """Listing, counting and pruning runs in one PostgreSQL schema."""

    _q: Queries
    schema: str

    if TYPE_CHECKING:

        def _run(self, op: Callable[[Conn, bool], T]) -> T: ...

    def list_runs(self, page: Page) -> list[RunRecord]:
        where = [f"{c} = %({c})s" for c in ("status", "workflow", "parent_id") if getattr(page, c)]
        sql = self._q.list_runs + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY created_at DESC, run_id LIMIT %(limit)s OFFSET %(offset)s"
        rows = self._run(lambda c, _: c.execute(sql, fields_of(page)).fetchall())
        return [RunRecord(*row) for row in rows]

    def browse_runs(self, query: RunQuery) -> list[RunRecord]:
        sql, params = browse_sql(query, "postgresql", self._q.list_runs)
        rows = self._run(lambda c, _: c.execute(sql, params).fetchall())
        return [RunRecord(*row) for row in rows]

    def count_runs(self, query: RunQuery) -> dict[str, int]:
        table = self._q.list_runs.rsplit(" FROM ", 1)[1]
        sql, params = count_sql(query, "postgresql", table)
        rows = self._run(lambda c, _: c.execute(sql, params).fetchall())
        return {status: int(n) for status, n in rows}

    def count_entries(self, run_ids: Sequence[str]) -> dict[str, int]:
        if not run_ids:
            return {}
        table = self._q.load_journal.split(" FROM ", 1)[1].split()[0]
        sql = count_entries_sql("postgresql", table, len(run_ids))
        rows = self._run(lambda c, _: c.execute(sql, {"ids": list(run_ids)}).fetchall())
        return {run_id: int(n) for run_id, n in rows}

    def queue_stats(self) -> list[QueueStats]:
        rows = self._run(lambda c, _: c.execute(self._q.queue_stats).fetchall())
        return [
            QueueStats(name, pending, running, suspended)
            for name, pending, running, suspended in rows
        ]

    def prune(self, older_than: float, limit: int | None = None) -> int:
        params = {"older_than": older_than, "limit": limit}

        def op(conn: Conn, _: bool) -> int:
            with conn.transaction():
                row = conn.execute(self._q.prune_runs, params).fetchone()
                assert row is not None
                count, hashes = row
                if hashes:
                    # a separate statement after the lock, so its snapshot sees every
                    # reference committed by writers that held the shared lock
                    conn.execute(self._q.xact_lock, {"schema": self.schema, "purpose": "blobs"})
                    conn.execute(self._q.prune_blobs, {"hashes": hashes})
                return int(count)

        return self._run(op)
