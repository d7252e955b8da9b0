"""A database written by outlast 0.1.0 (tests/data/v010.db, made by tests/data/make_v010_db.py)
opens with today's code, reads every value, with or without encryption configured, and a run
suspended in it continues."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import outlast
from outlast.store import open_store

DATA = Path(__file__).parent / "data" / "v010.db"


def app_on(path: Path, encryption: outlast.Encryption | None) -> tuple[outlast.App, Any]:
    app = outlast.App(f"sqlite:///{path}", encryption=encryption)

    @app.step
    def add(a: int, b: int) -> int:
        return a + b

    @app.workflow(name="waiting")
    def waiting(ctx: outlast.Context, x: int) -> int:
        first = add(x, 10)
        got = ctx.wait_for("go", timeout=3600)
        return first + int(got["n"]) + add(first, 0)

    return app, waiting


def encryptions() -> list[Any]:
    out: list[Any] = [pytest.param(None, id="plain")]
    with contextlib.suppress(outlast.errors.ConfigurationError):  # without cryptography
        out.append(pytest.param(outlast.Encryption({"k1": os.urandom(32)}), id="encrypted"))
    return out


@pytest.mark.parametrize("encryption", encryptions())
def test_a_010_database_reads_whole_and_continues(
    tmp_path: Path, encryption: outlast.Encryption | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)
    path = tmp_path / "v010.db"
    shutil.copy(DATA, path)
    app, waiting = app_on(path, encryption)
    runs = {r.run_id: r for r in app.list_runs()}
    assert {k: r.status for k, r in runs.items()} == {
        "steps-1": "completed", "stashed-1": "completed", "failing-1": "failed",
        "waiting-1": "suspended"}
    steps = app.get_run("steps-1", steps=True)
    assert steps.result == {"sum": 2, "big": 5011, "text": "0.1.0 blob xxxxxxxxxx"}
    assert [s.name for s in steps.steps] == ["add", "big", "big"]
    # every journal entry's value, the large one from its blob
    store = app.store
    for run_id in runs:
        for entry in store.load_journal(run_id):
            if entry.output is not None and entry.status == "completed":
                outlast.serde.loads(entry.output, blobs=store.get_blobs)
    big = [e for e in store.load_journal("steps-1") if e.key == "big:1"][0]
    assert outlast.serde.loads(big.output, blobs=store.get_blobs) == "0.1.0 blob " + "x" * 5000
    assert app.get_run("stashed-1").result == 9
    failed = app.get_run("failing-1", steps=True)
    assert "0.1.0 failure" in str(failed.error)
    assert [s.status for s in failed.steps] == ["completed", "failed"]
    # the suspended run continues under today's code: its first step is not run again
    app.send("waiting-1", "go", {"n": 2})
    assert app.run(waiting, 5, run_id="waiting-1") == 15 + 2 + 15
    info = app.get_run("waiting-1", steps=True)
    assert [s.name for s in info.steps].count("add") == 2
    app.close()
    # what today's code wrote into the old file reads back as well
    again = open_store(f"sqlite:///{path}", encryption=encryption)
    assert again.get_run("waiting-1").status == "completed"  # type: ignore[union-attr]
    again.close()


def test_the_blob_table_becomes_a_rowid_table_keeping_every_blob(tmp_path: Path) -> None:
    # migration 5: blobs in insertion order (full pages), same rows, hash still unique
    import sqlite3

    path = tmp_path / "v010.db"
    shutil.copy(DATA, path)

    def blobs() -> tuple[list[tuple[Any, ...]], str]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT hash, data FROM outlast_blobs ORDER BY hash").fetchall()
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'outlast_blobs'")
            return rows, sql.fetchone()[0]

    before, old_sql = blobs()
    assert before and "WITHOUT ROWID" in old_sql
    open_store(f"sqlite:///{path}").close()
    after, new_sql = blobs()
    assert after == before and "WITHOUT ROWID" not in new_sql and "UNIQUE" in new_sql
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # the writers' statement
        conn.execute("INSERT INTO outlast_blobs (hash, data) VALUES (?, ?) ON CONFLICT DO NOTHING",
                     (before[0][0], b"again"))
    assert blobs()[0] == before  # stored once: the hash is still unique
