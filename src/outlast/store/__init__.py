"""Storage backends. :func:`open_store` picks one from a URL.

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``;
  query options: ``synchronous=normal|full`` (default normal: survives process crashes;
  full: survives power loss), ``busy_timeout`` (ms, default 30000).
- ``postgresql://user@host:5432/db`` (also ``postgres://``); query options: ``schema``
  (default ``outlast``), ``pool_min``, ``pool_max``; needs ``pip install 'outlast[postgres]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    STATUSES,
    TERMINAL,
    Entry,
    NewRun,
    Page,
    QueueSpec,
    QueueStats,
    RunRecord,
    Store,
)

if TYPE_CHECKING:
    from ..encryption import Encryption

__all__ = [
    "STATUSES",
    "TERMINAL",
    "Entry",
    "NewRun",
    "Page",
    "QueueSpec",
    "QueueStats",
    "RunRecord",
    "Store",
    "open_store",
]


def open_store(url: str, *, readonly: bool = False, encryption: Encryption | None = None) -> Store:
    """Open (and migrate) the store named by ``url``; raises ConfigurationError for a bad URL.

    ``readonly=True`` (commands that only read): never create, migrate or convert anything;
    raise ConfigurationError ("no outlast database at ...") when there is none. SQLite opens
    the file with ``mode=ro``; PostgreSQL skips migrations and needs the schema to exist.
    ``encryption`` (default: ``$OUTLAST_ENCRYPTION_KEYS``, if set) seals every payload.
    """
    from ..errors import ConfigurationError

    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"bad store URL {url!r}: expected sqlite:///path/to/file.db, sqlite:///:memory: "
            "or postgresql://user@host:5432/dbname"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return _sealed(SQLiteStore(url, readonly=readonly), encryption)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                f"the PostgreSQL store needs psycopg 3: run pip install 'outlast[postgres]' ({exc})"
            ) from exc
        return _sealed(PostgresStore(url, readonly=readonly), encryption)
    raise ConfigurationError(
        f"bad store URL {url!r}: unknown scheme {scheme!r}; use sqlite:/// or postgresql://"
    )


def _sealed(store: Store, encryption: Encryption | None) -> Store:
    """``store`` with its payloads encrypted under ``encryption`` (default: the keys in
    ``$OUTLAST_ENCRYPTION_KEYS``, if any)."""
    from ..encryption import from_env

    encryption = encryption if encryption is not None else from_env()
    if encryption is None:
        return store
    from .sealed import SealedStore

    return SealedStore(store, encryption)
