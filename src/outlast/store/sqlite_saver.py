"""SQLite side of the framework-checkpoint part of the store contract (the LangGraph saver).

A mixin of :class:`~outlast.store.sqlite.SQLiteStore`, kept apart so that file stays short;
the contract is in :mod:`outlast.store.base`. Every write is one IMMEDIATE transaction, which
also makes :meth:`delete_checkpoints` exclusive of concurrent writers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import astuple
from typing import Any

from .blobs import BlobCodec
from .checkpoint_seal import CheckpointSeal
from .checkpoints import CheckpointStore, Reachable, SavedCheckpoint, SavedWrite, checkpoint_owner

_CP_COLUMNS = "thread_id, ns, checkpoint_id, parent_id, run_id, checkpoint, metadata"
_W_COLUMNS = "thread_id, ns, checkpoint_id, task_id, idx, channel, value, task_path"
_W_KEY = "(thread_id, ns, checkpoint_id, task_id, idx)"
_BATCH = 500  # host parameters per IN (...) list, well under SQLite's limit


def _batches(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]


class SQLiteCheckpoints(CheckpointStore):
    """Framework checkpoints in ``outlast_lg_checkpoints`` / ``outlast_lg_writes``."""

    _lock: threading.RLock
    _conn: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    blobs: BlobCodec
    #: seals rows on the way in, opens them on the way out (an encrypting store sets its own)
    rowseal = CheckpointSeal()

    def _put_thread_blobs(self, conn: sqlite3.Connection, owner: str, blobs: Mapping[str, bytes]) -> None:
        rows = self.blobs.rows(blobs)
        conn.executemany(
            "INSERT INTO outlast_blobs (hash, data) VALUES (?, ?) ON CONFLICT DO NOTHING", rows
        )
        conn.executemany(
            "INSERT INTO outlast_blob_refs (run_id, hash) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(owner, address) for address, _ in rows],
        )

    def put_checkpoint(self, checkpoint: SavedCheckpoint, blobs: Mapping[str, bytes]) -> None:
        with self._tx() as conn:
            self._put_thread_blobs(conn, checkpoint_owner(checkpoint.thread_id), blobs)
            conn.execute(
                f"INSERT OR REPLACE INTO outlast_lg_checkpoints ({_CP_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                astuple(self.rowseal.seal_checkpoint(checkpoint)),
            )

    def put_writes(self, writes: Sequence[SavedWrite], blobs: Mapping[str, bytes]) -> None:
        if not writes:
            return
        insert = f"INSERT INTO outlast_lg_writes ({_W_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        replace = insert + (
            f"ON CONFLICT {_W_KEY} DO UPDATE SET channel = excluded.channel, "
            "value = excluded.value, task_path = excluded.task_path"
        )
        keep = insert + f"ON CONFLICT {_W_KEY} DO NOTHING"
        with self._tx() as conn:
            for thread_id in {w.thread_id for w in writes}:
                self._put_thread_blobs(conn, checkpoint_owner(thread_id), blobs)
            for w in writes:
                conn.execute(replace if w.idx < 0 else keep, astuple(self.rowseal.seal_write(w)))

    def get_checkpoints(
        self,
        thread_id: str | None,
        *,
        ns: str | None = None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> list[SavedCheckpoint]:
        where, params = ["1 = 1"], []
        for clause, value in (("thread_id = ?", thread_id), ("ns = ?", ns),
                              ("checkpoint_id = ?", checkpoint_id), ("checkpoint_id < ?", before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (f"SELECT {_CP_COLUMNS} FROM outlast_lg_checkpoints WHERE {' AND '.join(where)} "
               "ORDER BY checkpoint_id DESC, thread_id, ns")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [self.rowseal.open_checkpoint(SavedCheckpoint(*row)) for row in rows]

    def find_checkpoints(
        self, *, run_id: str | None = None, thread_prefix: str = "", before: str | None = None
    ) -> list[SavedCheckpoint]:
        where, params = ["substr(thread_id, 1, ?) = ?"], [len(thread_prefix), thread_prefix]
        for clause, value in (("run_id = ?", run_id), ("checkpoint_id < ?", before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (f"SELECT {_CP_COLUMNS} FROM outlast_lg_checkpoints WHERE {' AND '.join(where)} "
               "ORDER BY checkpoint_id DESC, thread_id, ns")
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [self.rowseal.open_checkpoint(SavedCheckpoint(*row)) for row in rows]

    def get_writes(self, thread_id: str, ns: str, checkpoint_ids: Sequence[str]) -> list[SavedWrite]:
        rows: list[Any] = []
        with self._lock:
            for chunk in _batches(list(dict.fromkeys(checkpoint_ids))):
                rows += self._conn.execute(
                    f"SELECT {_W_COLUMNS} FROM outlast_lg_writes WHERE thread_id = ? AND ns = ? "
                    f"AND checkpoint_id IN ({', '.join('?' * len(chunk))})",
                    (thread_id, ns, *chunk),
                ).fetchall()
        writes = [self.rowseal.open_write(SavedWrite(*row)) for row in rows]
        writes.sort(key=lambda w: (w.checkpoint_id, w.task_path, w.task_id, w.idx))
        return writes

    def delete_checkpoints(
        self,
        *,
        thread_id: str | None = None,
        run_ids: Sequence[str] | None = None,
        keep: int = 0,
        reachable: Reachable | None = None,
    ) -> int:
        if run_ids is not None and not run_ids:
            return 0
        params: list[Any]
        where, params = ["rn > ?"], [max(keep, 0)]
        if run_ids is not None:
            where.append(f"run_id IN ({', '.join('?' * len(run_ids))})")
            params += list(run_ids)
        scope, scope_params = ("WHERE thread_id = ?", [thread_id]) if thread_id is not None else ("", [])
        select = f"""SELECT thread_id, ns, checkpoint_id FROM (
            SELECT thread_id, ns, checkpoint_id, run_id, row_number() OVER
                (PARTITION BY thread_id, ns ORDER BY checkpoint_id DESC) AS rn
            FROM outlast_lg_checkpoints {scope}) WHERE {' AND '.join(where)}"""
        with self._tx() as conn:
            doomed = conn.execute(select, [*scope_params, *params]).fetchall()
            for table in ("outlast_lg_checkpoints", "outlast_lg_writes"):
                conn.executemany(
                    f"DELETE FROM {table} WHERE thread_id = ? AND ns = ? AND checkpoint_id = ?",
                    doomed,
                )
            for thread in sorted({row[0] for row in doomed}):
                self._release_thread(conn, thread, reachable)
        return len(doomed)

    def _release_thread(self, conn: sqlite3.Connection, thread_id: str, reachable: Reachable | None) -> None:
        """Drop the thread's blob references its remaining rows do not use, then free blobs."""
        owner = checkpoint_owner(thread_id)
        # each row opened with its key: the walk below reads what the rows hold
        left = [self.rowseal.open_checkpoint(SavedCheckpoint(*r)).checkpoint for r in conn.execute(
            f"SELECT {_CP_COLUMNS} FROM outlast_lg_checkpoints WHERE thread_id = ?", (thread_id,))]
        if not left:  # a thread with no checkpoint keeps no writes either
            conn.execute("DELETE FROM outlast_lg_writes WHERE thread_id = ?", (thread_id,))
            live: set[str] = set()
        elif reachable is None:
            return
        else:
            left += [self.rowseal.open_write(SavedWrite(*r)).value for r in conn.execute(
                f"SELECT {_W_COLUMNS} FROM outlast_lg_writes WHERE thread_id = ?", (thread_id,))]
            found = reachable(left, lambda hashes: _fetch(self.blobs, conn, hashes))
            live = set(self.blobs.lookup(found))
        refs = [r[0] for r in conn.execute(
            "SELECT hash FROM outlast_blob_refs WHERE run_id = ?", (owner,))]
        dead = [h for h in refs if h not in live]
        conn.executemany("DELETE FROM outlast_blob_refs WHERE run_id = ? AND hash = ?",
                         [(owner, h) for h in dead])
        conn.executemany(
            "DELETE FROM outlast_blobs WHERE hash = ? AND NOT EXISTS "
            "(SELECT 1 FROM outlast_blob_refs WHERE hash = outlast_blobs.hash)",
            [(h,) for h in dead],
        )


def _fetch(codec: BlobCodec, conn: sqlite3.Connection, hashes: Iterable[str]) -> dict[str, bytes]:
    lookup = codec.lookup(hashes)
    rows: list[tuple[str, bytes]] = []
    for chunk in _batches(list(lookup)):
        rows += conn.execute(
            f"SELECT hash, data FROM outlast_blobs WHERE hash IN ({', '.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
    return codec.read(rows, lookup)
