"""Durable timers and events, in both tiers, on both stores; crashes with real SIGKILLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import outlast
from outlast.store import Page

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(store_url: str) -> Iterator[outlast.App]:
    a = outlast.App(store_url, hibernate_after=0.3)
    yield a
    a.close()


def _kinds(app: outlast.App, run_id: str) -> list[tuple[str, str, str]]:
    return [(s.kind, s.key, s.status) for s in app.get_run(run_id).steps]


def _until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition never held")


# -- timers -------------------------------------------------------------------------------------


@pytest.mark.stays_in_memory
def test_short_sleep_stays_in_memory_and_is_journaled(app: outlast.App) -> None:
    @app.workflow
    def nap(ctx: outlast.Context) -> str:
        ctx.sleep(timedelta(seconds=0.1))
        return "ok"

    h = app.start(nap, run_id="nap")
    _until(lambda: [k for k, _, _ in _kinds(app, "nap")] == ["timer"])
    assert h.status == "running"  # in memory: the lease is held, never suspended
    assert h.result(timeout=10) == "ok"
    assert _kinds(app, "nap") == [("timer", "sleep:1", "completed")]


def test_long_sleep_hibernates_then_wakes(app: outlast.App) -> None:
    @app.workflow
    def nap(ctx: outlast.Context) -> float:
        ctx.sleep(0.8)
        return ctx.now()

    started = time.time()
    h = app.start(nap, run_id="long")
    _until(lambda: h.status == "suspended")
    record = app.store.get_run("long")
    assert record is not None and record.owner is None and record.lease_expires_at is None
    assert record.wake_at is not None and record.wake_at >= started + 0.8
    assert h.result(timeout=20) >= started + 0.8


def test_async_sleep_until_is_awaitable(app: outlast.App) -> None:
    @app.workflow
    async def nap(ctx: outlast.Context) -> str:
        await ctx.sleep_until(datetime.now() + timedelta(seconds=0.1))
        await ctx.sleep(0.5)  # hibernates
        return "ok"

    assert app.run(nap, run_id="a") == "ok"
    assert [k for k, _, _ in _kinds(app, "a")] == ["timer", "timer"]


def test_bad_durations_are_rejected(app: outlast.App) -> None:
    @app.workflow
    def nap(ctx: outlast.Context) -> None:
        ctx.sleep("ten")  # type: ignore[arg-type]

    with pytest.raises(outlast.ConfigurationError, match="seconds"):
        app.run(nap, run_id="bad")


def test_timer_survives_sigkill(store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    env = {**os.environ, "WAITY_LOG": str(log), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.apps.waity", store_url, "nap-1", "4"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    _until(lambda: log.exists() and "before" in log.read_text())
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    restarted = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=60)
    took = time.monotonic() - restarted
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "after"
    assert log.read_text().splitlines() == ["before", "after"]
    # Only what was left of the 4 s timer was slept after the restart.
    assert 0.5 < took < 3.8, took


# -- events -------------------------------------------------------------------------------------


def test_event_sent_before_the_wait_is_kept(app: outlast.App) -> None:
    @app.workflow
    def w(ctx: outlast.Context) -> object:
        return ctx.wait_for("go")

    h = app.enqueue(w, run_id="early")
    app.send("early", "go", {"n": 1})
    assert h.result(timeout=10) == {"n": 1}


@pytest.mark.parametrize("tier", ["memory", "hibernate"])
def test_event_sent_during_the_wait_in_order_exactly_once(app: outlast.App, tier: str) -> None:
    timeout = 10.0 if tier == "hibernate" else 1.5
    app.hibernate_after = 0.3 if tier == "hibernate" else 2.0

    @app.workflow
    def w(ctx: outlast.Context) -> list[object]:
        got = [ctx.wait_for("go", timeout=timeout) for _ in range(2)]
        try:
            got.append(ctx.wait_for("go", timeout=0.1))
        except outlast.Timeout:
            got.append("timeout")
        return got

    h = app.start(w, run_id="during")
    _until(lambda: len(app.get_run("during").steps) >= 1)
    app.send("during", "go", 1)
    app.send("during", "go", 2)
    assert h.result(timeout=20) == [1, 2, "timeout"]
    events = [s for s in app.get_run("during").steps if s.kind == "event"]
    assert [(s.key, s.status) for s in events] == [("go:1", "completed"), ("go:2", "completed"), ("go:3", "failed")]


def test_timeout_is_journaled_so_a_late_event_does_not_change_history(app: outlast.App) -> None:
    @app.workflow
    def w(ctx: outlast.Context) -> str:
        try:
            ctx.wait_for("approve", timeout=0.1)
        except outlast.Timeout:
            ctx.sleep(0.6)  # hibernates; replay must raise the same Timeout
            return "timed out"
        return "approved"

    h = app.start(w, run_id="late")
    _until(lambda: h.status == "suspended")
    app.send("late", "approve", True)  # arrives after the timeout was recorded
    assert h.result(timeout=20) == "timed out"


def test_send_to_unknown_or_finished_run_is_refused(app: outlast.App) -> None:
    @app.workflow
    def w() -> int:
        return 1

    app.run(w, run_id="done")
    with pytest.raises(outlast.RunNotFound):
        app.send("nope", "go", 1)
    with pytest.raises(outlast.ConfigurationError, match="completed"):
        app.send("done", "go", 1)


def test_event_survives_worker_restart(store_url: str, tmp_path: Path) -> None:
    """Sent while no process runs; the next worker delivers it."""
    from tests.apps import waity

    waity.app.use(store_url)
    env = {**os.environ, "WAITY_LOG": str(tmp_path / "log"), "PYTHONPATH": str(ROOT)}
    worker = [sys.executable, "-m", "outlast.cli", "worker", "tests.apps.waity:app", "--db", store_url]
    try:
        waity.app.enqueue(waity.waiter, run_id="ev-1")
        proc = subprocess.Popen(worker, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        _until(lambda: waity.app.get_run("ev-1", steps=False).status == "suspended")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        waity.app.send("ev-1", "go", "payload")
        burst = subprocess.run([*worker, "--burst"], cwd=ROOT, env=env, capture_output=True, timeout=60)
        assert burst.returncode == 0, burst.stderr.decode()
        info = waity.app.get_run("ev-1")
        assert info.status == "completed" and info.result == "payload"
        assert [s.kind for s in info.steps] == ["event"]
    finally:
        waity.app.close()


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def test_thousand_suspended_runs_hold_no_threads(sqlite_url: str, tmp_path: Path) -> None:
    _thousand_suspended(sqlite_url, tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_thousand_suspended_runs_hold_no_threads_postgres(pg_url: str, tmp_path: Path) -> None:
    _thousand_suspended(pg_url, tmp_path)  # about 20 s


def _thousand_suspended(store_url: str, tmp_path: Path) -> None:
    from tests.apps import waity

    n = 1000
    waity.app.use(store_url)
    env = {**os.environ, "WAITY_LOG": str(tmp_path / "log"), "PYTHONPATH": str(ROOT)}
    worker = [sys.executable, "-m", "outlast.cli", "worker", "tests.apps.waity:app",
              "--db", store_url, "--concurrency", "8", "--poll", "0.1"]
    proc = subprocess.Popen(worker, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        store = waity.app.store
        idle = 0
        _until(lambda: proc.poll() is None and _threads(proc.pid) > 0)
        for i in range(n):
            waity.app.enqueue(waity.waiter, run_id=f"r{i}")
        _until(lambda: store.queue_stats()[0].suspended == n, timeout=90)
        idle = _threads(proc.pid)
        # A pool of 8, the heartbeat, the main thread: nothing per run.
        assert idle <= 16, idle
        for i in range(n):
            waity.app.send(f"r{i}", "go", i)
        _until(lambda: len(store.list_runs(Page(status="completed", limit=n))) == n, timeout=90)
        assert waity.app.get_run("r7", steps=False).result == 7
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        waity.app.close()


@pytest.mark.stays_in_memory  # its reminder is a short in-memory wait
def test_approval_example_reminds_then_sends(sqlite_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OUTLAST_DATABASE_URL": sqlite_url,
           "APPROVAL_REMIND_AFTER": "0.2", "APPROVAL_GIVE_UP_AFTER": "60"}
    proc = subprocess.Popen([sys.executable, "examples/approval.py", "ap-1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    app = outlast.App(sqlite_url)
    try:
        _until(lambda: app.store.get_run("ap-1") is not None and app.get_run("ap-1").status == "suspended")
        sent = subprocess.run([sys.executable, "-m", "outlast.cli", "send", "ap-1", "approve", '"yes"'],
                              cwd=ROOT, env=env, capture_output=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        app.close()
    assert out.strip().startswith("sent to ann@example.com")
    assert "reminder" in err
