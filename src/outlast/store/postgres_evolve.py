"""PostgreSQL statements of fork and retry (see :meth:`Store.fork_run`, :meth:`Store.retry_run`).

Each operation is one transaction: a connection cut (or a process killed) half-way leaves
nothing of it behind. A fork references the source's blobs, so it holds the blob lock
``(schema, "blobs")`` shared, as every writer that adds blob references does (see
:mod:`outlast.store.postgres`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from ..errors import RunConflict, RunNotFound
from .base import RunRecord
from .postgres_sql import NOW, RUN_COLUMNS, quote_ident
from .sqlite_evolve import not_failed

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")


_JOURNAL = (
    "key, position, kind, name, status, output, args_hash, attempts, started_at, ended_at, meta"
)


class EvolveQueries:
    """The statements, with the schema name filled in."""

    fork_run = f"""INSERT INTO {{s}}.runs (run_id, workflow, status, input, input_hash, queue,
            priority, concurrency_key, epoch, snapshot, snapshot_position, stats, created_at)
        SELECT %(new)s, workflow, 'pending', input, input_hash, queue, priority,
            concurrency_key, 0,
            CASE WHEN snapshot_position <= %(upto)s + 1 THEN snapshot END,
            CASE WHEN snapshot_position <= %(upto)s + 1 THEN snapshot_position END,
            %(stats)s, {NOW}
        FROM {{s}}.runs WHERE run_id = %(source)s
        ON CONFLICT (run_id) DO NOTHING
        RETURNING {RUN_COLUMNS}"""
    fork_journal = f"""INSERT INTO {{s}}.journal (run_id, {_JOURNAL})
        SELECT %(new)s, {_JOURNAL} FROM {{s}}.journal
        WHERE run_id = %(source)s AND position <= %(upto)s AND status <> 'intent'"""
    fork_refs = """INSERT INTO {s}.blob_refs (run_id, hash)
        SELECT %(new)s, hash FROM {s}.blob_refs WHERE run_id = %(source)s
        ON CONFLICT DO NOTHING"""
    exists = "SELECT 1 FROM {s}.runs WHERE run_id = %(run_id)s"
    get_run = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs WHERE run_id = %(run_id)s"
    lock_status = "SELECT status FROM {s}.runs WHERE run_id = %(run_id)s FOR UPDATE"
    cut_journal = "DELETE FROM {s}.journal WHERE run_id = %(run_id)s AND position >= %(cut)s"
    retry = f"""UPDATE {{s}}.runs SET status = 'pending', output = NULL, error = NULL,
            reason = NULL, ended_at = NULL, owner = NULL, lease_expires_at = NULL,
            wake_at = NULL, wait_event = NULL, stats = %(stats)s, epoch = epoch + 1
        WHERE run_id = %(run_id)s
        RETURNING {RUN_COLUMNS}"""

    def __init__(self, schema: str) -> None:
        quoted = quote_ident(schema)
        self.prefix = quoted + "."
        for name, value in vars(EvolveQueries).items():
            if isinstance(value, str) and not name.startswith("_"):
                setattr(self, name, value.replace("{s}", quoted))


def fork_run(
    conn: Conn,
    q: EvolveQueries,
    blob_lock: tuple[str, dict[str, Any]],
    source_id: str,
    new_run_id: str,
    upto: int,
    stats: str | None,
    maybe_applied: bool,
    after: Callable[[Callable[..., Any], Callable[[str], str], str, str], None] | None = None,
) -> RunRecord:
    """Copy the run and its journal prefix, in the caller's transaction; then ``after``
    (an encrypting store's rebind, see sealed.py) with SQL written with ``?``."""
    params = {"new": new_run_id, "source": source_id, "upto": upto, "stats": stats}
    conn.execute(*blob_lock)
    row = conn.execute(q.fork_run, params).fetchone()
    if row is None:
        if conn.execute(q.exists, {"run_id": source_id}).fetchone() is None:
            raise RunNotFound(source_id)
        stored = conn.execute(q.get_run, {"run_id": new_run_id}).fetchone()
        if maybe_applied and stored is not None and RunRecord(*stored).stats == stats:
            return RunRecord(*stored)  # our earlier attempt committed before its answer was lost
        raise RunConflict(
            f"run id {new_run_id!r} already exists; choose another id for the fork",
            run_id=new_run_id,
        )
    conn.execute(q.fork_journal, params)
    conn.execute(q.fork_refs, params)
    if after is not None:
        def execute(sql: str, args: tuple[Any, ...] = ()) -> Any:
            return conn.execute(sql.replace("?", "%s"), args)

        after(execute, q.prefix.__add__, source_id, new_run_id)
        row = conn.execute(q.get_run, {"run_id": new_run_id}).fetchone()
        assert row is not None
    return RunRecord(*row)


def retry_run(
    conn: Conn,
    q: EvolveQueries,
    run_id: str,
    cut: int | None,
    stats: str | None,
    maybe_applied: bool,
) -> RunRecord:
    """Make the failed run pending, in the caller's transaction."""
    row = conn.execute(q.lock_status, {"run_id": run_id}).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    if row[0] != "failed":
        stored = conn.execute(q.get_run, {"run_id": run_id}).fetchone()
        if maybe_applied and row[0] == "pending" and stored is not None:
            return RunRecord(*stored)  # our earlier attempt
        raise not_failed(run_id, row[0])
    if cut is not None:
        conn.execute(q.cut_journal, {"run_id": run_id, "cut": cut})
    retried = conn.execute(q.retry, {"run_id": run_id, "stats": stats}).fetchone()
    assert retried is not None
    return RunRecord(*retried)


class PostgresEvolution:
    """``fork_run`` and ``retry_run`` of :class:`~outlast.store.postgres.PostgresStore` (a
    mixin): each one transaction, idle workers woken."""

    schema: str
    _q: Any
    _eq: EvolveQueries
    after_fork: Callable[..., None] | None

    if TYPE_CHECKING:

        def _run(self, op: Callable[[Conn, bool], T]) -> T: ...

        def _notify(self, conn: Conn) -> None: ...

    def fork_run(self, source_id: str, new_run_id: str, upto: int, stats: str | None) -> RunRecord:
        lock = (self._q.xact_lock_shared, {"schema": self.schema, "purpose": "blobs"})

        def op(conn: Conn, maybe_applied: bool) -> RunRecord:
            with conn.transaction():
                forked = fork_run(
                    conn, self._eq, lock, source_id, new_run_id, upto, stats, maybe_applied,
                    self.after_fork,
                )
                self._notify(conn)
            return forked

        return self._run(op)

    def retry_run(self, run_id: str, cut: int | None, stats: str | None) -> RunRecord:
        def op(conn: Conn, maybe_applied: bool) -> RunRecord:
            with conn.transaction():
                retried = retry_run(conn, self._eq, run_id, cut, stats, maybe_applied)
                self._notify(conn)
            return retried

        return self._run(op)
