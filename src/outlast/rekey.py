"""``outlast rekey``: re-encrypt every stored payload under the active key (docs/security.md).

After a rotation (a new active key first, the old one kept for reading), old payloads are
still sealed under the old key. :func:`rekey` walks every table that holds payloads in
primary-key order, a batch at a time (each batch one transaction), and rewrites each value
that is not sealed under the active key: opened with its own key, sealed again, bound to the
same place. Values stored in the clear (written before encryption was switched on) are sealed
too. Afterwards the old key can be dropped.

Safe while workers run: every rewrite is a compare-and-swap on the old stored value
(``UPDATE ... WHERE <row> AND <column> = <old value>``), so a value a fenced writer changed in
between is left alone (it was written under the writer's active key). Blobs move to their
keyed address under the new key, with their references, under the same lock ``prune`` takes
on PostgreSQL, so no writer can reference the old address as it goes. Resumable: a rerun
(after SIGKILL, say) skips every value already under the active key, so running it twice
rewrites nothing the second time.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError
from .store.base import Store

__all__ = ["RekeyReport", "rekey"]

Row = tuple[Any, ...]


@dataclass
class RekeyReport:
    """What one :func:`rekey` pass did, per table: rows scanned, values rewritten."""

    scanned: dict[str, int] = field(default_factory=dict)
    rewritten: dict[str, int] = field(default_factory=dict)
    #: values another writer changed between read and rewrite (left as that writer wrote them)
    skipped: int = 0

    @property
    def total(self) -> int:
        return sum(self.rewritten.values())


@dataclass(frozen=True)
class _Table:
    """A table holding payloads: its key columns and the columns ``reseal`` may rewrite."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    reseal: Callable[[Any, Row], dict[str, Any]]


def rekey(store: Store, *, batch: int = 500,
          progress: Callable[[str], None] | None = None) -> RekeyReport:
    """Re-encrypt every payload in ``store`` (a store opened with encryption) under its
    active key, ``batch`` rows per transaction; ``progress`` gets a line per batch."""
    from .store.sealed import SealedStore

    if not isinstance(store, SealedStore):
        raise ConfigurationError(
            "rekey needs the encryption keys: set $OUTLAST_ENCRYPTION_KEYS (the active key "
            "first, then every older key still in use), or pass App(encryption=...)"
        )
    if batch < 1:
        raise ConfigurationError(f"rekey: batch must be at least 1, not {batch}")
    db = _Db(store.inner)
    report = RekeyReport()
    for table in (*_TABLES, *_extra_tables(db)):
        _rekey_table(db, store, table, batch, report, progress)
    _rekey_blobs(db, store, batch, report, progress)
    return report


# -- the payload tables --------------------------------------------------------------------


def _reseal_runs(sealed: Any, row: Row) -> dict[str, Any]:
    from .store.sealed import run_aad

    run_id, *values = row
    out = {}
    for column, value in zip(("input", "output", "error", "snapshot"), values, strict=True):
        place = run_aad(run_id, column)
        new = None if value is None else sealed.reseal(
            value, [(place, place)], f"{column} of run {run_id!r}")
        if new is not None:
            out[column] = new
    return out


def _reseal_journal(sealed: Any, row: Row) -> dict[str, Any]:
    from .store.sealed import META, event_aad, key_aad

    run_id, key, kind, output, meta = row
    what = f"journal entry {key!r} of run {run_id!r}"
    place = key_aad(run_id, key)
    out: dict[str, Any] = {}
    if output is not None:
        # an event payload taken into the journal keeps its event binding (see sealed.py)
        events = (event_aad(run_id), event_aad(run_id))
        places = [events] if kind == "event" else [(place, place), events]
        new = sealed.reseal(output, places, what)
        if new is not None:
            out["output"] = new
    if meta is not None:
        text = str(meta)
        stored = base64.b64decode(text[len(META):]) if text.startswith(META) else text.encode(
            "utf-8", "surrogatepass")
        tag = place + b"\x00meta"
        new = sealed.reseal(stored, [(tag, tag)], what, clear=not text.startswith(META))
        if new is not None:
            out["meta"] = META + base64.b64encode(new).decode("ascii")
    return out


