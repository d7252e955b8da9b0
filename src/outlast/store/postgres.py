"""The PostgreSQL store, for runs spread over many workers on many machines.

``postgresql://user:password@host:5432/dbname?schema=outlast&pool_min=1&pool_max=10``: every
table lives in ``schema`` (created if missing); ``retry_for`` (seconds, default 30) bounds how
long connection faults are retried; the other query options go to libpq unchanged.
Statements go through a :class:`psycopg_pool.ConnectionPool` in autocommit mode, so a
single-statement write (a journal entry) is one round trip and its own transaction.

Workers wait for work with LISTEN on one dedicated connection and are woken by NOTIFY from
whoever makes a run runnable; that connection also holds the process's liveness lock (see
:mod:`~outlast.store.postgres_session`). Through a pooler (PgBouncer and the like) use
**session mode**: transaction mode breaks LISTEN, session locks (and psycopg's automatic
prepared statements); with ``?pooler=transaction`` in the URL the store does without them
(workers poll, takeover waits for the lease).

Connection faults (server restart, dropped connection) are retried with backoff for up to
``retry_for`` seconds. A write whose outcome is unknown (the connection died after the
statement was sent) is retried only where a retry cannot apply it twice: ``record`` treats
an identical stored entry as its own success, ``finish``/``release``/``stash`` check that the
run is in the state they would have left it in, ``take_event`` looks for its entry first,
``transaction`` looks for its entry when COMMIT failed and never runs user code twice;
``send_event`` is not retried after such a fault. A ``claim`` whose answer was lost leaves its
runs to come back when their lease expires, and a ``create_run`` whose answer was lost reports
``created=False`` unless it created the run claimed by its caller.

Blobs: a writer that adds references to blobs (``record`` with blobs) holds the advisory lock
``(schema, "blobs")`` shared for its transaction; whoever deletes unreferenced blobs (``prune``)
takes it exclusively, then reads references in a later statement. Without that, a blob found
unreferenced could gain a reference from a transaction not yet committed and be deleted
under it. Any new code that references or frees blobs must follow the same protocol.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool

from ..errors import (
    ConfigurationError,
    LeaseLost,
    RunConflict,
    RunNotFound,
    StoreError,
)
from . import migrations, postgres_evolve, refusals
from .base import Entry, NewRun, RunRecord, Store
from .blobs import BlobCodec
from .faults import guard_public
from .postgres_claim import PostgresClaims
from .postgres_conn import UNSENT, FaultMarks, Pool, classify, transient
from .postgres_evolve import PostgresEvolution
from .postgres_maint import PostgresMaintenance
from .postgres_maint import fields_of as _fields
from .postgres_saver import PostgresCheckpoints
from .postgres_session import Session, SessionMethods
from .postgres_sql import (
    HASH_FORM,
    POSTGRES_MIGRATIONS,
    Queries,
    check_addresses,
    parse_url,
    quote_ident,
)

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]


@guard_public
class PostgresStore(
    PostgresClaims, PostgresMaintenance, PostgresEvolution, SessionMethods, PostgresCheckpoints,
    FaultMarks, Store,
):
    """Runs, journals and events in one schema of a PostgreSQL database."""

    def _classify(self, exc: BaseException) -> StoreError | None:
        return classify(self, exc)

    dialect = "postgresql"
    #: how long operations keep retrying connection faults, in seconds
    retry_for: float = 30.0
    #: Server-side backstops, set on every pooled session. No claim holds a lock across a
    #: round trip, but other short transactions do (a release, a record with blobs, the user
    #: work of ``ctx.transaction``): a client that freezes or is cut off inside one would keep
    #: its locks until the server notices the dead peer (``tcp_keepalives_idle``, 2 hours by
    #: default). The server ends such a transaction after this many idle seconds...
    idle_in_transaction_timeout: float = 60.0
    #: ...and a statement waiting this long for a lock gives up (and is retried) instead of
    #: queueing everyone behind it.
    lock_timeout: float = 10.0

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        #: the blob protocol (addresses, compression, sealing): see blobs.py
        self.blobs = BlobCodec()
        #: set by an encrypting wrapper: rebinds a fork's copied payloads (see sealed.py)
        self.after_fork: Callable[..., None] | None = None
        conninfo, self.url, options = parse_url(url)
        self.schema = options["schema"]
        self.retry_for = options["retry_for"]
        self._q = Queries(self.schema)
        self._eq = postgres_evolve.EvolveQueries(self.schema)
        self._conninfo = conninfo
        self._channel = _channel("outlast_work_", self.schema)
        self._cancel_channel = _channel("outlast_cancel_", self.schema)
        self._closed = False
        self._pooled_sessions = options["pooler"] == "transaction"
        self._session: Session | None = None
        self._session_lock = threading.Lock()
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                if readonly:
                    self._check_schema(conn)
                else:
                    self._migrate(conn)
        except psycopg.OperationalError as exc:
            error = ConfigurationError(
                f"cannot connect to PostgreSQL at {self.url}: {str(exc).strip()}. Check that "
                "the server is running and reachable, and that the user, password and "
                "database in the URL are right"
            )
            # unreachable (not refused for a wrong password): a worker retries with backoff
            error.transient = transient(exc)  # type: ignore[attr-defined]
            raise error from exc
        self._pool: ConnectionPool[Conn] = Pool(
            conninfo,
            min_size=options["pool_min"],
            max_size=options["pool_max"],
            kwargs={"autocommit": True},
            configure=self._configure,
            open=False,
            name=f"outlast:{self.schema}",
        )
        self._pool.open(wait=options["pool_min"] > 0, timeout=30.0)

    # -- plumbing ---------------------------------------------------------------------------

    def _check_schema(self, conn: Conn) -> None:
        """For commands that only read: the schema must exist; nothing is created."""
        q = self._q
        exists = conn.execute(q.schema_exists, {"schema": self.schema}).fetchone() is not None
        if exists:
            exists = conn.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_version'",
                (self.schema,),
            ).fetchone() is not None
        if not exists:
            raise ConfigurationError(
                f"no outlast schema {self.schema!r} at {self.url}. Check the URL's database "
                "and ?schema= (default outlast); it is created by the first run or worker"
            )

    def _migrate(self, conn: Conn) -> None:
        q, schema = self._q, self.schema

        class Target:
            def current_version(self) -> int:
                row = conn.execute(q.current_version).fetchone()
                return int(row[0]) if row else 0

            def execute(self, sql: str) -> None:
                conn.execute(sql.replace("{s}", quote_ident(schema)))

            def set_version(self, version: int, description: str) -> None:
                conn.execute(q.set_version, {"version": version, "description": description})

        @contextlib.contextmanager
        def locked() -> Iterator[None]:
            with conn.transaction():
                conn.execute(q.xact_lock, {"schema": schema, "purpose": "migrate"})
                # checked first: CREATE SCHEMA needs a privilege a deployed user may lack
                if conn.execute(q.schema_exists, {"schema": schema}).fetchone() is None:
                    conn.execute(q.create_schema)
                conn.execute(q.create_version_table)
                yield

        migrations.apply(Target(), POSTGRES_MIGRATIONS, locked, self.url)

    def _configure(self, conn: Conn) -> None:
        """Session settings of every pooled connection (see ``idle_in_transaction_timeout``)."""
        idle, wait = int(self.idle_in_transaction_timeout * 1000), int(self.lock_timeout * 1000)
        conn.execute(f"SET idle_in_transaction_session_timeout = {idle}")
        conn.execute(f"SET lock_timeout = {wait}")

    def _run(
        self, op: Callable[[Conn, bool], T], *, retry: Callable[[bool], bool] | None = None
    ) -> T:
        """``op(connection, maybe_applied)`` on a pooled connection, retrying connection faults.

        ``maybe_applied`` is True on a retry after a fault that may have struck after the
        server applied the previous attempt; ``op`` must then not apply it twice. An operation
        that cannot tell passes ``retry(unsent)``, asked before each retry (``unsent``: the
        fault certainly left nothing applied); False raises the fault instead.
        """
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        maybe_applied = False
        while True:
            try:
                with self._pool.connection(timeout=max(deadline - time.monotonic(), 0.1)) as conn:
                    result = op(conn, maybe_applied)
                self.last_ok = time.monotonic()
                return result
            except psycopg.Error as exc:
                unsent = isinstance(exc, UNSENT)
                if (
                    self._closed
                    or not transient(exc)
                    or (retry is not None and not retry(unsent))
                    or time.monotonic() + delay > deadline
                ):
                    if transient(exc):
                        self.note_fault()
                    raise
                self.note_fault()
                maybe_applied = maybe_applied or not unsent
            # after a restart every idle connection is dead: find them all now instead of
            # failing on each in turn
            with contextlib.suppress(psycopg.Error):
                self._pool.check()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _notify(self, conn: Conn) -> None:
        conn.execute(self._q.notify, {"channel": self._channel})

    def _lease_lost(self, conn: Conn, run_id: str, epoch: int) -> LeaseLost:
        return refusals.lease_lost(run_id, epoch, self._fence_state(conn, run_id))

    def _fence_state(self, conn: Conn, run_id: str) -> tuple[int, str] | None:
        row = conn.execute(self._q.fence_state, {"run_id": run_id}).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        run: NewRun,
        *,
        owner: str | None = None,
        lease: float = 0.0,
        first: Entry | None = None,
        blobs: Mapping[str, bytes] | None = None,
    ) -> tuple[RunRecord, bool]:
        claimed = owner is not None
        if first is not None and not claimed:
            raise ValueError("create_run(first=...) records a journal entry: it needs an owner")
        params = {
            **_fields(run),
            **{"owner": owner, "claimed": claimed, "lease": float(lease)},
            **({"status": "running", "epoch": 1} if claimed else {"status": "pending", "epoch": 0}),
        }
        sql = self._q.create_run
        if first is not None:
            # the entry takes the new run's epoch (1), never the caller's
            params.update(_fields(first), entry_status=first.status, status="running", epoch=1)
            sql = self._q.create_run_first
            if blobs:
                return self._create_with_blobs(params, blobs)

        def op(conn: Conn, maybe_applied: bool) -> tuple[RunRecord, bool]:
            while True:
                row = conn.execute(sql, params).fetchone()
                if row is not None:
                    if not claimed:
                        self._notify(conn)
                    return RunRecord(*row), True
                row = conn.execute(self._q.get_run, params).fetchone()
                if row is None:  # the other creator rolled back: try again
                    continue
                stored = RunRecord(*row)
                # our own earlier attempt, if it committed, is the run we hold at epoch 1
                ours = maybe_applied and claimed and stored.owner == owner and stored.epoch == 1
                return stored, ours

        return self._run(op)

    def _create_with_blobs(
        self, params: dict[str, Any], blobs: Mapping[str, bytes]
    ) -> tuple[RunRecord, bool]:
        """A new claimed run, its first entry and the entry's blobs, in one transaction (the
        blobs only when the run is new; see :meth:`_with_blobs` for the lock)."""
        hashes = check_addresses(sorted(blobs))
        blob_params = {"run_id": params["run_id"], "hashes": hashes, "datas": [blobs[h] for h in hashes]}

        def op(conn: Conn, maybe_applied: bool) -> tuple[RunRecord, bool]:
            with conn.transaction():
                conn.execute(self._q.xact_lock_shared, {"schema": self.schema, "purpose": "blobs"})
                row = conn.execute(self._q.create_run_first, params).fetchone()
                if row is not None:
                    conn.execute(self._q.insert_blobs, blob_params)
                    conn.execute(self._q.insert_blob_refs, blob_params)
                    return RunRecord(*row), True
            stored = RunRecord(*_one(conn, self._q.get_run, params))
            ours = maybe_applied and stored.owner == params["owner"] and stored.epoch == 1
            return stored, ours

        return self._run(op)

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._run(lambda c, _: c.execute(self._q.get_run, {"run_id": run_id}).fetchone())
        return RunRecord(*row) if row else None

    def heartbeat(self, owner: str, run_ids: Sequence[str], lease: float) -> set[str]:
        if not run_ids:
            return set()
        params = {"owner": owner, "run_ids": list(run_ids), "lease": float(lease)}
        rows = self._run(lambda c, _: c.execute(self._q.heartbeat, params).fetchall())
        return set(run_ids) - {row[0] for row in rows}

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
        params = {"run_id": run_id, "epoch": epoch, "status": status, "stats": stats}
        params.update(output=output, error=error)

        def finish_on(conn: Conn, maybe_applied: bool) -> None:
            if conn.execute(self._q.finish, params).rowcount == 1:
                return
            # finish keeps the epoch, so an applied earlier attempt left (epoch, status)
            if maybe_applied and self._fence_state(conn, run_id) == (epoch, status):
                return
            raise self._lease_lost(conn, run_id, epoch)

        self._run(self._with_blobs(run_id, blobs, finish_on) if blobs else finish_on)

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
        params = {"run_id": run_id, "epoch": epoch, "status": status, "stats": stats}
        params.update(wake_at=wake_at, wait_event=wait_event, reason=reason)

        def op(conn: Conn, maybe_applied: bool) -> None:
            with conn.transaction():
                row = conn.execute(self._q.release, params).fetchone()
                if row is None:
                    # release bumps the epoch: an applied earlier attempt left (epoch+1, status)
                    if maybe_applied and self._fence_state(conn, run_id) == (epoch + 1, status):
                        return
                    raise self._lease_lost(conn, run_id, epoch)
                runnable = bool(row[0])
                if status == "suspended" and wait_event is not None and not runnable:
                    runnable = conn.execute(self._q.release_if_event, params).fetchone() is not None
                if runnable:
                    self._notify(conn)

        self._run(op)

    def cancel(self, run_id: str) -> list[str]:
        def op(conn: Conn, _: bool) -> list[str]:
            with conn.transaction():
                rows = conn.execute(self._q.cancel, {"run_id": run_id}).fetchall()
                if not rows and self._fence_state(conn, run_id) is None:
                    raise RunNotFound(run_id)
                if rows:
                    self._notify(conn)
                    # the owners' sessions interrupt their in-memory waits at once
                    for row in rows:
                        conn.execute(self._q.notify_run, {"channel": self._cancel_channel,
                                                          "run_id": row[0]})
            rows.sort(key=lambda r: (not r[1], r[2], r[0]))  # the run first, then oldest
            return [r[0] for r in rows]

        return self._run(op)

    def resolve(self, run_id: str, entry: Entry | None, drop_key: str | None = None) -> RunRecord:
        def op(conn: Conn, maybe_applied: bool) -> RunRecord:
            with conn.transaction():
                state = conn.execute(self._q.lock_run, {"run_id": run_id}).fetchone()
                if state is None:
                    raise RunNotFound(run_id)
                if state[1] != "paused":
                    if maybe_applied and state[1] == "pending":  # our earlier attempt
                        return RunRecord(*_one(conn, self._q.get_run, {"run_id": run_id}))
                    raise refusals.not_paused(run_id, state[1])
                if entry is not None:
                    conn.execute(self._q.put_entry, _entry_params(run_id, state[0], entry))
                if drop_key is not None:
                    conn.execute(self._q.drop_intent, {"run_id": run_id, "key": drop_key})
                resolved = RunRecord(*_one(conn, self._q.make_pending, {"run_id": run_id}))
                self._notify(conn)
                return resolved

        return self._run(op)

    # -- journal ----------------------------------------------------------------------------

    def load_journal(self, run_id: str) -> list[Entry]:
        rows = self._run(
            lambda c, _: c.execute(self._q.load_journal, {"run_id": run_id}).fetchall()
        )
        return [Entry(*row) for row in rows]

    def record(
        self, run_id: str, epoch: int, entry: Entry, blobs: Mapping[str, bytes] | None = None
    ) -> None:
        def record_on(conn: Conn, maybe_applied: bool) -> None:
            self._record_on(conn, run_id, epoch, entry, maybe_applied)

        self._run(self._with_blobs(run_id, blobs, record_on) if blobs else record_on)

    def _with_blobs(
        self, run_id: str, blobs: Mapping[str, bytes], write: Callable[[Conn, bool], None]
    ) -> Callable[[Conn, bool], None]:
        """``write`` (a fenced run write) and the blobs it refers to, in one transaction."""
        # sorted, so two runs storing the same blobs insert them in one order (no deadlock)
        rows = self.blobs.rows(blobs)  # sorted by address: one order for all
        blob_params = {"run_id": run_id, "hashes": check_addresses([a for a, _ in rows]),
                       "datas": [d for _, d in rows]}

        def op(conn: Conn, maybe_applied: bool) -> None:
            with conn.transaction():
                # shared with other writers, exclusive for prune: a blob prune finds
                # unreferenced cannot gain a reference before prune deletes it
                conn.execute(self._q.xact_lock_shared, {"schema": self.schema, "purpose": "blobs"})
                # the fenced write first: a refused one raises before any blob is written
                write(conn, maybe_applied)
                conn.execute(self._q.insert_blobs, blob_params)
                conn.execute(self._q.insert_blob_refs, blob_params)

        return op

    def _record_on(
        self, conn: Conn, run_id: str, epoch: int, entry: Entry, maybe_applied: bool
    ) -> None:
        """The fenced journal write, then (only when it wrote nothing) the reason why."""
        params = _entry_params(run_id, epoch, entry)
        for _ in range(3):
            if conn.execute(self._q.record, params).rowcount == 1:
                return
            row = conn.execute(self._q.record_refused, params).fetchone()
            assert row is not None
            run_epoch, run_status, has_entry = row[:3]
            stored = Entry(*row[3:]) if has_entry else None
            if maybe_applied and stored == entry:
                return  # the earlier attempt committed before its connection failed
            state = (int(run_epoch), str(run_status)) if run_epoch is not None else None
            if refusals.fenced_out(state, epoch):
                raise refusals.lease_lost(run_id, epoch, state)
            if stored is not None and stored.status != "intent":
                raise refusals.already_recorded(run_id, entry.key, stored.position)
            # neither reason holds any more (the row changed in between): write again
        raise RunConflict(f"run {run_id!r}: could not record {entry.key!r}", run_id=run_id)

    def get_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        lookup = self.blobs.lookup(hashes)
        wanted = [a for a in lookup if HASH_FORM.fullmatch(a)]  # others cannot be stored
        if not wanted:
            return {}
        rows = self._run(lambda c, _: c.execute(self._q.get_blobs, {"hashes": wanted}).fetchall())
        return self.blobs.read(rows, lookup)

    def stash(self, run_id: str, epoch: int, snapshot: bytes, position: int) -> None:
        params = {"run_id": run_id, "epoch": epoch, "snapshot": snapshot, "position": position}

        def op(conn: Conn, maybe_applied: bool) -> None:
            row = conn.execute(self._q.stash, params).fetchone()
            if row is not None and row[0] == 1:
                return
            if maybe_applied and conn.execute(self._q.stash_applied, params).fetchone():
                return
            raise self._lease_lost(conn, run_id, epoch)

        self._run(op)

    def set_trace_context(self, run_id: str, epoch: int, context: str) -> None:
        params = {"run_id": run_id, "epoch": epoch, "context": context}

        def op(conn: Conn, _: bool) -> None:  # idempotent: only sets a missing context
            conn.execute(self._q.set_trace_context, params)

        self._run(op)

    def transaction(self, run_id: str, epoch: int, work: Callable[[Any], Entry]) -> Entry:
        returned: list[Entry] = []
        started = False

        def op(conn: Conn, _: bool) -> Entry:
            nonlocal started
            with conn.transaction():
                # Fail fast without a lock; the real fence is the journal write at the end,
                # so the run row is not locked while user code runs (a worker's heartbeat
                # would queue behind it).
                if self._fence_state(conn, run_id) != (epoch, "running"):
                    raise self._lease_lost(conn, run_id, epoch)
                started = True
                entry = work(conn)
                if not isinstance(entry, Entry):
                    raise TypeError(f"transaction work must return an Entry, not {entry!r}")
                returned.append(entry)
                self._record_on(conn, run_id, epoch, entry, False)
            return entry

        try:
            # a dead pooled connection is replaced, but user code never runs twice
            return self._run(op, retry=lambda _: not started)
        except psycopg.OperationalError:
            if not returned:
                raise
            # The connection failed around COMMIT: the outcome is unknown, and the stored
            # entry (identical, timestamps included) is the only witness.
            params = {"run_id": run_id, "key": returned[0].key}
            row = self._run(lambda c, _: c.execute(self._q.get_entry, params).fetchone())
            if row is not None and Entry(*row) == returned[0]:
                return returned[0]
            raise

    # -- events -----------------------------------------------------------------------------

    def send_event(self, run_id: str, name: str, payload: bytes) -> int:
        params = {"run_id": run_id, "name": name, "payload": payload}

        def op(conn: Conn, _: bool) -> int:
            with conn.transaction():
                row = conn.execute(self._q.send_event, params).fetchone()
                if row is None:
                    raise refusals.no_event_target(run_id)
                if conn.execute(self._q.wake_for_event, params).fetchone() is not None:
                    self._notify(conn)
                return int(row[0])

        # a second attempt after an unknown outcome could deliver the event twice
        return self._run(op, retry=lambda unsent: unsent)

    def take_event(self, run_id: str, epoch: int, name: str, entry: Entry) -> Entry | None:
        params = {"run_id": run_id, "epoch": epoch, "name": name, "key": entry.key}

        def op(conn: Conn, maybe_applied: bool) -> Entry | None:
            if maybe_applied:
                # taking again would consume the next event: look for the first one's entry
                row = conn.execute(self._q.get_entry, params).fetchone()
                if row is not None and row[4] != "intent":
                    return Entry(*row)
            with conn.transaction():
                if conn.execute(self._q.fence_share, params).fetchone() is None:
                    raise self._lease_lost(conn, run_id, epoch)
                row = conn.execute(self._q.consume_event, params).fetchone()
                if row is None:
                    return None
                taken = replace(entry, output=bytes(row[0]))
                self._record_on(conn, run_id, epoch, taken, False)
                return taken

        return self._run(op)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        if self._session is not None:
            self._session.close()


def _channel(prefix: str, schema: str) -> str:
    """A NOTIFY channel of this schema (identifiers are at most 63 bytes)."""
    channel = prefix + schema
    if len(channel) > 63:
        channel = prefix + hashlib.sha256(schema.encode()).hexdigest()[:40]
    return channel


def _entry_params(run_id: str, epoch: int, entry: Entry) -> dict[str, Any]:
    """The entry's columns, its ``epoch`` the fence's (the store's, never the caller's)."""
    return {**_fields(entry), "run_id": run_id, "epoch": epoch}


def _one(conn: Conn, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...]:
    """The single row ``sql`` returns (a statement that always returns one)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row
