"""SQLite statements of fork and retry (see :meth:`Store.fork_run`, :meth:`Store.retry_run`).

Each function runs inside the store's IMMEDIATE transaction, so a process killed half-way
leaves nothing of the fork (or of the retry) behind.
"""

from __future__ import annotations

import sqlite3

from ..errors import NotFailed, RunConflict, RunNotFound

_JOURNAL = (
    "key, position, kind, name, status, output, args_hash, attempts, started_at, ended_at, meta"
)

_FORK_RUN = """INSERT INTO outlast_runs (run_id, workflow, status, input, input_hash, queue,
        priority, concurrency_key, epoch, snapshot, snapshot_position, stats, created_at)
    SELECT :new, workflow, 'pending', input, input_hash, queue, priority, concurrency_key, 0,
        CASE WHEN snapshot_position <= :upto + 1 THEN snapshot END,
        CASE WHEN snapshot_position <= :upto + 1 THEN snapshot_position END,
        :stats, :now
    FROM outlast_runs WHERE run_id = :source"""
_FORK_JOURNAL = f"""INSERT INTO outlast_journal (run_id, {_JOURNAL})
    SELECT :new, {_JOURNAL} FROM outlast_journal
    WHERE run_id = :source AND position <= :upto AND status != 'intent'"""
_FORK_REFS = """INSERT INTO outlast_blob_refs (run_id, hash)
    SELECT :new, hash FROM outlast_blob_refs WHERE run_id = :source
    ON CONFLICT DO NOTHING"""


def fork_run(
    conn: sqlite3.Connection,
    source_id: str,
    new_run_id: str,
    upto: int,
    stats: str | None,
    now: float,
) -> None:
    """Copy the run and its journal prefix (see :meth:`Store.fork_run`)."""
    if conn.execute("SELECT 1 FROM outlast_runs WHERE run_id = ?", (source_id,)).fetchone() is None:
        raise RunNotFound(source_id)
    if conn.execute("SELECT 1 FROM outlast_runs WHERE run_id = ?", (new_run_id,)).fetchone():
        raise RunConflict(
            f"run id {new_run_id!r} already exists; choose another id for the fork",
            run_id=new_run_id,
        )
    params = {"new": new_run_id, "source": source_id, "upto": upto, "stats": stats, "now": now}
    conn.execute(_FORK_RUN, params)
    conn.execute(_FORK_JOURNAL, params)
    conn.execute(_FORK_REFS, params)


def retry_run(conn: sqlite3.Connection, run_id: str, cut: int | None, stats: str | None) -> None:
    """Make the failed run pending, dropping entries from ``cut`` (see :meth:`Store.retry_run`)."""
    row = conn.execute("SELECT status FROM outlast_runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise RunNotFound(run_id)
    if row[0] != "failed":
        raise not_failed(run_id, row[0])
    if cut is not None:
        conn.execute(
            "DELETE FROM outlast_journal WHERE run_id = ? AND position >= ?", (run_id, cut)
        )
    conn.execute(
        "UPDATE outlast_runs SET status = 'pending', output = NULL, error = NULL, reason = NULL, "
        "ended_at = NULL, owner = NULL, lease_expires_at = NULL, wake_at = NULL, "
        "wait_event = NULL, stats = ?, epoch = epoch + 1 WHERE run_id = ?",
        (stats, run_id),
    )


def not_failed(run_id: str, status: str) -> NotFailed:
    """The error for retrying a run that is not failed, with what to do instead."""
    how = {
        "paused": f"a paused run is resolved with `outlast resolve {run_id}`",
        "completed": f"to run part of it again, fork it: `outlast fork {run_id} CHECKPOINT`",
    }.get(
        status,
        "it resumes by itself (a worker, or handle.result()); to start over from "
        f"an earlier point, fork it: `outlast fork {run_id} CHECKPOINT`",
    )
    return NotFailed(
        f"run {run_id!r} is {status}, not failed: only a failed run can be retried; {how}",
        run_id=run_id,
        status=status,
    )
