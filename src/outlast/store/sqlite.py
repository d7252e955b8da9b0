"""The embedded SQLite store (the default).

One connection per store, guarded by a lock: SQLite serializes writers anyway, and one
connection keeps the hot path (a journal write) to a single prepared statement with no
thread-local lookups. Several processes may share one file: WAL mode lets readers work
during a write, and ``busy_timeout`` makes writers queue instead of failing.

Durability: ``synchronous=normal`` (default) survives any process crash; a power loss may
drop the last few commits. ``?synchronous=full`` survives power loss at a higher commit cost.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import (
    ConfigurationError,
    LeaseLost,
    RunNotFound,
    StoreError,
)
from . import migrations, refusals, sqlite_evolve, sqlite_faults, sqlite_open, sqlite_queues
from .base import Entry, NewRun, QueueSpec, RunRecord, Store
from .blobs import BlobCodec
from .faults import guard_public
from .sqlite_maint import SELECT_RUN, SQLiteMaintenance
from .sqlite_saver import SQLiteCheckpoints
from .sqlite_schema import LIVE, MIGRATIONS, RUN_COLUMNS

_ENTRY_COLUMNS = (
    "key, position, kind, name, status, output, args_hash, attempts, started_at, ended_at, meta"
)
_RECORD_SQL = f"""
INSERT INTO outlast_journal (run_id, {_ENTRY_COLUMNS}, epoch)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM outlast_runs WHERE run_id = ? AND epoch = ? AND status = 'running')
ON CONFLICT (run_id, key) DO UPDATE SET
  position = excluded.position, kind = excluded.kind, name = excluded.name,
  status = excluded.status, output = excluded.output, args_hash = excluded.args_hash,
  attempts = excluded.attempts, started_at = excluded.started_at,
  ended_at = excluded.ended_at, meta = excluded.meta, epoch = excluded.epoch
