"""SQLite's driver errors classified at the store boundary (see :mod:`outlast.store.faults`)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..errors import StoreError
from .faults import disk_full, fault

# SQLite primary result codes (https://sqlite.org/rescode.html) that may clear by themselves.
_BUSY, _LOCKED, _NOMEM, _IOERR, _INTERRUPT, _FULL, _PROTOCOL = 5, 6, 7, 10, 9, 13, 15
_TRANSIENT_CODES = frozenset({_BUSY, _LOCKED, _NOMEM, _IOERR, _INTERRUPT, _PROTOCOL})
_DAMAGED_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB


def classify(store: Any, exc: BaseException) -> StoreError | None:
    """Driver errors as StoreError: busy, locked, I/O and out-of-memory faults are
    transient, a full disk is transient with its own message, everything else the
    database refuses (a value it cannot hold, a constraint, a read-only or damaged file)
    is permanent."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == _FULL or (primary is None and "full" in str(exc)):
            return disk_full(store, exc)
        if primary in _DAMAGED_CODES:
            return fault(store, exc, transient=False, reason=(
                f"{exc}: the database file is damaged; check it with "
                f"`sqlite3 {store.path} 'PRAGMA integrity_check'` and restore a backup"
            ))
        if primary in _TRANSIENT_CODES or (
            primary is None and isinstance(exc, sqlite3.OperationalError)
            and ("locked" in str(exc) or "busy" in str(exc))
        ):
            return fault(store, exc, transient=True)
        return fault(store, exc, transient=False)
    if isinstance(exc, UnicodeError | OverflowError):  # a value SQLite cannot bind
        return fault(store, exc, transient=False)
    return None
