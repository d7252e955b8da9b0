"""PostgreSQL connections: which faults are worth retrying, a pool that reconnects
promptly after an outage, and when the server was last unreachable. Used by :class:`~outlast.store.postgres.PostgresStore`."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from ..errors import StoreError
from .faults import disk_full, fault

Conn = psycopg.Connection[tuple[Any, ...]]

# connection-level failures (08xxx), a server shutting down or starting up, and a session the
# server ended for idling in a transaction (its transaction was rolled back)
RETRY_SQLSTATES = ("57P01", "57P02", "57P03", "25P03")
# faults that certainly left nothing applied: the statement (and its transaction) rolled back
UNSENT = (PoolTimeout, psycopg.errors.TransactionRollback, psycopg.errors.LockNotAvailable)


def transient(exc: BaseException) -> bool:
    """A fault of the connection or the server's availability, worth retrying."""
    if isinstance(exc, UNSENT):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith("08") or state in RETRY_SQLSTATES
    return False


class Reconnect(AttemptWithBackoff):
    """Reconnection attempts at most a second apart.

    psycopg_pool doubles the delay from 1 s without bound (1, 2, 4, 8, 16 s...): after a 20 s
    outage its next attempt came 11 s after the server was back, the fleet sat idle, and
    journal writes waiting for a connection gave up at the end of ``retry_for`` and had their
    steps run again."""

    INITIAL_DELAY = 0.1

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, 1.0)


class Pool(ConnectionPool[Conn]):
    """A connection pool that reconnects promptly after an outage (see :class:`Reconnect`)."""

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        # psycopg_pool's own hook point: the attempt object carries the backoff
        super()._add_connection(attempt or Reconnect(timeout=self.reconnect_timeout), growing)


class FaultMarks:
    """When the server was last unreachable, as a worker needs to know after an outage (a
    mixin of :class:`~outlast.store.postgres.PostgresStore`; see outlast.worker: for a
    heartbeat after a fault, a worker leaves alone the leases that ran out since
    ``fault_began``). Times are ``time.monotonic()``; 0.0 means never."""

    #: when an operation of the store (or its session's connection) last met the server
    #: unreachable
    last_fault: float = 0.0
    #: when the latest run of faults began: the first fault after an operation succeeded
    fault_began: float = 0.0
    #: when an operation last succeeded
    last_ok: float = 0.0

    def note_fault(self) -> None:
        """Record that the server was unreachable just now."""
        now = time.monotonic()
        if self.last_ok >= self.last_fault or not self.fault_began:
            self.fault_began = now
        self.last_fault = now


def classify(store: Any, exc: BaseException) -> StoreError | None:
    """Driver errors as StoreError: connection and availability faults (what ``_run``
    retries) are transient, as are a full disk (53100) and out of memory (53200); every
    other error is the database refusing this operation, permanent."""
    if isinstance(exc, psycopg.Error):
        state = getattr(exc, "sqlstate", None)
        if state == "53100":
            return disk_full(store, exc)
        if transient(exc) or state in ("53200", "53300"):
            return fault(store, exc, transient=True)
        return fault(store, exc, transient=False)
    if isinstance(exc, UnicodeError | OverflowError):  # a value the driver cannot send
        return fault(store, exc, transient=False)
    return None