def _reseal_events(sealed: Any, row: Row) -> dict[str, Any]:
    from .store.sealed import event_aad

    _id, run_id, payload = row
    place = event_aad(run_id)
    new = sealed.reseal(payload, [(place, place)], f"event payload of run {run_id!r}")
    return {} if new is None else {"payload": new}


_TABLES = (
    _Table("runs", ("run_id",), ("input", "output", "error", "snapshot"), _reseal_runs),
    _Table("journal", ("run_id", "key"), ("kind", "output", "meta"), _reseal_journal),
    _Table("events", ("id",), ("run_id", "payload"), _reseal_events),
)


def _reseal_checkpoints(sealed: Any, row: Row) -> dict[str, Any]:
    from .store.checkpoint_seal import checkpoint_aad

    thread_id, ns, checkpoint_id, *values = row
    what = f"checkpoint {checkpoint_id} of thread {thread_id!r}"
    out = {}
    for column, value in zip(("checkpoint", "metadata"), values, strict=True):
        if value is None or not bytes(value):
            continue  # empty metadata (Agent Framework rows) stays empty
        place = checkpoint_aad(thread_id, ns, checkpoint_id, column)
        new = sealed.reseal(value, [(place, place)], f"{column} of {what}")
        if new is not None:
            out[column] = new
    return out


def _reseal_writes(sealed: Any, row: Row) -> dict[str, Any]:
    from .store.checkpoint_seal import write_aad

    thread_id, ns, checkpoint_id, task_id, idx, value = row
    place = write_aad(thread_id, ns, checkpoint_id, task_id, idx)
    what = f"write {task_id}/{idx} to checkpoint {checkpoint_id} of thread {thread_id!r}"
    new = sealed.reseal(value, [(place, place)], what)
    return {} if new is None else {"value": new}


#: the framework checkpointers' tables (LangGraph saver, Agent Framework storage)
_CHECKPOINT_TABLES = (
    _Table("lg_checkpoints", ("thread_id", "ns", "checkpoint_id"), ("checkpoint", "metadata"),
           _reseal_checkpoints),
    _Table("lg_writes", ("thread_id", "ns", "checkpoint_id", "task_id", "idx"), ("value",),
           _reseal_writes),
)


def _extra_tables(db: _Db) -> Sequence[_Table]:
    """Tables of integrations whose rows are sealed too (the checkpointer savers)."""
    return _CHECKPOINT_TABLES


# -- batches -------------------------------------------------------------------------------


