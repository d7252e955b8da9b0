"""PostgreSQL connections: which faults are worth retrying, and a pool that reconnects
promptly after an outage. Used by :class:`~outlast.store.postgres.PostgresStore`."""

from __future__ import annotations

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
