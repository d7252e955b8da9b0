"""Safe evolution (docs/versioning.md): ctx.patched, the replay check, checkpoints, fork, retry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.apps.evolving import build, mark

import outlast
from outlast.cli import main


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "executed"
    monkeypatch.setenv("EVOLVE_LOG", str(path))
    return path


def executed(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def wait_status(app: outlast.App, run_id: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while app.get_run(run_id, steps=False).status != status:
        assert time.monotonic() < deadline, app.get_run(run_id, steps=False)
        time.sleep(0.02)


# -- ctx.patched ---------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 3600.0], ids=["no-timeout", "timeout"])
def test_a_suspended_v1_run_keeps_the_old_path_on_patched_v2_code(
    store_url: str, log: Path, timeout: float | None
) -> None:
    v1 = build("v1", store_url, timeout=timeout)
    v1.start("flow", 1, run_id="old")
    wait_status(v1, "old", "suspended")
    v1.close()
    assert executed(log) == ["a"]

    v2 = build("patched", store_url, timeout=timeout)
    v2.start("flow", 1, run_id="new")
    wait_status(v2, "new", "suspended")
    assert executed(log) == ["a", "a", "audit"]  # the new run took the new path
    for rid in ("old", "new"):
        v2.send(rid, "go", {"v": 5})
    assert v2.handle("old").result(timeout=30) == 70
    assert v2.handle("new").result(timeout=30) == 70
    # The old run never ran audit; each run ran b once.
    assert sorted(executed(log)) == ["a", "a", "audit", "b", "b"]
    assert [s.kind for s in v2.get_run("new").steps] == ["step", "patch", "step"] + (
        ["deadline"] if timeout else []
    ) + ["event", "step"]
    assert "patch" not in [s.kind for s in v2.get_run("old").steps]


def test_an_unguarded_change_before_a_wait_diverges_at_the_frontier(
    store_url: str, log: Path
) -> None:
    v1 = build("v1", store_url)
    v1.start("flow", 1, run_id="old")
    wait_status(v1, "old", "suspended")
    v1.close()
    bad = build("unguarded", store_url)
    bad.send("old", "go", {"v": 5})
    with pytest.raises(outlast.NonDeterminismError) as caught:
        bad.handle("old").result(timeout=30)
    message = str(caught.value)
    assert "position 1" in message and "event 'go' (go:1)" in message and "step 'audit'" in message
    assert (
        "ctx.patched" in message and "outlast replay" in message and "outlast retry old" in message
    )
    assert executed(log) == ["a"]  # audit never ran for the old run


def test_patched_replays_the_same_way_and_deprecate_patch_retires_it(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    calls: list[str] = []

    @app.step
    def new_path() -> str:
        calls.append("new")
        return "new"

    @app.workflow
    def flow(ctx: outlast.Context) -> list[bool]:
        seen = [ctx.patched("p1"), ctx.patched("p1")]  # decided once: one marker
        new_path()
        return seen

    assert app.run(flow, run_id="r") == [True, True]
    assert [(s.kind, s.key) for s in app.get_run("r").steps] == [
        ("patch", "patch:p1"),
        ("step", "new_path:1"),
    ]

    # Retired: the code keeps the new path only; runs that recorded the marker still replay.
    other = outlast.App(sqlite_url)

    @other.step(name="new_path")
    def new_path2() -> str:
        calls.append("new2")
        return "new"

    @other.workflow(name="flow")
    def flow2(ctx: outlast.Context) -> str:
        ctx.deprecate_patch("p1")
        return new_path2()

    store = other.store
    run = store.get_run("r")
    assert run is not None
    from outlast.replaycheck import check_run

    assert check_run(other, run).outcome == "ok"  # the marker is consumed
    assert other.run(flow2, run_id="fresh") == "new"
    assert [s.kind for s in other.get_run("fresh").steps] == ["step"]  # no marker any more
    with pytest.raises(outlast.ConfigurationError, match="patch id"):
        other.run(flow2.__class__ and _bad_patch(other), run_id="bad")


def _bad_patch(app: outlast.App) -> outlast.Workflow[[], bool]:
    @app.workflow
    def bad_patch(ctx: outlast.Context) -> bool:
        return ctx.patched("")

    return bad_patch


# -- the replay check ------------------------------------------------------------------------------


def test_outlast_replay_flags_the_unguarded_change_and_passes_the_patched_one(
    store_url: str, log: Path
) -> None:
    v1 = build("v1", store_url)
    v1.start("flow", 1, run_id="old")
    v1.enqueue("flow", 2, run_id="queued")  # never started: its journal is empty
    wait_status(v1, "old", "suspended")
    v1.start("flow", 3, run_id="done")
    wait_status(v1, "done", "suspended")
    v1.send("done", "go", {"v": 1})
    v1.handle("done").result(timeout=30)
    v1.close()
    log.unlink()

    runner = CliRunner()
    bad = runner.invoke(main, ["replay", "tests.apps.evolving:unguarded", "--db", store_url])
    assert bad.exit_code == 1, bad.output
    assert "DIVERGED old (flow, suspended): at position 1" in bad.output
    assert "OK       queued (flow, pending)" in bad.output
    assert "done" not in bad.output  # completed runs only when asked

    good = runner.invoke(main, ["replay", "tests.apps.evolving:patched", "--db", store_url])
    assert good.exit_code == 0, good.output
    assert "2 run(s) checked, 0 diverged" in good.output

    both = runner.invoke(
        main, ["replay", "tests.apps.evolving:patched", "done", "old", "--db", store_url]
    )
    assert both.exit_code == 0 and "replays to the end of the workflow" in both.output, both.output
    done_bad = runner.invoke(
        main,
        [
            "replay",
            "tests.apps.evolving:unguarded",
            "--status",
            "completed",
            "--json",
            "--db",
            store_url,
        ],
    )
    assert done_bad.exit_code == 1 and '"outcome": "diverged"' in done_bad.output
    assert executed(log) == []  # no step ever executed, not even the queued run's first

    v2 = build("patched", store_url)
    results = v2.check_replay()
    assert [(r.run_id, r.ok) for r in sorted(results, key=lambda r: r.run_id)] == [
        ("old", True),
        ("queued", True),
    ]
    assert v2.get_run("queued", steps=True).steps == []  # nothing written
    assert v2.get_run("old").status == "suspended"


def test_replay_reports_code_that_fails_on_a_recorded_run(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)

    @app.step
    def one() -> int:
        return 1

    @app.workflow
    def wf(ctx: outlast.Context) -> int:
        return one() + int(ctx.wait_for("go")["n"])

    app.start(wf, run_id="w")
    wait_status(app, "w", "suspended")
    broken = outlast.App(sqlite_url)

    @broken.step(name="one")
    def one2() -> int:
        return 1

    @broken.workflow(name="wf")
    def wf2(ctx: outlast.Context) -> int:
        return one2() // 0

    [result] = broken.check_replay()
    assert result.outcome == "error" and "ZeroDivisionError" in result.detail
    assert app.get_run("w").status == "suspended"


# -- checkpoints and fork --------------------------------------------------------------------------


def five_steps(app: outlast.App) -> outlast.Workflow[[int], int]:
    @app.step
    def s(i: int, acc: int) -> int:
        mark(f"s{i}")
        return acc + i

    @app.step
    def big(acc: int) -> str:
        mark("big")
        return f"{acc}" * 20_000  # stored as a blob

    @app.workflow
    def five(ctx: outlast.Context, x: int) -> int:
        acc = s(1, x)
        acc += len(big(acc)) // 20_000
        acc = s(3, acc)
        acc = s(4, acc)
        return s(5, acc)

    return five


def count_blobs(url: str) -> int:
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.split(":///", 1)[1])
        try:
            return int(conn.execute("SELECT count(*) FROM outlast_blobs").fetchone()[0])
        finally:
            conn.close()
    import psycopg

    from outlast.store.postgres_sql import parse_url

    conninfo, _, options = parse_url(url)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{options["schema"]}".blobs').fetchone()
        assert row is not None
        return int(row[0])


def test_fork_after_step_3_executes_steps_4_and_5_only(store_url: str, log: Path) -> None:
    app = outlast.App(store_url)
    five = five_steps(app)
    assert app.run(five, 1, run_id="src") == 1 + 1 + 1 + 3 + 4 + 5
    cps = app.checkpoints("src")
    assert [(c.id, c.position, c.node, c.kind) for c in cps] == [
        ("0", -1, "start", "start"),
        ("1", 0, "s:1", "step"),
        ("2", 1, "big:1", "step"),
        ("3", 2, "s:2", "step"),
        ("4", 3, "s:3", "step"),
        ("5", 4, "s:4", "step"),
    ]
    blobs = count_blobs(store_url)
    assert blobs > 0
    log.unlink()

    handle = app.fork("src", "3", new_run_id="src-fork")
    assert handle.result(timeout=30) == 15
    assert executed(log) == ["s4", "s5"]
    assert count_blobs(store_url) == blobs  # shared, not duplicated
    info = app.get_run("src-fork")
    assert (info.forked_from, info.forked_at) == ("src", "3")
    assert "forked_from" not in info.stats and "frontier" not in info.stats
    assert [s.key for s in info.steps] == ["s:1", "big:1", "s:2", "s:3", "s:4"]
    assert app.get_run("src").status == "completed" and len(app.get_run("src").steps) == 5

    shown = CliRunner().invoke(main, ["show", "src-fork", "--db", store_url])
    assert "forked from src at checkpoint 3" in shown.output, shown.output
    listed = CliRunner().invoke(main, ["checkpoints", "src", "--db", store_url])
    assert listed.exit_code == 0 and "big:1" in listed.output, listed.output

    out = CliRunner().invoke(main, ["fork", "src", "0", "--new-run-id", "again", "--db", store_url])
    assert out.exit_code == 0 and "as run again" in out.output, out.output
    assert app.handle("again").result(timeout=30) == 15  # from the input: everything again
    with pytest.raises(outlast.ConfigurationError, match="has no checkpoint '9'"):
        app.fork("src", "9")
    with pytest.raises(outlast.RunConflict, match="already exists"):
        app.fork("src", "1", new_run_id="again")


def test_forking_a_running_run_leaves_it_alone(store_url: str, log: Path) -> None:
    v1 = build("v1", store_url)
    v1.start("flow", 1, run_id="live")
    wait_status(v1, "live", "suspended")
    forked = v1.fork("live", "1", new_run_id="live-2")
    wait_status(v1, "live-2", "suspended")
    for rid in ("live", "live-2"):
        v1.send(rid, "go", {"v": 0})
        assert v1.handle(rid).result(timeout=30) == 20
    assert forked.run_id == "live-2" and executed(log) == ["a", "b", "b"]


# -- retry ------------------------------------------------------------------------------------------


BROKEN = {"step": True, "workflow": False}


def four_steps(app: outlast.App) -> outlast.Workflow[[], int]:
    @app.step
    def t(i: int) -> int:
        mark(f"t{i}")
        if i == 3 and BROKEN["step"]:
            raise ValueError("bug in step 3")
        return i

    @app.workflow
    def four(ctx: outlast.Context) -> int:
        total = t(1) + t(2)
        if BROKEN["workflow"]:
            raise RuntimeError("bug in the workflow")
        return total + t(3) + t(4)

    return four


@pytest.mark.counts_executions
def test_retry_a_run_that_failed_at_step_3(store_url: str, log: Path) -> None:
    app = outlast.App(store_url)
    four = four_steps(app)
    BROKEN["step"] = True
    with pytest.raises(ValueError, match="bug in step 3"):
        app.run(four, run_id="r")
    assert executed(log) == ["t1", "t2", "t3"]
    with pytest.raises(outlast.NotFailed, match="run 'ok' is completed, not failed"):
        BROKEN["step"] = False
        app.run(four, run_id="ok")
        app.retry("ok")
    log.unlink()

    assert app.retry("r").result(timeout=30) == 10
    assert executed(log) == ["t3", "t4"]  # 1-2 kept, 3 and 4 once each
    info = app.get_run("r")
    assert info.status == "completed" and info.stats["retries"] == 1
    assert [s.status for s in info.steps] == ["completed"] * 4

    out = CliRunner().invoke(main, ["retry", "r", "--db", store_url])
    assert isinstance(out.exception, outlast.NotFailed), out.output  # one line via run_cli


@pytest.mark.counts_executions
def test_retry_after_a_workflow_bug_keeps_the_whole_journal(store_url: str, log: Path) -> None:
    app = outlast.App(store_url)
    four = four_steps(app)
    BROKEN.update(step=False, workflow=True)
    try:
        with pytest.raises(RuntimeError):
            app.run(four, run_id="w")
        BROKEN["workflow"] = False
        log.unlink()
        out = CliRunner().invoke(main, ["retry", "w", "--db", store_url])
        assert out.exit_code == 0 and "pending again" in out.output, out.output
        assert app.get_run("w", steps=False).status == "pending"
        assert app.handle("w").result(timeout=30) == 10
        assert executed(log) == ["t3", "t4"]
    finally:
        BROKEN.update(step=True, workflow=False)


def test_a_divergence_is_undone_by_restoring_the_code_and_retrying(
    store_url: str, log: Path
) -> None:
    v1 = build("v1", store_url)
    v1.start("flow", 1, run_id="old")
    wait_status(v1, "old", "suspended")
    v1.close()
    bad = build("unguarded", store_url)
    bad.send("old", "go", {"v": 5})
    with pytest.raises(outlast.NonDeterminismError):
        bad.handle("old").result(timeout=30)
    bad.close()
    fixed = build("patched", store_url)  # the change, guarded this time
    assert fixed.retry("old").result(timeout=30) == 70
    assert executed(log) == ["a", "b"]


# -- SIGKILL during a fork or a retry ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _churn_then_kill(
    url: str, what: str, tmp_path: Path, broken: str, executed_steps: int = 0
) -> None:
    """Start the churn, and kill it once 3 are done and it has executed ``executed_steps``
    noted steps (counted apart from the test's own)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.proc import wait_for_line

    log = tmp_path / f"{what}.log"
    steps = tmp_path / f"{what}.executed"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVOLVE_BROKEN": broken, "EVOLVE_LEASE": "1"}
    env["EVOLVE_LOG"] = str(steps)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.evolving", url, what, str(log)], cwd=ROOT, env=env
    )
    try:
        wait_for_line(log, "2", proc, timeout=60)
        deadline = time.monotonic() + 60
        while executed_steps and len(executed(steps)) < executed_steps:
            assert proc.poll() is None and time.monotonic() < deadline, executed(steps)[-3:]
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_sigkill_during_forks_leaves_every_fork_whole(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.apps.evolving import long_app

    app = long_app(store_url)
    expected = app.run("long", run_id="long-src")
    before = app.store.load_journal("long-src")
    _churn_then_kill(store_url, "fork", tmp_path, "0")
    forks = [r for r in app.list_runs(limit=100_000) if r.run_id != "long-src"]
    assert len(forks) >= 3
    for info in forks:  # all of the journal prefix or no run at all: never part of it
        assert len(app.store.load_journal(info.run_id)) == 300, info.run_id
        assert info.forked_from == "long-src" and info.status == "pending"
    assert app.store.load_journal("long-src") == before
    assert app.handle(forks[-1].run_id).result(timeout=60) == expected


def test_sigkill_during_retries_leaves_the_run_consistent(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.apps.evolving import long_app

    monkeypatch.setenv("EVOLVE_BROKEN", "1")
    monkeypatch.setenv("EVOLVE_LEASE", "1")
    app = long_app(store_url)
    with pytest.raises(ValueError):
        app.run("long", run_id="long-bad")
    _churn_then_kill(store_url, "retry", tmp_path, "1")
    run = app.get_run("long-bad")
    keys = [s.key for s in run.steps]
    assert keys[:400] == [f"step:{i + 1}" for i in range(400)]  # kept through every retry
    if run.status == "failed":  # the failure is recorded, or dropped with it: never half
        assert keys[400:] == ["last:1"] and run.steps[-1].status == "failed"
    else:
        assert run.status in ("pending", "running") and keys[400:] in ([], ["last:1"])
    monkeypatch.setenv("EVOLVE_BROKEN", "0")
    if run.status != "failed":
        # Killed while the retried run executed: it resumes. When the kill fell between
        # recording the step's failure and failing the run, that recorded failure is the
        # outcome it resumes to (the step is not run again), and it fails as it would have.
        try:
            assert app.handle("long-bad").result(timeout=60) == sum(range(400))
            return
        except ValueError:
            assert keys[400:] == ["last:1"]
    assert app.retry("long-bad").result(timeout=60) == sum(range(400))


def test_sigkill_while_forks_of_a_waiting_run_execute_leaves_both_resumable(
    store_url: str, tmp_path: Path, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.apps.evolving import long_app

    monkeypatch.setenv("EVOLVE_LEASE", "1")
    app = long_app(store_url)
    app.start("waiting", run_id="wait-src")
    wait_status(app, "wait-src", "suspended")
    before = app.store.load_journal("wait-src")
    log.unlink()
    # Killed while a fork executes its steps 151-400 (the fourth fork, a few steps in; or,
    # on a fast machine, forking the fifth).
    _churn_then_kill(store_url, "fork-run", tmp_path, "0", executed_steps=3 * 250 + 20)
    assert app.store.load_journal("wait-src") == before  # the origin: untouched
    assert app.get_run("wait-src", steps=False).status == "suspended"
    forks = sorted(
        (r for r in app.list_runs(limit=100_000) if r.run_id != "wait-src"),
        key=lambda r: int(r.run_id[1:]),
    )
    assert len(forks) >= 3
    for info in forks:  # a fork is whole (all of the prefix) or absent, whatever it ran since
        journal = app.store.load_journal(info.run_id)
        assert journal[:150] == before[:150], info.run_id
        assert info.forked_from == "wait-src" and info.status in ("pending", "running", "suspended")
    expected = sum(range(400)) + 7
    last = forks[-1].run_id  # the one the kill interrupted, most likely mid-execution
    for rid in ("wait-src", last):
        app.send(rid, "go", 7)
        assert app.handle(rid).result(timeout=60) == expected
    # Resuming never ran a copied step again (the origin ran none: all of its are recorded).
    assert all(int(name[1:]) >= 150 for name in executed(log)), executed(log)
