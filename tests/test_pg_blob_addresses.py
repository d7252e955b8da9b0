"""PostgreSQL migration 9: blob addresses as uuid, blob_refs keyed by (hash, run_id).

A schema at version 8 (blob hashes as text, as 0.1.0 and every version until this one wrote
them) holding a suspended run whose journal refers to blobs migrates at its first open by
this version: the columns become uuid, the indexes change, and the run continues, reads its
blobs, forks (sharing them) and is pruned (freeing them)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

import outlast
from outlast.store import open_store, postgres
from outlast.worker import Worker

pytestmark = pytest.mark.postgres

BIG = "blob text " * 400  # 4 KB: a blob


def _app(url: str) -> tuple[outlast.App, Any]:
    app = outlast.App(url, hibernate_after=0)

    @app.step
    def big(n: int) -> str:
        return f"{n} {BIG}"

    @app.workflow(name="waiting")
    def waiting(ctx: outlast.Context) -> int:
        text = big(1)
        got = ctx.wait_for("go", timeout=3600)
        return len(text) + len(big(2)) + int(got["n"])

    return app, waiting


def _schema(url: str) -> str:
    return parse_qs(urlsplit(url).query)["schema"][0]


def test_a_version_8_schema_migrates_and_its_runs_continue(
    pg_url: str, pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)
    new = _schema(pg_url)
    old = f"t_{uuid.uuid4().hex[:12]}"
    old_url = f"{pg_server}?schema={old}"
    try:
        # The run, written by today's code in a schema of its own...
        app, waiting = _app(f"{pg_server}?schema={new}")
        app.start(waiting, run_id="w")
        Worker(app, burst=True).run()  # up to its wait: suspended, waiting for "go"
        deadline = time.monotonic() + 30
        while app.get_run("w").status != "suspended":
            assert time.monotonic() < deadline, app.get_run("w")
            time.sleep(0.05)
        app.close()
        # ...copied into a schema made by migrations 1-8, hashes as the text they were.
        with monkeypatch.context() as six:
            six.setattr(postgres, "POSTGRES_MIGRATIONS", postgres.POSTGRES_MIGRATIONS[:8])
            open_store(old_url).close()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            assert _types(conn, old) == {"blobs": "text", "blob_refs": "text"}
            for table in ("runs", "journal"):
                conn.execute(f"INSERT INTO {old}.{table} SELECT * FROM {new}.{table}")
            conn.execute(f"INSERT INTO {old}.blobs SELECT replace(hash::text, '-', ''), data "
                         f"FROM {new}.blobs")
            conn.execute(f"INSERT INTO {old}.blob_refs SELECT run_id, replace(hash::text, '-', '') "
                         f"FROM {new}.blob_refs")
            blobs = conn.execute(f"SELECT hash, data FROM {old}.blobs ORDER BY hash").fetchall()
            assert blobs and all(len(h) == 32 for h, _ in blobs)

        app, waiting = _app(old_url)
        assert app.get_run("w").status == "suspended"  # the store opens: migration 9 runs
        with psycopg.connect(pg_server, autocommit=True) as conn:
            assert _types(conn, old) == {"blobs": "uuid", "blob_refs": "uuid"}
            indexes = {r[0] for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = "
                "'blob_refs'", (old,))}
            assert indexes == {"blob_refs_pkey", "blob_refs_run"}
            after = conn.execute(
                f"SELECT replace(hash::text, '-', ''), data FROM {old}.blobs ORDER BY hash"
            ).fetchall()
        assert [(h, bytes(d)) for h, d in after] == [(h, bytes(d)) for h, d in blobs]
        assert app.store.get_blobs([h for h, _ in blobs]).keys() == {h for h, _ in blobs}
        app.send("w", "go", {"n": 3})
        # the first step is not run again: its value comes from its (migrated) blob
        assert app.run(waiting, run_id="w") == len(f"1 {BIG}") + len(f"2 {BIG}") + 3
        info = app.get_run("w", steps=True)
        assert [s.name for s in info.steps][:1] == ["big"] and info.recoveries == 0
        # a fork shares the blobs (a reference per run), prune frees them with the last run
        app.store.fork_run("w", "w2", 1, None)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            refs = conn.execute(f"SELECT run_id, count(*) FROM {old}.blob_refs GROUP BY run_id "
                                "ORDER BY run_id").fetchall()
            assert [r for r, _ in refs] == ["w", "w2"]
            conn.execute(f"UPDATE {old}.runs SET status = 'completed', ended_at = 1")
        assert app.store.prune(older_than=time.time()) == 2
        with psycopg.connect(pg_server, autocommit=True) as conn:
            left = conn.execute(f"SELECT (SELECT count(*) FROM {old}.blob_refs), "
                                f"(SELECT count(*) FROM {old}.blobs)").fetchone()
        assert left == (0, 0)
        app.close()
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {old} CASCADE")


def _types(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT table_name, data_type FROM information_schema.columns WHERE table_schema = %s "
        "AND column_name = 'hash' AND table_name IN ('blobs', 'blob_refs')", (schema,))
    return {str(t): str(d) for t, d in rows}
