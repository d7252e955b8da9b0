"""Receiving side of idempotency keys: run a request's effect once per key, replay the response.

outlast gives every step execution a key ``{run_id}:{step_name}:{n}`` that stays the same across
retries, crashes and workers, and sends it as the ``Idempotency-Key`` header. A service you own
uses :class:`Deduplicator` (with :meth:`Deduplicator.once` or the ASGI
:class:`~outlast.dedup_asgi.IdempotencyMiddleware`) so a repeated key returns the stored response
instead of running the handler again.

The guarantee, per key, kept in the service's own database:

- **One execution at a time.** The first caller claims the key with an ``INSERT`` that only one
  caller can win (threads, processes and machines sharing the database included). A concurrent
  duplicate runs nothing: it waits, up to ``in_flight_timeout``, for the stored response, then
  gives up with :class:`IdempotencyKeyInFlight`.
- **Exactly once, when the handler's effect commits before its response is stored.** Once the
  response is stored, every later duplicate with the same fingerprint gets those bytes back and
  the handler does not run. So a handler that commits its effect, returns, and has its response
  stored within ``in_flight_timeout`` of its claim has run exactly once for that key.
- **A crash mid-way.** The effect and the stored response are not one transaction. If the
  process dies while the handler runs, the claim stays *in flight*; once it is older than
  ``in_flight_timeout`` the next duplicate takes it over and runs the handler again. That is
  exactly once if the first run died before its effect committed, and twice if it died after
  the effect but before the response was stored: make the effect idempotent by itself (for
  instance keyed by the same key in the same database) where that window matters. A handler
  that runs longer than ``in_flight_timeout`` is taken for crashed in the same way (and its
  late response is not stored over the new one), so set the timeout above the slowest handler.
- **A failed handler can be retried.** If the handler raises, its claim is deleted and the
  exception propagates; the next duplicate runs the handler anew. Whatever the handler committed
  before raising is not undone, so it should raise only before its effect or roll it back.
- **A key names one request.** The same key with another fingerprint raises
  :class:`IdempotencyKeyReused` and runs nothing (until ``ttl``, if set, has expired the key).

Errors (both derive from :class:`~outlast.errors.OutlastError`)::

    OutlastError
    ├── IdempotencyKeyReused      the key was first used for a different request (fingerprint)
    └── Timeout
        └── IdempotencyKeyInFlight  a duplicate waited longer than in_flight_timeout

Only the standard library is imported here; ``psycopg`` is imported when a PostgreSQL URL is
opened, and the ASGI middleware needs no web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import inspect
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload
from urllib.parse import parse_qs

from .errors import ConfigurationError, OutlastError, SerializationError, Timeout

if TYPE_CHECKING:
    from .dedup_asgi import IdempotencyMiddleware

__all__ = [
    "Deduplicator",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyReused",
    "IdempotencyMiddleware",
]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("outlast.dedup")

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}")


class IdempotencyKeyReused(OutlastError):
    """The key was already used for a request with another fingerprint; nothing was run.

    Attributes: ``key``, ``fingerprint`` (this request's) and ``stored_fingerprint``.
    """

    def __init__(self, key: str, fingerprint: str, stored_fingerprint: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was already used for a different request (fingerprint "
            f"{stored_fingerprint[:12]}..., this request {fingerprint[:12]}...): send a new key "
            "for a new request, or resend the original request unchanged",
            key=key,
            fingerprint=fingerprint,
            stored_fingerprint=stored_fingerprint,
        )


class IdempotencyKeyInFlight(Timeout):
    """A duplicate waited ``waited`` seconds while the first request with ``key`` still ran.

    Retry later: once the first request finishes its response is replayed, and once its claim is
    older than ``in_flight_timeout`` (it crashed) the retry runs the handler itself.
    """

    def __init__(self, key: str, waited: float) -> None:
        super().__init__(
            f"a request with idempotency key {key!r} is still in progress after waiting "
            f"{waited:.1f}s; retry later",
            key=key,
            waited=waited,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _Claimed:
    token: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Done:
    response: bytes


_Outcome = _Claimed | _Done


def _classify(key: str, fingerprint: str, row: tuple[str, str, bytes | None]) -> _Done | None:
    """Decide what a caller does with an existing row: replay it, wait (None) or refuse."""
    stored_fingerprint, state, response = row
    if stored_fingerprint != fingerprint:
        raise IdempotencyKeyReused(key, fingerprint, stored_fingerprint)
    if state == "done":
        return _Done(bytes(response or b""))
    return None


class _Backoff:
    """Delays between polls of an in-flight key: 5 ms growing to 200 ms, up to a deadline."""

    def __init__(self, key: str, timeout: float) -> None:
        self._key = key
        self._start = time.monotonic()
        self._timeout = timeout
        self._delay = 0.005

    def next_delay(self) -> float:
        waited = time.monotonic() - self._start
        if waited >= self._timeout:
            raise IdempotencyKeyInFlight(self._key, waited)
        delay = min(self._delay, self._timeout - waited)
        self._delay = min(self._delay * 1.5, 0.2)
        return delay


class _Sql:
    """The statements, written once with ``?`` parameters and a ``{now}`` clock expression."""

    def __init__(self, table: str, now: str, blob: str, real: str, ttl: float | None) -> None:
        fmt = {"t": table, "now": now, "blob": blob, "real": real}
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
        takeover = (
            "{t}.state = 'in_flight' AND {t}.fingerprint = excluded.fingerprint"
            " AND {t}.claimed_at < excluded.claimed_at - ?"
        ).format(**fmt)
        if ttl is not None:
            expired = (
                f"{table}.state = 'done' AND {table}.finished_at < excluded.claimed_at - {ttl!r}"
            )
            takeover = f"({takeover}) OR ({expired})"
        self.claim_or_take_over = insert + (
            "UPDATE SET fingerprint = excluded.fingerprint, state = 'in_flight',"
            " token = excluded.token, response = NULL, created_at = excluded.created_at,"
            " claimed_at = excluded.claimed_at, finished_at = NULL WHERE " + takeover
        )
        self.read = f"SELECT fingerprint, state, response FROM {table} WHERE key = ?"
        self.finish = (
            "UPDATE {t} SET state = 'done', response = ?, finished_at = {now}"
            " WHERE key = ? AND token = ?"
        ).format(**fmt)
        self.release = f"DELETE FROM {table} WHERE key = ? AND token = ?"
        self.prune = f"DELETE FROM {table} WHERE state = 'done' AND finished_at < {now} - ?"


class _Backend:
    """A connection source and a dialect: runs one statement in autocommit, returns rows."""

    sql: _Sql

    def run(self, statement: str, params: tuple[Any, ...]) -> tuple[int, list[tuple[Any, ...]]]:
        """Run ``statement`` in its own transaction; return (rowcount, rows)."""
        raise NotImplementedError

    def create_table(self) -> None:
        """Create the table and its index if missing (safe when several processes race)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close pooled connections."""


class _SQLite(_Backend):
    # A connection per operation: sqlite3 connections must not be shared between threads, and
    # opening one is cheap next to the fsync of the write it does.

    def __init__(self, url: str, table: str, ttl: float | None) -> None:
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
        self.sql = _Sql(table, "((julianday('now') - 2440587.5) * 86400.0)", "BLOB", "REAL", ttl)

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


class _Postgres(_Backend):
    def __init__(self, url: str, table: str, ttl: float | None) -> None:
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
        self.sql = _Sql(table, now, "BYTEA", "DOUBLE PRECISION", ttl)

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


class Deduplicator:
    """Idempotency keys in the service's own database: one execution per key, stored responses.

    ``url`` is ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (option
    ``busy_timeout`` in ms) or ``postgresql://user@host:5432/dbname``. The table (default
    ``outlast_idempotency``) is created if missing and holds, per key: the request fingerprint,
    the state (in flight or done), the response bytes and the created, claimed and finished times
    (the database's clock).

    ``in_flight_timeout`` (seconds) bounds how long a duplicate waits for a request in progress,
    and is the age past which an unfinished claim is taken for a crash and may be taken over; it
    must exceed the longest handler run. ``ttl`` (seconds), when given, is how long a stored
    response is honoured: after it the key counts as unused (use :meth:`prune` to delete rows).

    See the module docstring for the exact guarantee. Safe to share between threads; each process
    opens its own connections.
    """

    def __init__(
        self,
        url: str,
        *,
        table: str = "outlast_idempotency",
        in_flight_timeout: float = 60.0,
        ttl: float | None = None,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(
                f"bad table name {table!r}: use letters, digits and underscores (at most 51)"
            )
        if not in_flight_timeout > 0 or (ttl is not None and not ttl > 0):
            raise ConfigurationError(
                "in_flight_timeout and ttl must be positive numbers of seconds"
            )
        scheme = url.split("://", 1)[0].lower() if isinstance(url, str) else ""
        self._backend: _Backend
        if scheme == "sqlite" and url.startswith("sqlite:///"):
            self._backend = _SQLite(url, table, None if ttl is None else float(ttl))
        elif scheme in ("postgresql", "postgres"):
            self._backend = _Postgres(url, table, None if ttl is None else float(ttl))
        else:
            raise ConfigurationError(
                f"bad dedup URL {url!r}: expected sqlite:///path/to/file.db "
                "or postgresql://user@host:5432/dbname"
            )
        self.url = url
        self.table = table
        self.in_flight_timeout = float(in_flight_timeout)
        self.ttl = ttl
        self._backend.create_table()

    # -- the core ------------------------------------------------------------------------------

    def execute(self, key: str, fingerprint: str, fn: Callable[[], bytes]) -> bytes:
        """Run ``fn`` once for ``key`` and return its bytes; a duplicate gets the stored bytes.

        A concurrent duplicate waits for the first call's response (up to ``in_flight_timeout``,
        then :class:`IdempotencyKeyInFlight`). Another ``fingerprint`` for a used key raises
        :class:`IdempotencyKeyReused`. If ``fn`` raises, the claim is deleted and the exception
        propagates, so a retry runs ``fn`` again. If storing the response fails, that error
        propagates and the claim stays in flight, as after a crash (see the module docstring).
        """
        backoff = _Backoff(key, self.in_flight_timeout)
        outcome = self._attempt(key, fingerprint, first=True)
        while outcome is None:
            time.sleep(backoff.next_delay())
            outcome = self._attempt(key, fingerprint, first=False)
        if isinstance(outcome, _Done):
            return outcome.response
        try:
            response = _as_bytes(fn(), key)
        except BaseException:
            self._release(key, outcome.token)
            raise
        return self._finish(key, outcome.token, response)

    async def aexecute(
        self, key: str, fingerprint: str, fn: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """:meth:`execute` for an async ``fn``; database calls run in a worker thread."""
        backoff = _Backoff(key, self.in_flight_timeout)
        outcome = await asyncio.to_thread(self._attempt, key, fingerprint, True)
        while outcome is None:
            await asyncio.sleep(backoff.next_delay())
            outcome = await asyncio.to_thread(self._attempt, key, fingerprint, False)
        if isinstance(outcome, _Done):
            return outcome.response
        try:
            response = _as_bytes(await fn(), key)
        except BaseException:
            # Also on cancellation (the client went away): a retry should not wait for a timeout.
            await asyncio.to_thread(self._release, key, outcome.token)
            raise
        return await asyncio.to_thread(self._finish, key, outcome.token, response)

    def _attempt(self, key: str, fingerprint: str, first: bool) -> _Outcome | None:
        """One poll: claim the key, or find its stored response; None while another runs it."""
        run, sql = self._backend.run, self._backend.sql
        if not first:
            # Waiting: only read, and never take over; a stale claim is the next request's to
            # take, so a duplicate that waited out the timeout reports it rather than re-running.
            rows = run(sql.read, (key,))[1]
            if rows:
                return _classify(key, fingerprint, rows[0])
        token = uuid.uuid4().hex
        if first:
            params = (key, fingerprint, token, self.in_flight_timeout)
            claimed = run(sql.claim_or_take_over, params)[0]
        else:
            claimed = run(sql.claim, (key, fingerprint, token))[0]
        if claimed == 1:
            return _Claimed(token)
        rows = run(sql.read, (key,))[1]
        # No row: its claimant failed and released it between our two statements; poll again.
        return _classify(key, fingerprint, rows[0]) if rows else None

    def _finish(self, key: str, token: str, response: bytes) -> bytes:
        if self._backend.run(self._backend.sql.finish, (response, key, token))[0] != 1:
            # Our claim outlived in_flight_timeout and another request took it over: the handler
            # ran twice. Its stored response stays; this caller gets what its own run produced.
            logger.warning(
                "idempotency key %r: the claim was taken over after in_flight_timeout=%ss while "
                "the handler still ran, so it ran twice; raise in_flight_timeout above the "
                "longest handler time",
                key,
                self.in_flight_timeout,
            )
        return response

    def _release(self, key: str, token: str) -> None:
        try:
            self._backend.run(self._backend.sql.release, (key, token))
        except Exception:
            # The handler's own exception matters more; the claim expires after the timeout.
            logger.exception("idempotency key %r: could not release the claim", key)

    # -- upkeep --------------------------------------------------------------------------------

    def prune(self, older_than_seconds: float) -> int:
        """Delete finished keys whose response was stored more than ``older_than_seconds`` ago.

        Returns how many were deleted. In-flight claims are left alone. A pruned key counts as
        unused: a late duplicate with it runs the handler again.
        """
        return self._backend.run(self._backend.sql.prune, (float(older_than_seconds),))[0]

    def close(self) -> None:
        """Close pooled database connections (a later call opens new ones)."""
        self._backend.close()

    def __enter__(self) -> Deduplicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Deduplicator({self.url!r}, table={self.table!r})"

    # -- the decorator -------------------------------------------------------------------------

    @overload
    def once(self, fn: Callable[Concatenate[str, P], R], /) -> Callable[Concatenate[str, P], R]: ...

    @overload
    def once(
        self, /, *, scope: str
    ) -> Callable[[Callable[Concatenate[str, P], R]], Callable[Concatenate[str, P], R]]: ...

    def once(self, fn: Any = None, /, *, scope: str | None = None) -> Any:
        """Decorate a function whose first argument is the idempotency key; run it once per key.

        ``@dedup.once`` or ``@dedup.once(scope="billing.charge")``; sync or ``async def``. The
        result must be JSON-serializable and every call, the first included, returns it as
        decoded from JSON (a tuple comes back as a list). The fingerprint is a hash of the other
        arguments as bound to the signature (so ``f(k, 5)`` equals ``f(k, amount=5)``); calling
        with the same key and other arguments raises :class:`IdempotencyKeyReused`. Keys are
        scoped by ``scope``, by default the function's module and qualified name, so two
        functions may receive the same key; give ``scope`` to keep keys valid across renames.
        """

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            name = scope or f"{func.__module__}.{func.__qualname__}"
            signature = inspect.signature(func)
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(key: str, *args: Any, **kwargs: Any) -> Any:
                    fingerprint = _call_fingerprint(signature, key, args, kwargs)

                    async def run() -> bytes:
                        return _dump_result(await func(key, *args, **kwargs), name)

                    return json.loads(await self.aexecute(f"{name}:{key}", fingerprint, run))

                return async_wrapper

            @functools.wraps(func)
            def wrapper(key: str, *args: Any, **kwargs: Any) -> Any:
                fingerprint = _call_fingerprint(signature, key, args, kwargs)

                def run() -> bytes:
                    return _dump_result(func(key, *args, **kwargs), name)

                return json.loads(self.execute(f"{name}:{key}", fingerprint, run))

            return wrapper

        return decorate if fn is None else decorate(fn)


def __getattr__(name: str) -> Any:
    # The middleware lives in its own module; importing it here lazily keeps this one small
    # and lets either module be imported first.
    if name == "IdempotencyMiddleware":
        from .dedup_asgi import IdempotencyMiddleware

        return IdempotencyMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _as_bytes(value: object, key: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise SerializationError(
        f"the function run for idempotency key {key!r} returned {type(value).__name__}; "
        "Deduplicator.execute stores bytes only (use @dedup.once for JSON values)",
        key=key,
    )


def _dump_result(value: object, scope: str) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"{scope} returned a value that is not JSON-serializable ({exc}); @once stores "
            "its result as JSON: return dicts, lists, strings, numbers, booleans or None",
            scope=scope,
        ) from exc


def _call_fingerprint(
    signature: inspect.Signature, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    bound = signature.bind(key, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(list(bound.arguments.items())[1:])
    try:
        text = json.dumps(arguments, sort_keys=True, default=_tagged, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot fingerprint the arguments for idempotency key {key!r} ({exc}); pass "
            "JSON-compatible values, dataclasses, Decimal, UUID, dates, enums, bytes or sets",
            key=key,
        ) from exc
    return hashlib.sha256(text.encode()).hexdigest()


def _tagged(value: Any) -> Any:
    """A stable JSON stand-in for common non-JSON argument types (tagged, so "1" != Decimal(1))."""
    tag = type(value).__qualname__
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {tag: dataclasses.asdict(value)}
    if isinstance(value, enum.Enum):
        return {tag: value.value}
    if isinstance(value, datetime.date | datetime.time):
        return {tag: value.isoformat()}
    if isinstance(value, decimal.Decimal | uuid.UUID | PurePath | datetime.timedelta):
        return {tag: str(value)}
    if isinstance(value, bytes | bytearray):
        return {tag: bytes(value).hex()}
    if isinstance(value, set | frozenset):
        return {tag: sorted(json.dumps(v, sort_keys=True, default=_tagged) for v in value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models
        return {tag: value.model_dump(mode="json")}
    raise TypeError(f"{tag} is not JSON-serializable")