class _Db:
    """The backend's connection, one transaction at a time, with its table names and SQL
    placeholders (SQL here is written with ``?``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sqlite = inner.dialect == "sqlite"
        if not self.sqlite:
            from .store.postgres_sql import quote_ident

            self.prefix = quote_ident(inner.schema) + "."
        else:
            self.prefix = "outlast_"

    def table(self, name: str) -> str:
        return self.prefix + name

    def has_table(self, name: str) -> bool:
        if self.sqlite:
            sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            args: tuple[str, ...] = (self.prefix + name,)
        else:
            sql = "SELECT 1 FROM pg_tables WHERE schemaname = ? AND tablename = ?"
            args = (self.inner.schema, name)
        return bool(self.transaction(lambda ex: ex(sql, args).fetchall()))

    def transaction(self, work: Callable[[Callable[..., Any]], Any], *,
                    lock_blobs: bool = False) -> Any:
        if self.sqlite:
            with self.inner._tx() as conn:  # BEGIN IMMEDIATE: the write lock for the batch
                return work(conn.execute)

        def op(conn: Any, _maybe_applied: bool) -> Any:
            # a retried batch is safe: every write is a compare-and-swap
            with conn.transaction():
                if lock_blobs:  # the lock prune takes: no writer references blobs meanwhile
                    conn.execute(self.inner._q.xact_lock,
                                 {"schema": self.inner.schema, "purpose": "blobs"})

                def execute(sql: str, args: Sequence[Any] = ()) -> Any:
                    return conn.execute(sql.replace("?", "%s"), tuple(args))

                return work(execute)

        return self.inner._run(op)


def _scan(ex: Callable[..., Any], db: _Db, table: str, key: Sequence[str],
          columns: Sequence[str], after: Row | None, batch: int) -> list[Row]:
    """The next ``batch`` rows after key ``after``, in key order."""
    keys = ", ".join(key)
    where = ""
    if after is not None:
        where = f"WHERE ({keys}) > ({', '.join('?' * len(key))})"
    sql = (f"SELECT {keys}, {', '.join(columns)} FROM {db.table(table)} {where} "
           f"ORDER BY {keys} LIMIT {int(batch)}")
    return [tuple(r) for r in ex(sql, tuple(after or ()))]


def _rekey_table(db: _Db, sealed: Any, table: _Table, batch: int, report: RekeyReport,
                 progress: Callable[[str], None] | None) -> None:
    if not db.has_table(table.name):
        return
    after: Row | None = None
    scanned = rewritten = 0
    while True:
        def work(ex: Callable[..., Any], after: Row | None = after) -> tuple[list[Row], int, int]:
            rows = _scan(ex, db, table.name, table.key, table.columns, after, batch)
            done = lost = 0
            for row in rows:
                pk = row[: len(table.key)]
                for column, new in table.reseal(sealed, row).items():
                    old = row[len(table.key) + table.columns.index(column)]
                    cond = " AND ".join(f"{k} = ?" for k in table.key)
                    sql = (f"UPDATE {db.table(table.name)} SET {column} = ? "
                           f"WHERE {cond} AND {column} = ?")
                    if ex(sql, (new, *pk, old)).rowcount == 1:
                        done += 1
                    else:
                        lost += 1
            return rows, done, lost

        rows, done, lost = db.transaction(work)
        scanned += len(rows)
        rewritten += done
        report.skipped += lost
        if rows and progress is not None:
            progress(f"{table.name}: {scanned} rows scanned, {rewritten} values re-encrypted")
        if len(rows) < batch:
            break
        after = rows[-1][: len(table.key)]
    report.scanned[table.name] = scanned
    report.rewritten[table.name] = rewritten


def _rekey_blobs(db: _Db, sealed: Any, batch: int, report: RekeyReport,
                 progress: Callable[[str], None] | None) -> None:
    codec = sealed.inner.blobs
    blobs, refs = db.table("blobs"), db.table("blob_refs")
    after: Row | None = None
    scanned = rewritten = 0
    while True:
        def work(ex: Callable[..., Any], after: Row | None = after) -> tuple[list[Row], int]:
            rows = _scan(ex, db, "blobs", ("hash",), ("data",), after, batch)
            done = 0
            for stored, data in rows:
                # PostgreSQL keeps addresses as uuid (returned as UUID), SQLite as hex text
                address = stored if isinstance(stored, str) else stored.hex
                moved = codec.reseal(address, bytes(data))
                if moved is None:
                    continue
                _h, new_address, new_data = moved
                new = new_address if isinstance(stored, str) else uuid.UUID(new_address)
                ex(f"INSERT INTO {blobs} (hash, data) VALUES (?, ?) ON CONFLICT DO NOTHING",
                   (new, new_data))
                ex(f"INSERT INTO {refs} (run_id, hash) SELECT run_id, ? FROM {refs} "
                   "WHERE hash = ? ON CONFLICT DO NOTHING", (new, stored))
                ex(f"DELETE FROM {refs} WHERE hash = ?", (stored,))
                ex(f"DELETE FROM {blobs} WHERE hash = ?", (stored,))
                done += 1
            return rows, done

        rows, done = db.transaction(work, lock_blobs=True)
        scanned += len(rows)
        rewritten += done
        if rows and progress is not None:
            progress(f"blobs: {scanned} rows scanned, {rewritten} values re-encrypted")
        if len(rows) < batch:
            break
        after = rows[-1][:1]
    report.scanned["blobs"] = scanned
    report.rewritten["blobs"] = rewritten
