"""What `outlast runs/show` print: user strings literally (no rich markup, no emoji codes),
whole run ids, a completed run's result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import outlast

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": str(columns)},
    )


@pytest.fixture
def marked_up(sqlite_url: str) -> str:
    app = outlast.App(sqlite_url)

    @app.step
    def boom(text: str) -> str:
        raise ValueError(f"bad [/] {text} [bold]x[/bold] :email:")

    @app.workflow
    def echo(ctx: outlast.Context, text: str) -> str:
        return text

    @app.workflow
    def fails(ctx: outlast.Context, text: str) -> str:
        return boom(text)

    app.run(echo, "[red]payload[/] :email:", run_id="a[/]b")
    app.run(echo, "plain", run_id="camp:email:1")
    with pytest.raises(ValueError):
        app.run(fails, "[/]", run_id="f[/]:smile:")
    app.close()
    return sqlite_url


def test_runs_prints_ids_literally(marked_up: str) -> None:
    out = cli("runs", "--db", marked_up)
    assert out.returncode == 0, out.stderr
    for rid in ("a[/]b", "camp:email:1", "f[/]:smile:"):
        assert rid in out.stdout, out.stdout
    assert "✉" not in out.stdout and "😄" not in out.stdout


def test_show_prints_ids_errors_and_results_literally(marked_up: str) -> None:
    out = cli("show", "a[/]b", "--db", marked_up)
    assert out.returncode == 0, out.stderr
    assert "a[/]b" in out.stdout
    assert 'result: "[red]payload[/] :email:"' in out.stdout
    out = cli("show", "f[/]:smile:", "--db", marked_up)
    assert out.returncode == 0, out.stderr
    assert "f[/]:smile:" in out.stdout
    assert "ValueError: bad [/] [/] [bold]x[/bold] :email:" in out.stdout
    out = cli("show", "camp:email:1", "--db", marked_up)
    assert out.returncode == 0 and "camp:email:1" in out.stdout and 'result: "plain"' in out.stdout


def test_the_run_id_column_is_never_truncated(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)

    @app.workflow
    def quick(ctx: outlast.Context) -> int:
        return 1

    long_id = "customer-onboarding-2026-11-30-" + "x" * 30 + "-end"
    app.run(quick, run_id=long_id)
    app.close()
    out = cli("runs", "--db", sqlite_url, columns=60)
    assert out.returncode == 0, out.stderr
    assert long_id in out.stdout, out.stdout
