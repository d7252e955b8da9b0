"""The outlast command: runs, show, cancel, worker; JSON output; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.proc import keys_env

import outlast
from outlast.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200", **keys_env()},
    )
    if check and out.returncode != 0:
        raise AssertionError(f"outlast {' '.join(args)} failed: {out.stderr}")
    return out


@pytest.fixture
def app_with_runs(sqlite_url: str) -> outlast.App:
    from tests.apps import crashy

    crashy.app.use(sqlite_url)
    crashy.app.run(crashy.chain, 3, run_id="done-1")
    crashy.app.enqueue(crashy.chain, 2, run_id="queued-1")
    return crashy.app


def test_runs_lists_and_filters(app_with_runs: outlast.App, sqlite_url: str, tmp_path: Path) -> None:
    out = cli("runs", "--db", sqlite_url, "--json")
    rows = {r["run_id"]: r for r in json.loads(out.stdout)}
    assert rows["done-1"]["status"] == "completed" and rows["done-1"]["result"] == 14
    assert rows["queued-1"]["status"] == "pending"
    only = json.loads(cli("runs", "--db", sqlite_url, "--status", "pending", "--json").stdout)
    assert [r["run_id"] for r in only] == ["queued-1"]
    table = cli("runs", "--db", sqlite_url).stdout
    assert "done-1" in table and "completed" in table


def test_show_prints_the_step_timeline(app_with_runs: outlast.App, sqlite_url: str) -> None:
    data = json.loads(cli("show", "done-1", "--db", sqlite_url, "--json").stdout)
    assert [s["key"] for s in data["steps"]] == ["work:1", "work:2", "work:3"]
    assert all(s["attempts"] == 1 and s["duration"] is not None for s in data["steps"])
    text = cli("show", "done-1", "--db", sqlite_url).stdout
    assert "work" in text and "completed" in text


def test_show_and_runs_json_name_a_forks_origin_and_hide_the_frontier(
    app_with_runs: outlast.App, sqlite_url: str
) -> None:
    # a completed run keeps no frontier (only runs that may run again need it)
    assert '"frontier"' not in (app_with_runs.store.get_run("done-1").stats or "")
    app_with_runs.fork("done-1", 2, new_run_id="fork-1").result(timeout=20)
    data = json.loads(cli("show", "fork-1", "--db", sqlite_url, "--json").stdout)
    assert (data["forked_from"], data["forked_at"], data["result"]) == ("done-1", "2", 14)
    assert "frontier" not in data["stats"] and "forked_from" not in data["stats"]
    rows = {r["run_id"]: r for r in json.loads(cli("runs", "--db", sqlite_url, "--json").stdout)}
    assert rows["fork-1"]["forked_from"] == "done-1" and rows["done-1"]["forked_from"] is None
    assert all("frontier" not in r["stats"] for r in rows.values())
    assert "forked from done-1 at checkpoint 2" in cli("show", "fork-1", "--db", sqlite_url).stdout


def test_cancel_then_worker_skips_it(app_with_runs: outlast.App, sqlite_url: str, tmp_path: Path) -> None:
    assert "cancelled: queued-1" in cli("cancel", "queued-1", "--db", sqlite_url).stdout
    assert "already ended" in cli("cancel", "queued-1", "--db", sqlite_url).stdout
    app_with_runs.enqueue("chain", 1, run_id="queued-2")
    out = cli("worker", "tests.apps.crashy:app", "--db", sqlite_url, "--burst")
    assert "1 run(s) executed" in out.stderr
    assert app_with_runs.get_run("queued-2").status == "completed"
    assert app_with_runs.get_run("queued-1").status == "cancelled"


def test_errors_are_one_clear_line(sqlite_url: str) -> None:
    open_store(sqlite_url).close()  # an empty outlast database (show never creates one)
    out = cli("show", "nope", "--db", sqlite_url, check=False)
    assert out.returncode == 1 and "run 'nope' not found" in out.stderr
    out = cli("runs", "--db", "mysql://x", check=False)
    assert out.returncode == 1 and "bad store URL" in out.stderr
    out = cli("worker", "nomodule:app", "--db", sqlite_url, check=False)
    assert out.returncode == 2 and "cannot import" in out.stderr


def _reference() -> str:
    """docs/cli.md as generated from the real --help of every command."""
    from click.testing import CliRunner

    from outlast.cli import main

    runner = CliRunner()
    parts = ["# outlast command line\n\nGenerated from `outlast COMMAND --help` by tests/test_cli.py "
             "(run with `OUTLAST_REGEN_DOCS=1` to rewrite it).\n"]
    for name in sorted(main.commands):
        out = runner.invoke(main, [name, "--help"], prog_name="outlast", terminal_width=100)
        assert out.exit_code == 0, out.output
        parts.append(f"\n## outlast {name}\n\n```\n{out.output.rstrip()}\n```\n")
    return "".join(parts)


def test_every_command_is_documented_from_its_help() -> None:
    from outlast.cli import main

    for name, command in main.commands.items():
        assert command.help, f"outlast {name} has no help"
    doc = ROOT / "docs" / "cli.md"
    text = _reference()
    if os.environ.get("OUTLAST_REGEN_DOCS") == "1":
        doc.write_text(text)
    assert doc.read_text() == text, "docs/cli.md is stale: run OUTLAST_REGEN_DOCS=1 pytest tests/test_cli.py"
