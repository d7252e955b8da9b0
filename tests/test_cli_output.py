"""What `outlast runs/show` print: user strings literally (no rich markup, no emoji codes),
whole run ids, a completed run's result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.proc import keys_env

import outlast

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": str(columns), **keys_env()},
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "tests.apps.crashy:app", "-c", "0"], "Invalid value for '--concurrency' / '-c': 0 is not in the range x>=1"),
        (["worker", "tests.apps.crashy:nope"], "module 'tests.apps.crashy' has no attribute 'nope'"),
        (["serve", "tests.apps.crashy:app", "--port", "80000"], "80000 is not in the range 1<=x<=65535"),
        (["runs", "--limit", "-1"], "-1 is not in the range x>=1"),
        (["runs", "--limit", "0"], "0 is not in the range x>=1"),
        (["demo", "--kill-at", "0"], "0 is not in the range 2<=x<=16"),
        (["demo", "--kill-at", "17"], "17 is not in the range 2<=x<=16"),
    ],
)
def test_bad_options_are_one_line_errors(sqlite_url: str, args: list[str], message: str) -> None:
    out = cli(*args, "--db", sqlite_url)
    assert out.returncode == 2, out
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""


def test_a_paused_run_says_how_to_resolve_it_once(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    crash = [True]

    @app.step(at_most_once=True)
    def charge(amount: int) -> str:
        if crash.pop():
            raise KeyboardInterrupt  # the process "dies" during the effect
        return "ok"

    @app.workflow
    def pay(ctx: outlast.Context) -> str:
        return charge(5)

    with pytest.raises(KeyboardInterrupt):
        app.run(pay, run_id="p1")
    with pytest.raises(outlast.RunPaused) as info:
        app.run(pay, run_id="p1")
    text = str(info.value)
    assert text.count("outlast resolve p1 --redo") == 1, text
    assert text.count("outlast resolve p1 --done JSON") == 1, text
    app.close()


def test_fork_wait_says_what_an_interrupted_graph_waits_for(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.apps import graphy

    monkeypatch.setenv("GRAPHY_LOG", str(tmp_path / "log"))  # nodes run here too: not in the checkout
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "GRAPHY_LOG": str(tmp_path / "log"), **keys_env()}
    graphy.app.use(sqlite_url)
    graphy.app.hibernate_after = 0.0
    try:
        handle = graphy.app.start(graphy.ask, {"topic": "acme"}, run_id="a1")
        with pytest.raises(outlast.Timeout):
            handle.result(timeout=2)
        graphy.app.send("a1", "resume", "yes")
        assert handle.result(timeout=30)["approved"] is True
        proc = subprocess.Popen(
            [sys.executable, "-m", "outlast.cli", "fork", "tests.apps.graphy:app", "a1", "1",
             "--db", sqlite_url, "--run-id", "f1", "--wait"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "run f1 is waiting for event 'resume'" in line, line
        assert '"question": "send it?"' in line and "outlast send f1 resume JSON" in line
        graphy.app.send("f1", "resume", "no")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert '"approved": false' in out.splitlines()[-1]
        assert "waiting for event" not in err  # said once
    finally:
        graphy.app.hibernate_after = 5.0
        graphy.app.close()
