"""Many runs: ``outlast runs --after`` pages by keyset, ``outlast prune --batch`` deletes in
batches and resumes; the scale migration leaves an older database's runs claimable (both
stores). The figures at a million runs come from ``bench/scale.py``."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from outlast.cli import main
from outlast.store import NewRun, Store, open_store
from outlast.store.sqlite_schema import MIGRATIONS

LONG = 60.0
ROOT = Path(__file__).resolve().parent.parent


def _finished(store: Store, n: int, workflow: str = "wf") -> list[str]:
    ids = []
    for i in range(n):
        run, _ = store.create_run(NewRun(f"{workflow}-{i:03}", workflow, b"", "h"))
        [claimed] = store.claim("w", LONG, run_id=run.run_id)
        store.finish(claimed.run_id, claimed.epoch, "failed" if i % 3 == 0 else "completed")
        ids.append(run.run_id)
        time.sleep(0.002)  # distinct creation times
    return ids


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_runs_pages_by_keyset_with_filters(store: Store, store_url: str) -> None:
    a = _finished(store, 7, "a")
    _finished(store, 3, "b")
    seen: list[str] = []
    after: list[str] = []
    while True:
        page = json.loads(
            _cli("runs", "--db", store_url, "--workflow", "a", "--limit", "3", "--json", *after)
        )
        seen += [r["run_id"] for r in page]
        if len(page) < 3:
            break
        after = ["--after", page[-1]["run_id"]]
    assert seen == a[::-1]  # newest first, each once, workflow b left out
    failed = json.loads(
        _cli(
            "runs",
            "--db",
            store_url,
            "--status",
            "failed",
            "--workflow",
            "a",
            "--limit",
            "2",
            "--after",
            a[6],
            "--json",
        )
    )
    assert [r["run_id"] for r in failed] == [a[3], a[0]]


def test_runs_after_an_unknown_id_says_so(store: Store, store_url: str) -> None:
    result = CliRunner().invoke(main, ["runs", "--db", store_url, "--after", "nope"])
    assert result.exit_code != 0
    assert "'nope' not found" in str(result.exception)


def test_prune_goes_in_batches_and_resumes(store: Store, store_url: str) -> None:
    ids = _finished(store, 7)
    live, _ = store.create_run(NewRun("live", "wf", b"", "h"))
    assert store.prune(time.time() + 10, limit=3) == 3  # an earlier prune, interrupted
    out = _cli("prune", "--db", store_url, "--older-than", "0s", "--batch", "2")
    assert "pruned 4 run(s)" in out
    assert all(store.get_run(r) is None for r in ids)
    assert store.get_run(live.run_id) is not None


def test_an_older_sqlite_database_gains_the_scale_indexes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE outlast_schema (version INTEGER NOT NULL, description TEXT, applied_at REAL)"
    )
    for migration in MIGRATIONS[:4]:
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO outlast_schema VALUES (?, ?, 0)",
            (migration.version, migration.description),
        )
    conn.commit()
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        store.create_run(NewRun("r", "wf", b"", "h"))
        assert [r.run_id for r in store.claim("w", LONG)] == ["r"]
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as check:
        names = {
            row[0]
            for row in check.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    assert {"outlast_runs_live", "outlast_runs_status", "outlast_runs_ended"} <= names
    assert "outlast_runs_runnable" not in names


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_scale_bench_runs_end_to_end(pg_server: str) -> None:
    """``bench/scale.py`` at a tiny size (the figures come from a million runs and more)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--runs", "20000", "--batch", "1000",
         "--url", pg_server],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for figure in ("get_run", "outlast runs --status failed", "claim, nothing runnable",
                   "prune --batch 1000: 20,000 runs", "enqueue-to-start during the prune"):
        assert figure in proc.stdout, proc.stdout