WHERE outlast_journal.status = 'intent'
"""
_SELECT_RUN = SELECT_RUN


@guard_public
class SQLiteStore(SQLiteCheckpoints, SQLiteMaintenance, Store):
    """Runs and journals in one SQLite file (or in memory, for one process)."""

    dialect = "sqlite"

    def _classify(self, exc: BaseException) -> StoreError | None:
        return sqlite_faults.classify(self, exc)

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        #: the blob protocol (addresses, compression, sealing): see blobs.py
        self.blobs = BlobCodec()
        #: set by an encrypting wrapper: rebinds a fork's copied payloads (see sealed.py)
        self.after_fork: Callable[..., None] | None = None
        self.url = url
        path, options = sqlite_open.parse_url(url)
        sync = options.get("synchronous", "normal").lower()
        if sync not in ("normal", "full", "off", "extra"):
            raise ConfigurationError(
                f"bad synchronous={sync!r} in {url!r}: use normal (survives process crashes) "
                "or full (survives power loss)"
            )
        try:
            busy_ms = int(options.get("busy_timeout", "30000"))
        except ValueError:
            raise ConfigurationError(f"busy_timeout must be milliseconds in {url!r}") from None
        page_size = sqlite_open.page_size(options.get("page_size"), url)
        self.path = path
        self._lock = threading.RLock()
        self._closed = False
        # A file this process cannot write is read the same way: what is stored stays readable.
        self.readonly = readonly or not sqlite_open.writable(path)
        if self.readonly:
            self._conn, version = sqlite_open.connect_readonly(path, busy_ms)
            newest = MIGRATIONS[-1].version
            if version > newest:
                self._conn.close()
                raise ConfigurationError(
                    f"the database at {url} has schema version {version}, newer than this "
                    f"outlast supports ({newest}); upgrade outlast"
                )
            return
        if path != ":memory:":
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ConfigurationError(
                    f"cannot open {url!r}: folder {parent!r} does not exist; create it first"
                )
        try:
            self._conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000
            )
            self._conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if path != ":memory:":
                # a new file only (SQLite ignores it once the file has pages): see PAGE_SIZE
                self._conn.execute(f"PRAGMA page_size = {page_size}")
                sqlite_open.enable_wal(self._conn, busy_ms)
            self._conn.execute(f"PRAGMA synchronous = {sync}")
            self._conn.execute("PRAGMA foreign_keys = OFF")
        except sqlite3.DatabaseError as exc:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()  # never left to the garbage collector
            if sqlite_open.is_damage(exc):
                raise sqlite_open.damaged(path, exc) from None
            raise ConfigurationError(f"cannot open SQLite database {url!r}: {exc}") from exc
        # A store dropped unclosed (its App was collected while the store was still in use,
        # or it was opened directly) closes its connection when collected or at exit; the
        # App's own finalizer is what warns.
        weakref.finalize(self, self._conn.close)
        self._migrate()

    # -- plumbing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: takes the write lock up front so read-then-write is safe
        across processes (a deferred one could fail with SQLITE_BUSY on upgrade)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    @contextlib.contextmanager
    def _lock_only(self) -> Iterator[sqlite3.Connection]:
        """The connection for one autocommit statement (no explicit transaction)."""
        with self._lock:
            yield self._conn

    def _put_blobs(self, conn: sqlite3.Connection, run_id: str, blobs: Mapping[str, bytes]) -> None:
        """Store blobs once each and reference them from the run (inside a transaction)."""
        rows = self.blobs.rows(blobs)
        conn.executemany(
            "INSERT INTO outlast_blobs (hash, data) VALUES (?, ?) ON CONFLICT DO NOTHING", rows
        )
        conn.executemany(
            "INSERT INTO outlast_blob_refs (run_id, hash) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(run_id, address) for address, _ in rows],
        )

    def _migrate(self) -> None:
        store = self

        class _Target:
            def current_version(self) -> int:
                store._conn.execute(
                    "CREATE TABLE IF NOT EXISTS outlast_schema "
                    "(version INTEGER NOT NULL, description TEXT, applied_at REAL)"
                )
                row = store._conn.execute("SELECT max(version) FROM outlast_schema").fetchone()
                return int(row[0] or 0)

            def execute(self, sql: str) -> None:
                store._conn.execute(sql)

            def set_version(self, version: int, description: str) -> None:
                store._conn.execute(
                    "INSERT INTO outlast_schema VALUES (?, ?, ?)", (version, description, time.time())
                )

        try:
            migrations.apply(_Target(), MIGRATIONS, self._tx, self.url)
        except sqlite3.DatabaseError as exc:
            if sqlite_open.is_damage(exc):
                raise sqlite_open.damaged(self.path, exc) from None
            raise ConfigurationError(
                f"cannot use {self.url!r} as an outlast database: {exc}"
            ) from exc

    def _one(self, run_id: str) -> RunRecord | None:
        row = self._conn.execute(f"{_SELECT_RUN} WHERE run_id = ?", (run_id,)).fetchone()
        return RunRecord(*row) if row else None

    def _fence_state(self, run_id: str) -> refusals.FenceState:
        run = self._one(run_id)
        return None if run is None else (run.epoch, run.status)

    def _why_refused(self, run_id: str, epoch: int) -> LeaseLost:
        return refusals.lease_lost(run_id, epoch, self._fence_state(run_id))

    def _fence(self, conn: sqlite3.Connection, run_id: str, epoch: int) -> None:
        row = conn.execute(
            "SELECT 1 FROM outlast_runs WHERE run_id = ? AND epoch = ? AND status = 'running'",
            (run_id, epoch),
        ).fetchone()
        if row is None:
            raise self._why_refused(run_id, epoch)

    # -- runs -----------------------------------------------------------------------------------

    def create_run(
        self,
        run: NewRun,
        *,
        owner: str | None = None,
        lease: float = 0.0,
        first: Entry | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> tuple[RunRecord, bool]:
        if first is not None and owner is None:
            raise ValueError("create_run(first=...) records a journal entry: it needs an owner")
        if self.readonly:
            # INSERT ... ON CONFLICT DO NOTHING would still need the write lock: look first.
            stored = self.get_run(run.run_id)
            if stored is None:
                raise ConfigurationError(
                    f"cannot record run {run.run_id!r}: the database at {self.path} is read-only "
                    "here (open it where it is writable); reading stored runs works"
                )
            return stored, False
        now = time.time()
        claimed = owner is not None
        record = RunRecord(
            run.run_id, run.workflow, "running" if claimed else "pending", run.input,
            run.input_hash, None, None, run.queue, run.priority, run.concurrency_key,
            run.parent_id, owner, 1 if claimed else 0, now + lease if claimed else None,
            None, None, None, None, None, run.stats, 0, now, now if claimed else None, None, None,
        )
        # One statement in autocommit; with a first entry, one transaction (one commit).
        with self._tx() if first is not None else self._lock_only() as conn:
            cur = conn.execute(
                "INSERT INTO outlast_runs (run_id, workflow, status, input, input_hash, queue, "
                "priority, concurrency_key, parent_id, owner, epoch, lease_expires_at, "
                "created_at, started_at, stats) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (run_id) DO NOTHING",
                (
                    record.run_id, record.workflow, record.status, record.input,
                    record.input_hash, record.queue, record.priority, record.concurrency_key,
                    record.parent_id, record.owner, record.epoch, record.lease_expires_at,
                    record.created_at, record.started_at, record.stats,
                ),
            )
            if cur.rowcount == 1:
                if first is not None:
                    if blobs:
                        self._put_blobs(conn, run.run_id, blobs)
                    conn.execute(_RECORD_SQL, (run.run_id, *_entry_row(first), 1, run.run_id, 1))
                # Built here rather than read back: every other column starts empty.
                return record, True
            stored = self._one(run.run_id)
        assert stored is not None
        return stored, False

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._one(run_id)

    def claim(
        self,
        owner: str,
        lease: float,
        *,
        run_id: str | None = None,
        steal_from: str | None = None,
        workflows: Iterable[str] | None = None,
        queues: Mapping[str, QueueSpec] | None = None,
        limit: int = 1,
        in_queues: Iterable[str] | None = None,
        grace: float = 0.0,
    ) -> list[RunRecord]:
        now = time.time()
        runnable = (
            "(status = 'pending' OR (status = 'running' AND lease_expires_at < :expired)"
            " OR (status = 'suspended' AND wake_at <= :now)"
        )
        params: dict[str, Any] = {
            "now": now, "owner": owner, "lease": now + lease, "expired": now - max(0.0, grace),
        }
        if steal_from is not None:
            runnable += " OR (status = 'running' AND owner = :steal)"
            params["steal"] = steal_from
        runnable += ")"
        where = [runnable, LIVE]  # LIVE: the partial index outlast_runs_live
        if run_id is not None:
            where.append("run_id = :run_id")
            params["run_id"] = run_id
        if workflows is not None:
            names = list(workflows)
            marks = ", ".join(f":w{i}" for i in range(len(names)))
            where.append(f"workflow IN ({marks})" if names else "0")
            params.update({f"w{i}": name for i, name in enumerate(names)})
        if in_queues is not None:
            only = list(in_queues)
            marks = ", ".join(f":q{i}" for i in range(len(only)))
            where.append(f"queue IN ({marks})" if only else "0")
            params.update({f"q{i}": name for i, name in enumerate(only)})
        with self._tx() as conn:
            if queues:
                ids = sqlite_queues.pick(conn, " AND ".join(where), params, queues, limit)
            else:
                ids = [row[0] for row in conn.execute(
                    f"SELECT run_id FROM outlast_runs WHERE {' AND '.join(where)} "
                    f"ORDER BY priority DESC, created_at, run_id LIMIT {max(limit, 1)}",
                    params,
                )]
            claimed = [
                RunRecord(*conn.execute(
                    "UPDATE outlast_runs SET "
                    "recoveries = recoveries + (CASE WHEN status = 'running' THEN 1 ELSE 0 END), "
                    "status = 'running', owner = :owner, epoch = epoch + 1, "
                    "lease_expires_at = :lease, wake_at = NULL, wait_event = NULL, "
                    "started_at = coalesce(started_at, :now) WHERE run_id = :id "
                    f"RETURNING {', '.join(RUN_COLUMNS)}",
                    {**params, "id": run_id},
                ).fetchone())
                for run_id in ids
            ]
            if queues:
                sqlite_queues.started(conn, queues, [r.queue for r in claimed], now)
        return claimed

    def heartbeat(self, owner: str, run_ids: Sequence[str], lease: float) -> set[str]:
        if not run_ids:
            return set()
        marks = ", ".join("?" * len(run_ids))
        with self._lock:
            rows = self._conn.execute(
                f"UPDATE outlast_runs SET lease_expires_at = ? WHERE owner = ? "
                f"AND status = 'running' AND run_id IN ({marks}) RETURNING run_id",
                (time.time() + lease, owner, *run_ids),
            ).fetchall()
        return set(run_ids) - {r[0] for r in rows}

    def finish(
        self,
        run_id: str,
        epoch: int,
        status: str,
        *,
        output: bytes | None = None,
        error: bytes | None = None,
        stats: str | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> None:
        refusals.check_finish_status(status)
        with self._tx() if blobs else self._lock_only() as conn:
            if blobs:
                self._put_blobs(conn, run_id, blobs)
            cur = conn.execute(
                "UPDATE outlast_runs SET status = ?, output = ?, error = ?, "
                "stats = coalesce(?, stats), owner = NULL, lease_expires_at = NULL, "
                "ended_at = ? WHERE run_id = ? AND epoch = ? AND status = 'running'",
                (status, output, error, stats, time.time(), run_id, epoch),
            )
            if cur.rowcount != 1:
                raise self._why_refused(run_id, epoch)

    def release(
        self,
        run_id: str,
        epoch: int,
        status: str,
        *,
        wake_at: float | None = None,
        wait_event: str | None = None,
        reason: str | None = None,
        stats: str | None = None,
    ) -> None:
        refusals.check_release_status(status)
        with self._tx() as conn:
            self._fence(conn, run_id, epoch)
            if status == "suspended" and wait_event is not None:
                waiting = conn.execute(
                    "SELECT 1 FROM outlast_events WHERE run_id = ? AND name = ? "
                    "AND consumed_at IS NULL LIMIT 1",
                    (run_id, wait_event),
                ).fetchone()
                if waiting:
                    wake_at = time.time()
            conn.execute(
                "UPDATE outlast_runs SET status = ?, wake_at = ?, wait_event = ?, reason = ?, "
                "stats = coalesce(?, stats), owner = NULL, lease_expires_at = NULL, "
                "epoch = epoch + 1 WHERE run_id = ?",
                (status, wake_at, wait_event, reason, stats, run_id),
            )

    def cancel(self, run_id: str) -> list[str]:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM outlast_runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise RunNotFound(run_id)
            rows = conn.execute(
                "WITH RECURSIVE tree(id) AS (SELECT ? UNION "
                "SELECT r.run_id FROM outlast_runs r JOIN tree ON r.parent_id = tree.id) "
                "UPDATE outlast_runs SET status = 'cancelled', owner = NULL, "
                "lease_expires_at = NULL, wake_at = NULL, epoch = epoch + 1, ended_at = ? "
                "WHERE run_id IN (SELECT id FROM tree) "
                "AND status NOT IN ('completed', 'failed', 'cancelled') RETURNING run_id",
                (run_id, time.time()),
            ).fetchall()
        return [r[0] for r in rows]

    def resolve(self, run_id: str, entry: Entry | None, drop_key: str | None = None) -> RunRecord:
        with self._tx() as conn:
            run = self._one(run_id)
            if run is None:
                raise RunNotFound(run_id)
            if run.status != "paused":
                raise refusals.not_paused(run_id, run.status)
            if entry is not None:
                conn.execute(
                    f"INSERT OR REPLACE INTO outlast_journal (run_id, {_ENTRY_COLUMNS}, epoch) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (run_id, *_entry_row(entry), run.epoch),
                )
            if drop_key is not None:
                conn.execute(
                    "DELETE FROM outlast_journal WHERE run_id = ? AND key = ? AND status = 'intent'",
                    (run_id, drop_key),
                )
            conn.execute(
                "UPDATE outlast_runs SET status = 'pending', reason = NULL, epoch = epoch + 1 "
                "WHERE run_id = ?",
                (run_id,),
            )
            resolved = self._one(run_id)
        assert resolved is not None
        return resolved

    # -- evolution ------------------------------------------------------------------------------

    def fork_run(self, source_id: str, new_run_id: str, upto: int, stats: str | None) -> RunRecord:
        with self._tx() as conn:
            sqlite_evolve.fork_run(conn, source_id, new_run_id, upto, stats, time.time())
            if self.after_fork is not None:
                self.after_fork(conn.execute, "outlast_".__add__, source_id, new_run_id)
            forked = self._one(new_run_id)
        assert forked is not None
        return forked

    def retry_run(self, run_id: str, cut: int | None, stats: str | None) -> RunRecord:
        with self._tx() as conn:
            sqlite_evolve.retry_run(conn, run_id, cut, stats)
            retried = self._one(run_id)
        assert retried is not None
        return retried

    # -- journal --------------------------------------------------------------------------------

    def load_journal(self, run_id: str) -> list[Entry]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ENTRY_COLUMNS}, epoch FROM outlast_journal WHERE run_id = ?", (run_id,)
            ).fetchall()
        entries = [Entry(*row) for row in rows]
        entries.sort(key=lambda e: e.position)
        return entries

    def record(
        self, run_id: str, epoch: int, entry: Entry, blobs: Mapping[str, bytes] | None = None
    ) -> None:
        # _entry_row(), inlined: this runs for every journaled call
        e = entry
        params = (
            run_id, e.key, e.position, e.kind, e.name, e.status, e.output, e.args_hash,
            e.attempts, e.started_at, e.ended_at, e.meta, epoch, run_id, epoch,
        )
        if blobs:
            with self._tx() as conn:
                self._put_blobs(conn, run_id, blobs)
                if conn.execute(_RECORD_SQL, params).rowcount != 1:
                    raise self._refusal(run_id, epoch, entry)
            return
        with self._lock:
            if self._conn.execute(_RECORD_SQL, params).rowcount != 1:
                raise self._refusal(run_id, epoch, entry)

    def _refusal(self, run_id: str, epoch: int, entry: Entry) -> BaseException:
        state = self._fence_state(run_id)
        return refusals.record_refused(run_id, epoch, entry.key, entry.position, state)

    def get_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        lookup = self.blobs.lookup(hashes)
        wanted = list(lookup)
        rows: list[tuple[str, bytes]] = []
        with self._lock:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                rows += self._conn.execute(
                    f"SELECT hash, data FROM outlast_blobs WHERE hash IN ({marks})", chunk
                ).fetchall()
        return self.blobs.read(rows, lookup)

    def stash(self, run_id: str, epoch: int, snapshot: bytes, position: int) -> None:
        with self._tx() as conn:
            self._fence(conn, run_id, epoch)
            conn.execute(
                "UPDATE outlast_runs SET snapshot = ?, snapshot_position = ? WHERE run_id = ?",
                (snapshot, position, run_id),
            )
            conn.execute(
                "DELETE FROM outlast_journal WHERE run_id = ? AND position < ?", (run_id, position)
            )

    def transaction(self, run_id: str, epoch: int, work: Callable[[Any], Entry]) -> Entry:
        with self._tx() as conn:
            self._fence(conn, run_id, epoch)
            entry = work(conn)
            if conn.execute(_RECORD_SQL, (run_id, *_entry_row(entry), epoch, run_id, epoch)).rowcount != 1:
                raise self._refusal(run_id, epoch, entry)
        return entry

    def set_trace_context(self, run_id: str, epoch: int, context: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE outlast_runs SET trace_context = ? "
                "WHERE run_id = ? AND epoch = ? AND trace_context IS NULL",
                (context, run_id, epoch),
            )

    # -- events ---------------------------------------------------------------------------------

    def send_event(self, run_id: str, name: str, payload: bytes) -> int:
        now = time.time()
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM outlast_runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise refusals.no_event_target(run_id)
            seq = conn.execute(
                "INSERT INTO outlast_events (run_id, name, payload, created_at) VALUES (?,?,?,?)",
                (run_id, name, payload, now),
            ).lastrowid
            conn.execute(
                "UPDATE outlast_runs SET wake_at = ? WHERE run_id = ? AND status = 'suspended' "
                "AND wait_event = ?",
                (now, run_id, name),
            )
        assert seq is not None
        return seq

    def take_event(self, run_id: str, epoch: int, name: str, entry: Entry) -> Entry | None:
        with self._tx() as conn:
            self._fence(conn, run_id, epoch)
            row = conn.execute(
                "SELECT id, payload FROM outlast_events WHERE run_id = ? AND name = ? "
                "AND consumed_at IS NULL ORDER BY id LIMIT 1",
                (run_id, name),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE outlast_events SET consumed_at = ? WHERE id = ?", (time.time(), row[0])
            )
            taken = Entry(**{**_entry_dict(entry), "output": row[1]})
            if conn.execute(_RECORD_SQL, (run_id, *_entry_row(taken), epoch, run_id, epoch)).rowcount != 1:
                raise self._refusal(run_id, epoch, taken)
        return taken

    def wait_for_work(self, timeout: float, group: str = "") -> bool:
        # No cross-process signal exists for a SQLite file; callers poll at this granularity.
        time.sleep(max(0.0, min(timeout, 0.2)))
        return True

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


def _entry_row(entry: Entry) -> tuple[Any, ...]:
    return (
        entry.key,
        entry.position,
        entry.kind,
        entry.name,
        entry.status,
        entry.output,
        entry.args_hash,
        entry.attempts,
        entry.started_at,
        entry.ended_at,
        entry.meta,
    )


def _entry_dict(entry: Entry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in Entry.__slots__}
