"""Opening a SQLite file for reading only, and saying clearly when it cannot be read.

Commands that only read (``outlast runs``, ``show``, ``queues``) must never create a file,
add outlast's tables to another application's database or switch it to WAL; and a database
that outlast cannot write (a read-only file or folder) must still serve what is stored in it.
So the read-only path opens with ``mode=ro``, checks that outlast's schema is there, and
never migrates. A WAL database in a folder where SQLite cannot create its ``-shm`` file is
opened ``immutable`` (nothing can write there either; a ``-wal`` file left beside it by a
crash is then not read, so its last steps may be missing from what is shown).

Damage (garbage written into the file) shows up as "file is not a database" or "database
disk image is malformed", often only on the page a query happens to touch: the read-only open
runs ``PRAGMA quick_check`` on files up to :data:`CHECK_LIMIT` bytes so that a damaged
database is reported as such instead of half-shown.
"""

from __future__ import annotations

import os
import sqlite3
import time
from urllib.parse import parse_qsl, quote, unquote

from ..errors import ConfigurationError

#: The page size of a new database file (existing files keep theirs). On 4 KB pages (SQLite's
#: default) the blob table's rows of 1-2 KB (2 KB messages, compressed or not) leave much of
#: each page empty; 8 KB pages hold them with little waste, grow by at most 1.3x the unique
#: payload per conversation turn, and cost 11-22% less CPU per step than 16 KB pages, whose
#: empty database is also twice as large (bench/disk_size.py, bench/step_overhead.py;
#: docs/benchmarks.md). ``?page_size=N`` in the URL chooses another for a new file.
PAGE_SIZE = 8192


def page_size(given: str | None, url: str) -> int:
    """The page size for a new file: ``given`` (from the URL) checked, else :data:`PAGE_SIZE`."""
    if given is None:
        return PAGE_SIZE
    try:
        size = int(given)
    except ValueError:
        size = 0
    if size < 512 or size > 65536 or size & (size - 1):
        raise ConfigurationError(
            f"bad page_size={given!r} in {url!r}: a power of two from 512 to 65536 "
            f"(default {PAGE_SIZE}); it applies when the file is created"
        )
    return size

#: files up to this size are checked (PRAGMA quick_check) when opened read-only
CHECK_LIMIT = 64 * 1024 * 1024

DAMAGE_WORDS = ("malformed", "not a database", "corrupt", "disk image")


def is_damage(exc: BaseException) -> bool:
    """True when a SQLite error says the file's contents are damaged."""
    return isinstance(exc, sqlite3.DatabaseError) and any(w in str(exc) for w in DAMAGE_WORDS)


def damaged(path: str, detail: object) -> ConfigurationError:
    """The error for a database whose file is damaged, with how to check it."""
    return ConfigurationError(
        f"the outlast database at {path} is damaged ({detail}). Check it with: "
        f"sqlite3 {path} 'PRAGMA integrity_check'. Restore it from a backup (see "
        "docs/deployment.md), or try sqlite3's .recover to save what is left"
    )


def missing(path: str, why: str = "") -> ConfigurationError:
    """The error for a read-only open of something that is not an outlast database."""
    return ConfigurationError(
        f"no outlast database at {path}{why}. Check the path (--db or $OUTLAST_DATABASE_URL); "
        "a database is created by the first app.run/start/enqueue or `outlast worker`"
    )


def writable(path: str) -> bool:
    """Whether this process may write the file and create its -wal/-shm files beside it."""
    if path == ":memory:" or not os.path.exists(path):
        return True
    folder = os.path.dirname(os.path.abspath(path))
    return os.access(path, os.W_OK) and os.access(folder, os.W_OK)


def _connect(path: str, busy_ms: int, flags: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        f"file:{quote(os.path.abspath(path))}?{flags}", uri=True, isolation_level=None,
        check_same_thread=False, timeout=busy_ms / 1000,
    )
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    return conn


def _schema_version(conn: sqlite3.Connection, path: str) -> int:
    try:
        row = conn.execute("SELECT max(version) FROM outlast_schema").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise missing(path, " (the file is a SQLite database without outlast's tables)") from None
        raise
    return int(row[0] or 0)


def connect_readonly(path: str, busy_ms: int) -> tuple[sqlite3.Connection, int]:
    """Open ``path`` for reading only; return the connection and its schema version.

    Raises ConfigurationError: no such file, not an outlast database, or damaged.
    """
    if path == ":memory:" or not os.path.isfile(path):
        raise missing(path)
    conn = _connect(path, busy_ms, "mode=ro")
    try:
        try:
            version = _schema_version(conn, path)
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc) and "readonly" not in str(exc):
                raise
            # WAL mode, and SQLite may not create the -shm file here (a read-only folder).
            conn.close()
            conn = _connect(path, busy_ms, "mode=ro&immutable=1")
            version = _schema_version(conn, path)
        if os.path.getsize(path) <= CHECK_LIMIT:
            rows = conn.execute("PRAGMA quick_check(5)").fetchall()
            if rows != [("ok",)]:
                raise damaged(path, "; ".join(str(r[0]) for r in rows))
    except sqlite3.DatabaseError as exc:
        conn.close()
        if is_damage(exc):
            raise damaged(path, exc) from None
        raise ConfigurationError(f"cannot read the SQLite database at {path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn, version


def enable_wal(conn: sqlite3.Connection, busy_ms: int) -> None:
    """Switch the file to WAL. SQLite refuses at once with "database is locked", without
    waiting out busy_timeout, while another connection switches the same file: retry."""
    deadline = time.monotonic() + busy_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        raise ConfigurationError(
            f"bad SQLite URL {url!r}: use sqlite:///relative.db, sqlite:////absolute/path.db "
            "or sqlite:///:memory:"
        )
    path, _, query = rest[1:].partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    known = {"synchronous", "busy_timeout", "page_size"}
    unknown = set(options) - known
    if unknown:
        raise ConfigurationError(
            f"unknown SQLite URL option(s) {sorted(unknown)} in {url!r}; known: {sorted(known)}"
        )
    if not path:
        raise ConfigurationError(f"bad SQLite URL {url!r}: no file path")
    return unquote(path), options
