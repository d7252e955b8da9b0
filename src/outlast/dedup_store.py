"""Where :class:`~outlast.dedup.Deduplicator` keeps its keys: the SQL, and a backend per database.

Each backend is a connection source plus a dialect (clock expression, column types); the
statements are written once in :class:`Sql`. Only the standard library is imported here;
``psycopg`` is imported when a PostgreSQL URL is opened.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from .errors import ConfigurationError


class Sql:
    """The statements, written once with ``?`` parameters and a ``{now}`` clock expression.

    Only the validated table name and the fixed clock expression are pasted in; every value
    (keys, times, ``in_flight_timeout``, ``ttl``) travels as a parameter.
    """

    def __init__(self, table: str, now: str, blob: str, real: str) -> None:
        fmt = {"t": table, "now": now, "blob": blob, "real": real}
        # ``key`` holds the digest of the scope and the key (see _row_key), 64 hex digits.
        # Tables made before keys were scoped have the same columns: they open unchanged, and
        # their rows (raw keys) are simply never found again (docs/security.md).
        self.create = (
            "CREATE TABLE IF NOT EXISTS {t} ("
            " key TEXT PRIMARY KEY,"
            " fingerprint TEXT NOT NULL,"
            " state TEXT NOT NULL,"  # 'in_flight' or 'done'
            " token TEXT NOT NULL,"  # the current claim's id; writes by an older claim are refused
            " response {blob},"
            " created_at {real} NOT NULL,"
            " claimed_at {real} NOT NULL,"
            " finished_at {real})"
        ).format(**fmt)
        self.create_index = f"CREATE INDEX IF NOT EXISTS {table}_finished ON {table} (finished_at)"
        insert = (
            "INSERT INTO {t} (key, fingerprint, state, token, created_at, claimed_at)"
            " VALUES (?, ?, 'in_flight', ?, {now}, {now}) ON CONFLICT (key) DO "
        ).format(**fmt)
        self.claim = insert + "NOTHING"
        # Taking over happens in the same statement as the insert, so exactly one caller wins
        # a stale claim too: under the row lock (PostgreSQL) or the database lock (SQLite) the
        # next contender sees the fresh claimed_at and its WHERE fails.
        stale = (
            "{t}.state = 'in_flight' AND {t}.fingerprint = excluded.fingerprint"
            " AND {t}.claimed_at < excluded.claimed_at - ?"
        ).format(**fmt)
        expired = f"{table}.state = 'done' AND {table}.finished_at < excluded.claimed_at - ?"
        take_over = insert + (
            "UPDATE SET fingerprint = excluded.fingerprint, state = 'in_flight',"
            " token = excluded.token, response = NULL, created_at = excluded.created_at,"
            " claimed_at = excluded.claimed_at, finished_at = NULL WHERE "
        )
        # Parameters: row key, fingerprint, token, in_flight_timeout (and ttl for the second).
        self.claim_or_take_over = take_over + stale
        self.claim_or_take_over_expired = take_over + f"({stale}) OR ({expired})"
        self.read = f"SELECT fingerprint, state, response FROM {table} WHERE key = ?"
        self.finish = (
            "UPDATE {t} SET state = 'done', response = ?, finished_at = {now}"
            " WHERE key = ? AND token = ?"
        ).format(**fmt)
        self.release = f"DELETE FROM {table} WHERE key = ? AND token = ?"
        self.prune = f"DELETE FROM {table} WHERE state = 'done' AND finished_at < {now} - ?"


class Backend:
    """A connection source and a dialect: runs one statement in autocommit, returns rows."""

    sql: Sql

    def run(self, statement: str, params: tuple[Any, ...]) -> tuple[int, list[tuple[Any, ...]]]:
        """Run ``statement`` in its own transaction; return (rowcount, rows)."""
        raise NotImplementedError

    def create_table(self) -> None:
        """Create the table and its index if missing (safe when several processes race)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close pooled connections."""


class SQLite(Backend):
    # A connection per operation: sqlite3 connections must not be shared between threads, and
    # opening one is cheap next to the fsync of the write it does.

    def __init__(self, url: str, table: str) -> None:
        rest, _, query = url[len("sqlite:///") :].partition("?")
        if not rest or rest == ":memory:":
            raise ConfigurationError(
                f"bad dedup URL {url!r}: idempotency keys must live in a file every worker "
                "shares; use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        options = {k: v[-1] for k, v in parse_qs(query).items()}
        try:
            self._timeout = float(options.pop("busy_timeout", "30000")) / 1000
        except ValueError:
            raise ConfigurationError(f"bad busy_timeout in {url!r}: give milliseconds") from None
        if options:
            raise ConfigurationError(f"unknown option(s) {sorted(options)} in {url!r}")
        self._path = os.path.abspath(rest)  # a later chdir must not move the table
        if not os.path.isdir(os.path.dirname(self._path)):
            raise ConfigurationError(
                f"bad dedup URL {url!r}: the folder {os.path.dirname(self._path)!r} does not "
                "exist; create it or point the URL elsewhere"
            )
        self.sql = Sql(table, "((julianday('now') - 2440587.5) * 86400.0)", "BLOB", "REAL")

    def run(self, statement: str, params: tuple[Any, ...]) -> tuple[int, list[tuple[Any, ...]]]:
        conn = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
        try:
            cur = conn.execute(statement, params)
            return cur.rowcount, cur.fetchall()
        finally:
            conn.close()

    def create_table(self) -> None:
        self.run(self.sql.create, ())
        self.run(self.sql.create_index, ())


class Postgres(Backend):
    def __init__(self, url: str, table: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                f"PostgreSQL needs psycopg 3: run pip install 'outlast[postgres]' ({exc})"
            ) from exc
        self._psycopg = psycopg
        self._url = url
        self._table = table
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._pid = os.getpid()
        now = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
        self.sql = Sql(table, now, "BYTEA", "DOUBLE PRECISION")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        with self._lock:
            if self._pid != os.getpid():
                # After a fork the parent's sockets are not ours: forget them, never close them.
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._psycopg.connect(self._url, autocommit=True)
        try:
            yield conn
        except BaseException:
            conn.close()  # it may be mid-transaction or broken; a new one is cheap
            raise
        with self._lock:
            if len(self._idle) < 8 and self._pid == os.getpid():
                self._idle.append(conn)
                conn = None
        if conn is not None:
            conn.close()

    def run(self, statement: str, params: tuple[Any, ...]) -> tuple[int, list[tuple[Any, ...]]]:
        with self._connection() as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.rowcount, (cur.fetchall() if cur.description else [])

    def create_table(self) -> None:
        # Concurrent CREATE TABLE IF NOT EXISTS can still collide in pg_type; serialize it.
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._table,))
            conn.execute(self.sql.create)
            conn.execute(self.sql.create_index)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
