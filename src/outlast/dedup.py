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
- **A key lives in a scope.** ``execute(..., scope=parts)`` keeps keys apart per scope: the
  middleware's scope is the method, the path and the caller (a digest of the ``Authorization``
  header unless told otherwise), ``@once``'s is the function. The row is found by a SHA-256
  digest of the parts and the key encoded as one JSON array, so no two different (scope, key)
  pairs share a row, whatever characters they contain, and a key of any length fits.

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
import dataclasses
import datetime
import decimal
import enum
import functools
import hashlib
import inspect
import json
import logging
import math
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, overload

from .dedup_store import Backend, Postgres, SQLite
from .errors import ConfigurationError, OutlastError, SerializationError, Timeout

if TYPE_CHECKING:
    from .dedup_asgi import IdempotencyMiddleware
    from .encryption import Encryption

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


class Deduplicator:
    """Idempotency keys in the service's own database: one execution per key, stored responses.

    ``url`` is ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (option
    ``busy_timeout`` in ms) or ``postgresql://user@host:5432/dbname``. The table (default
    ``outlast_idempotency``) is created if missing and holds, per scoped key: a digest of the
    scope and key, the request fingerprint, the state (in flight or done), the response bytes and
    the created, claimed and finished times (the database's clock).

    ``in_flight_timeout`` (seconds) bounds how long a duplicate waits for a request in progress,
    and is the age past which an unfinished claim is taken for a crash and may be taken over; it
    must exceed the longest handler run. ``ttl`` (seconds), when given, is how long a stored
    response is honoured: after it the key counts as unused (use :meth:`prune` to delete rows).
    Both must be finite and positive (``ValueError`` otherwise).

    ``encryption`` (an :class:`outlast.Encryption`; default: the keys in
    ``$OUTLAST_ENCRYPTION_KEYS``, if set) seals each stored response (AES-256-GCM, bound to its
    table and row), as outlast's own store seals payloads; responses stored in the clear are
    still read (docs/security.md).

    See the module docstring for the exact guarantee. Safe to share between threads; each process
    opens its own connections. A context manager: :meth:`close` (also run when the object is
    collected or the interpreter exits) closes its pooled connections.
    """

    def __init__(
        self,
        url: str,
        *,
        table: str = "outlast_idempotency",
        in_flight_timeout: float = 60.0,
        ttl: float | None = None,
        encryption: Encryption | None = None,
    ) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(
                f"bad table name {table!r}: use letters, digits and underscores (at most 51)"
            )
        self.in_flight_timeout = _seconds("in_flight_timeout", in_flight_timeout)
        self.ttl = None if ttl is None else _seconds("ttl", ttl)
        scheme = url.split("://", 1)[0].lower() if isinstance(url, str) else ""
        self._backend: Backend
        if scheme == "sqlite" and url.startswith("sqlite:///"):
            self._backend = SQLite(url, table)
        elif scheme in ("postgresql", "postgres"):
            self._backend = Postgres(url, table)
        else:
            raise ConfigurationError(
                f"bad dedup URL {url!r}: expected sqlite:///path/to/file.db "
                "or postgresql://user@host:5432/dbname"
            )
        self.url = url
        self.table = table
        if encryption is None:
            from .encryption import from_env

            encryption = from_env()
        self.encryption = encryption
        # Closes the pool when this object is collected or at interpreter exit, whichever is
        # first; it holds the backend, not self, so it keeps nothing alive.
        self._finalizer = weakref.finalize(self, self._backend.close)
        self._backend.create_table()

    # -- the core ------------------------------------------------------------------------------

    def execute(
        self,
        key: str,
        fingerprint: str,
        fn: Callable[[], bytes],
        *,
        scope: Sequence[str] = (),
    ) -> bytes:
        """Run ``fn`` once for ``key`` in ``scope`` and return its bytes; a duplicate gets them.

        ``scope`` (strings, for instance a tenant id and an endpoint) keeps the same key apart
        for different scopes; the parts and the key are stored as one digest, so their length
        and characters do not matter. A concurrent duplicate waits for the first call's response
        (up to ``in_flight_timeout``, then :class:`IdempotencyKeyInFlight`). Another
        ``fingerprint`` for a used key raises :class:`IdempotencyKeyReused`. If ``fn`` raises,
        the claim is deleted and the exception propagates, so a retry runs ``fn`` again. If
        storing the response fails, that error propagates and the claim stays in flight, as
        after a crash (see the module docstring).
        """
        row = _row_key(scope, key)
        backoff = _Backoff(key, self.in_flight_timeout)
        outcome = self._attempt(row, key, fingerprint, first=True)
        while outcome is None:
            time.sleep(backoff.next_delay())
            outcome = self._attempt(row, key, fingerprint, first=False)
        if isinstance(outcome, _Done):
            return outcome.response
        try:
            response = _as_bytes(fn(), key)
        except BaseException:
            self._release(row, key, outcome.token)
            raise
        return self._finish(row, key, outcome.token, response)

    async def aexecute(
        self,
        key: str,
        fingerprint: str,
        fn: Callable[[], Awaitable[bytes]],
        *,
        scope: Sequence[str] = (),
    ) -> bytes:
        """:meth:`execute` for an async ``fn``; database calls run in a worker thread."""
        row = _row_key(scope, key)
        backoff = _Backoff(key, self.in_flight_timeout)
        outcome = await asyncio.to_thread(self._attempt, row, key, fingerprint, True)
        while outcome is None:
            await asyncio.sleep(backoff.next_delay())
            outcome = await asyncio.to_thread(self._attempt, row, key, fingerprint, False)
        if isinstance(outcome, _Done):
            return outcome.response
        try:
            response = _as_bytes(await fn(), key)
        except BaseException:
            # Also on cancellation (the client went away): a retry should not wait for a timeout.
            await asyncio.to_thread(self._release, row, key, outcome.token)
            raise
        return await asyncio.to_thread(self._finish, row, key, outcome.token, response)

    def _attempt(self, row: str, key: str, fingerprint: str, first: bool) -> _Outcome | None:
        """One poll: claim the row, or find its stored response; None while another runs it."""
        run, sql = self._backend.run, self._backend.sql
        if not first:
            # Waiting: only read, and never take over; a stale claim is the next request's to
            # take, so a duplicate that waited out the timeout reports it rather than re-running.
            rows = run(sql.read, (row,))[1]
            if rows:
                return self._classify(row, key, fingerprint, rows[0])
        token = uuid.uuid4().hex
        if not first:
            claimed = run(sql.claim, (row, fingerprint, token))[0]
        elif self.ttl is None:
            params: tuple[Any, ...] = (row, fingerprint, token, self.in_flight_timeout)
            claimed = run(sql.claim_or_take_over, params)[0]
        else:
            params = (row, fingerprint, token, self.in_flight_timeout, self.ttl)
            claimed = run(sql.claim_or_take_over_expired, params)[0]
        if claimed == 1:
            return _Claimed(token)
        rows = run(sql.read, (row,))[1]
        # No row: its claimant failed and released it between our two statements; poll again.
        return self._classify(row, key, fingerprint, rows[0]) if rows else None

    def _classify(self, row: str, key: str, fingerprint: str,
                  stored: tuple[str, str, bytes | None]) -> _Done | None:
        done = _classify(key, fingerprint, stored)
        if done is None or done.response[:2] != b"\xffe":
            return done
        from .encryption import open_sealed

        what = f"the stored response of idempotency key {key!r}"
        return _Done(open_sealed(self.encryption, done.response, self._aad(row), what))

    def _aad(self, row: str) -> bytes:
        return b"outlast dedup\x00" + self.table.encode() + b"\x00" + row.encode()

    def _finish(self, row: str, key: str, token: str, response: bytes) -> bytes:
        stored = response
        if self.encryption is not None:
            stored = self.encryption.seal(response, self._aad(row))
        if self._backend.run(self._backend.sql.finish, (stored, row, token))[0] != 1:
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

    def _release(self, row: str, key: str, token: str) -> None:
        try:
            self._backend.run(self._backend.sql.release, (row, token))
        except Exception:
            # The handler's own exception matters more; the claim expires after the timeout.
            logger.exception("idempotency key %r: could not release the claim", key)

    # -- upkeep --------------------------------------------------------------------------------

    def prune(self, older_than_seconds: float) -> int:
        """Delete finished keys whose response was stored more than ``older_than_seconds`` ago.

        Returns how many were deleted. In-flight claims are left alone. A pruned key counts as
        unused: a late duplicate with it runs the handler again.
        """
        if (
            isinstance(older_than_seconds, bool)
            or not isinstance(older_than_seconds, int | float)
            or not math.isfinite(older_than_seconds)
            or older_than_seconds < 0
        ):
            raise ValueError(
                f"prune(older_than_seconds={older_than_seconds!r}): give a finite number of "
                "seconds, 0 or more"
            )
        return self._backend.run(self._backend.sql.prune, (float(older_than_seconds),))[0]

    def close(self) -> None:
        """Close pooled database connections; safe to call twice (a later call opens new ones)."""
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

                    stored = await self.aexecute(key, fingerprint, run, scope=("once", name))
                    return json.loads(stored)

                return async_wrapper

            @functools.wraps(func)
            def wrapper(key: str, *args: Any, **kwargs: Any) -> Any:
                fingerprint = _call_fingerprint(signature, key, args, kwargs)

                def run() -> bytes:
                    return _dump_result(func(key, *args, **kwargs), name)

                return json.loads(self.execute(key, fingerprint, run, scope=("once", name)))

            return wrapper

        return decorate if fn is None else decorate(fn)


def __getattr__(name: str) -> Any:
    # The middleware lives in its own module; importing it here lazily keeps this one small
    # and lets either module be imported first.
    if name == "IdempotencyMiddleware":
        from .dedup_asgi import IdempotencyMiddleware

        return IdempotencyMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _row_key(scope: Sequence[str], key: str) -> str:
    """The row's key: a SHA-256 digest of the scope parts and the key as one JSON array.

    A JSON array cannot be spelled two ways by moving a separator between parts (``["POST
    /a", "x:k"]`` is not ``["POST /a:x", "k"]``), and the digest has one length whatever the
    key's, so a long key cannot exceed an index limit.
    """
    if isinstance(scope, str) or not all(isinstance(p, str) for p in (*scope, key)):
        raise TypeError(
            f"idempotency key {key!r} and scope {scope!r}: give a string key and a sequence of "
            "strings as scope"
        )
    text = json.dumps([*scope, key], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _seconds(name: str, value: object) -> float:
    """``value`` as seconds, refused unless a finite positive number."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be a finite positive number of seconds, got {value!r}"
        )
    return float(value)


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
