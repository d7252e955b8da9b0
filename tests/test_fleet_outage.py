"""PostgreSQL unreachable for a while (a TCP proxy the test cuts; the shared server is never
touched): workers resume promptly when it comes back, steps in flight are recorded once and
not run again, and the CLI says it cannot connect."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.apps import fleet_app
from tests.fleetkit import (
    all_finished,
    check_journals,
    lines,
    spawn_worker,
    stderr_of,
    stop_all,
    wait_until,
)
from tests.tcp_proxy import TcpProxy

import outlast

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy(("127.0.0.1", 5432))
    yield p
    p.close()


def _in_flight(log: Path, at: float) -> list[str]:
    """The steps started before ``at`` and finished after it (by the same process)."""
    started = {tuple(x.split()[1:3]): float(x.split()[3]) for x in lines(log) if x.startswith("start ")}
    ended = {tuple(x.split()[1:3]): float(x.split()[3]) for x in lines(log) if x.startswith("done ")}
    return [k[0] for k, t in started.items() if t < at < ended.get(k, float("inf"))]


def _times(log: Path, kind: str) -> list[float]:
    return [float(x.split()[3]) for x in lines(log) if x.startswith(kind + " ")]


def test_workers_resume_at_once_after_an_outage_and_run_no_step_twice(
    pg_url: str, proxy: TcpProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # shorter than the lease (the next test has one longer): new work resumes at once when
    # the database is back, and no step runs twice
    log, outage = tmp_path / "side.log", 12.0
    monkeypatch.setenv("FLEET_LOG", str(log))
    app: outlast.App = fleet_app.app
    app.use(pg_url)  # the test itself talks to the server directly
    try:
        ids = [app.enqueue(fleet_app.slow, 3, 0.4).run_id for _ in range(40)]
        env = {"FLEET_LEASE": "15"}  # longer than the outage: nobody takes runs over
        workers = [spawn_worker(proxy.url(pg_url), log, env=env) for _ in range(2)]
        try:
            wait_until(lambda: len(_times(log, "done")) >= 10, 30, "the load", workers)
            proxy.cut()
            cut_at = time.time()
            time.sleep(outage)
            proxy.restore()
            back_at = time.time()
            wait_until(lambda: any(t > back_at for t in _times(log, "start")), 20,
                       "a step to start after the outage", workers)
            resumed = min(t for t in _times(log, "start") if t > back_at) - back_at
            wait_until(all_finished(app, ids), 60, "every run", workers)
            for p in workers:
                p.send_signal(signal.SIGTERM)
            for p in workers:
                assert p.wait(timeout=15) == 0, stderr_of(p)
        finally:
            stop_all(workers)
        starts = check_journals(app, ids, 3, log)
        assert resumed < 2.0, resumed  # not the pool's 1, 2, 4, 8 s backoff
        assert set(starts.values()) == {1}, [s for s, n in starts.items() if n > 1]
        assert _in_flight(log, cut_at)  # the outage struck steps in flight
    finally:
        app.close()


def test_an_outage_longer_than_the_lease_runs_no_step_twice(
    pg_url: str, proxy: TcpProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every lease runs out during the outage. The first worker back must not take the other's
    # runs over before that one's heartbeat renews them: it waits a beat after reconnecting.
    log, lease, outage = tmp_path / "side.log", 3.0, 7.0
    monkeypatch.setenv("FLEET_LOG", str(log))
    app: outlast.App = fleet_app.app
    app.use(pg_url)
    try:
        ids = [app.enqueue(fleet_app.slow, 3, 0.4).run_id for _ in range(24)]
        env = {"FLEET_LEASE": str(lease)}
        workers = [spawn_worker(proxy.url(pg_url), log, env=env) for _ in range(2)]
        try:
            wait_until(lambda: len(_times(log, "done")) >= 8, 30, "the load", workers)
            proxy.cut()
            cut_at = time.time()
            time.sleep(outage)
            proxy.restore()
            wait_until(all_finished(app, ids), 90, "every run", workers)
            for p in workers:
                p.send_signal(signal.SIGTERM)
            for p in workers:
                assert p.wait(timeout=15) == 0, stderr_of(p)
        finally:
            stop_all(workers)
        starts = check_journals(app, ids, 3, log)
        assert set(starts.values()) == {1}, [s for s, n in starts.items() if n > 1]
        assert _in_flight(log, cut_at)  # the outage struck steps in flight
    finally:
        app.close()


def test_a_worker_started_while_the_database_is_down_waits_for_it(
    pg_url: str, proxy: TcpProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "side.log"
    monkeypatch.setenv("FLEET_LOG", str(log))
    proxy.cut()
    worker = spawn_worker(proxy.url(pg_url), log)
    app: outlast.App = fleet_app.app
    app.use(pg_url)
    try:
        wait_until(lambda: "store unreachable" in stderr_of(worker), 20, "the worker to retry",
                   [worker])
        time.sleep(1.0)
        assert worker.poll() is None, stderr_of(worker)  # still waiting, not exited
        proxy.restore()
        ids = [app.enqueue(fleet_app.slow, 1, 0.0).run_id for _ in range(3)]
        wait_until(all_finished(app, ids), 30, "the runs, once the database is back", [worker])
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0, stderr_of(worker)
    finally:
        stop_all([worker])
        app.close()
    assert "Traceback" not in stderr_of(worker)


def test_the_cli_says_it_cannot_connect(pg_url: str, proxy: TcpProxy) -> None:
    import subprocess
    import sys

    proxy.cut()
    done = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "queues", "--db", proxy.url(pg_url), "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "cannot connect to PostgreSQL" in done.stderr and "Traceback" not in done.stderr
