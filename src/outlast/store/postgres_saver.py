"""PostgreSQL side of the framework-checkpoint part of the store contract (the LangGraph saver).

A mixin of :class:`~outlast.store.postgres.PostgresStore`, kept apart so that file stays short;
the contract is in :mod:`outlast.store.base`. Writers that add blob references take the
store's shared ``blobs`` advisory lock (as ``record`` does) and :meth:`delete_checkpoints` the
exclusive one, so a reference is never added between the moment a delete decides a blob is
unused and the moment it frees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple
from typing import Any, TypeVar

import psycopg

from .blobs import BlobCodec
from .checkpoint_seal import CheckpointSeal
from .checkpoints import CheckpointStore, Reachable, SavedCheckpoint, SavedWrite, checkpoint_owner
from .postgres_sql import HASH_FORM, HASH_OUT, Queries, check_addresses, quote_ident

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

_CP_COLUMNS = "thread_id, ns, checkpoint_id, parent_id, run_id, checkpoint, metadata"
_W_COLUMNS = "thread_id, ns, checkpoint_id, task_id, idx, channel, value, task_path"
_W_KEY = "(thread_id, ns, checkpoint_id, task_id, idx)"
_PUT_BLOBS = """INSERT INTO {s}.blobs (hash, data)
    SELECT * FROM unnest(%(hashes)s::uuid[], %(datas)s::bytea[]) ON CONFLICT (hash) DO NOTHING"""
_PUT_REFS = """INSERT INTO {s}.blob_refs (run_id, hash)
    SELECT %(owner)s, h FROM unnest(%(hashes)s::uuid[]) AS h ON CONFLICT DO NOTHING"""
_KNOWN_REFS = f"""SELECT {HASH_OUT} FROM {{s}}.blob_refs
    WHERE run_id = %(owner)s AND hash = ANY(%(hashes)s::uuid[])"""
_PUT_CP = f"""INSERT INTO {{s}}.lg_checkpoints ({_CP_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (thread_id, ns, checkpoint_id) DO UPDATE SET parent_id = excluded.parent_id,
    run_id = excluded.run_id, checkpoint = excluded.checkpoint, metadata = excluded.metadata"""
_PUT_W = f"INSERT INTO {{s}}.lg_writes ({_W_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
_REPLACE_W = _PUT_W + f"""ON CONFLICT {_W_KEY} DO UPDATE SET channel = excluded.channel,
    value = excluded.value, task_path = excluded.task_path"""
_KEEP_W = _PUT_W + f"ON CONFLICT {_W_KEY} DO NOTHING"
_DOOMED = """SELECT thread_id, ns, checkpoint_id FROM (
        SELECT thread_id, ns, checkpoint_id, run_id, row_number() OVER
            (PARTITION BY thread_id, ns ORDER BY checkpoint_id COLLATE "C" DESC) AS rn
        FROM {s}.lg_checkpoints
        WHERE %(thread)s::text IS NULL OR thread_id = %(thread)s::text) AS ranked
    WHERE rn > %(keep)s AND (%(all_runs)s OR run_id = ANY(%(runs)s::text[]))"""


class PostgresCheckpoints(CheckpointStore):
    """Framework checkpoints in ``lg_checkpoints`` / ``lg_writes``."""

    schema: str
    _q: Queries
    _run: Callable[..., Any]
    blobs: BlobCodec
    #: seals rows on the way in, opens them on the way out (an encrypting store sets its own)
    rowseal = CheckpointSeal()

    def _saver_sql(self, sql: str) -> str:
        return sql.replace("{s}", quote_ident(self.schema))

    def _put_thread_blobs(self, conn: Conn, owner: str, blobs: Mapping[str, bytes]) -> None:
        # shared with other writers, exclusive for deletes (see the module docstring)
        conn.execute(self._q.xact_lock_shared, {"schema": self.schema, "purpose": "blobs"})
        if blobs:
            # a checkpoint repeats most of its thread's blobs: send only the new ones' bytes
            by_address = {self.blobs.address(h): h for h in blobs}
            known = conn.execute(self._saver_sql(_KNOWN_REFS),
                                 {"owner": owner, "hashes": check_addresses(list(by_address))})
            have = {row[0] for row in known}
            # sorted by address: one order for all, no deadlock
            rows = self.blobs.rows({h: blobs[h] for a, h in by_address.items() if a not in have})
            params = {"owner": owner, "hashes": check_addresses([a for a, _ in rows]),
                      "datas": [d for _, d in rows]}
            conn.execute(self._saver_sql(_PUT_BLOBS), params)
            conn.execute(self._saver_sql(_PUT_REFS), params)

    def put_checkpoint(self, checkpoint: SavedCheckpoint, blobs: Mapping[str, bytes]) -> None:
        def op(conn: Conn, _: bool) -> None:  # an upsert: applying it twice is harmless
            with conn.transaction():
                self._put_thread_blobs(conn, checkpoint_owner(checkpoint.thread_id), blobs)
                conn.execute(self._saver_sql(_PUT_CP),
                             astuple(self.rowseal.seal_checkpoint(checkpoint)))

        self._run(op)

    def put_writes(self, writes: Sequence[SavedWrite], blobs: Mapping[str, bytes]) -> None:
        if not writes:
            return

        def op(conn: Conn, _: bool) -> None:  # idempotent too
            with conn.transaction():
                for thread_id in sorted({w.thread_id for w in writes}):
                    self._put_thread_blobs(conn, checkpoint_owner(thread_id), blobs)
                for w in writes:
                    conn.execute(self._saver_sql(_REPLACE_W if w.idx < 0 else _KEEP_W),
                                 astuple(self.rowseal.seal_write(w)))

        self._run(op)

    def get_checkpoints(
        self,
        thread_id: str | None,
        *,
        ns: str | None = None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> list[SavedCheckpoint]:
        where, params = ["true"], []
        for clause, value in (("thread_id = %s", thread_id), ("ns = %s", ns),
                              ("checkpoint_id = %s", checkpoint_id),
                              ('checkpoint_id < %s COLLATE "C"', before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (f"SELECT {_CP_COLUMNS} FROM {{s}}.lg_checkpoints WHERE {' AND '.join(where)} "
               'ORDER BY checkpoint_id COLLATE "C" DESC, thread_id, ns')
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._run(lambda c, _: c.execute(self._saver_sql(sql), params).fetchall())
        return [self.rowseal.open_checkpoint(SavedCheckpoint(t, n, i, p, r, bytes(cp), bytes(md)))
                for t, n, i, p, r, cp, md in rows]

    def find_checkpoints(
        self, *, run_id: str | None = None, thread_prefix: str = "", before: str | None = None
    ) -> list[SavedCheckpoint]:
        where, params = ["starts_with(thread_id, %s)"], [thread_prefix]
        for clause, value in (("run_id = %s", run_id), ('checkpoint_id < %s COLLATE "C"', before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (f"SELECT {_CP_COLUMNS} FROM {{s}}.lg_checkpoints WHERE {' AND '.join(where)} "
               'ORDER BY checkpoint_id COLLATE "C" DESC, thread_id, ns')
        rows = self._run(lambda c, _: c.execute(self._saver_sql(sql), params).fetchall())
        return [self.rowseal.open_checkpoint(SavedCheckpoint(t, n, i, p, r, bytes(cp), bytes(md)))
                for t, n, i, p, r, cp, md in rows]

    def get_writes(self, thread_id: str, ns: str, checkpoint_ids: Sequence[str]) -> list[SavedWrite]:
        sql = self._saver_sql(f"""SELECT {_W_COLUMNS} FROM {{s}}.lg_writes
            WHERE thread_id = %s AND ns = %s AND checkpoint_id = ANY(%s::text[])
            ORDER BY checkpoint_id COLLATE "C", task_path COLLATE "C", task_id COLLATE "C", idx""")
        ids = list(dict.fromkeys(checkpoint_ids))
        rows = self._run(lambda c, _: c.execute(sql, (thread_id, ns, ids)).fetchall())
        return [self.rowseal.open_write(SavedWrite(t, n, i, k, x, ch, bytes(v), p))
                for t, n, i, k, x, ch, v, p in rows]

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
        params = {"thread": thread_id, "keep": max(keep, 0), "all_runs": run_ids is None,
                  "runs": list(run_ids or [])}

        def op(conn: Conn, _: bool) -> int:
            with conn.transaction():
                # first, so every statement below sees each reference committed before it
                conn.execute(self._q.xact_lock, {"schema": self.schema, "purpose": "blobs"})
                doomed = conn.execute(self._saver_sql(_DOOMED), params).fetchall()
                with conn.cursor() as cur:
                    for table in ("lg_checkpoints", "lg_writes"):
                        cur.executemany(self._saver_sql(
                            f"DELETE FROM {{s}}.{table} WHERE thread_id = %s AND ns = %s "
                            "AND checkpoint_id = %s"), doomed)
                for thread in sorted({row[0] for row in doomed}):
                    self._release_thread(conn, thread, reachable)
                return len(doomed)

        return int(self._run(op))

    def _release_thread(self, conn: Conn, thread_id: str, reachable: Reachable | None) -> None:
        """Drop the thread's blob references its remaining rows do not use, then free blobs."""
        owner = checkpoint_owner(thread_id)
        # each row opened with its key: the walk below reads what the rows hold
        seal = self.rowseal
        left = [seal.open_checkpoint(SavedCheckpoint(*r)).checkpoint for r in conn.execute(
            self._saver_sql(f"SELECT {_CP_COLUMNS} FROM {{s}}.lg_checkpoints WHERE thread_id = %s"),
            (thread_id,))]
        if not left:  # a thread with no checkpoint keeps no writes either
            conn.execute(self._saver_sql("DELETE FROM {s}.lg_writes WHERE thread_id = %s"), (thread_id,))
            live: set[str] = set()
        elif reachable is None:
            return
        else:
            left += [seal.open_write(SavedWrite(*r)).value for r in conn.execute(
                self._saver_sql(f"SELECT {_W_COLUMNS} FROM {{s}}.lg_writes WHERE thread_id = %s"),
                (thread_id,))]

            def fetch(hashes: list[str]) -> dict[str, bytes]:
                lookup = self.blobs.lookup(hashes)
                wanted = [a for a in lookup if HASH_FORM.fullmatch(a)]
                rows = conn.execute(self._q.get_blobs, {"hashes": wanted}).fetchall()
                return self.blobs.read(rows, lookup)

            live = set(self.blobs.lookup(reachable(left, fetch)))
        dead = [r[0] for r in conn.execute(self._saver_sql(
            f"SELECT {HASH_OUT} FROM {{s}}.blob_refs WHERE run_id = %s"), (owner,))
            if r[0] not in live]
        if dead:
            conn.execute(self._saver_sql(
                "DELETE FROM {s}.blob_refs WHERE run_id = %s AND hash = ANY(%s::uuid[])"),
                (owner, dead))
            conn.execute(self._saver_sql(
                "DELETE FROM {s}.blobs AS b WHERE b.hash = ANY(%s::uuid[]) AND NOT EXISTS "
                "(SELECT 1 FROM {s}.blob_refs AS r WHERE r.hash = b.hash)"), (dead,))
