"""A fleet of worker processes sharing one store: SIGKILL, SIGSTOP, graceful shutdown, queue
limits, priorities, heartbeats. Real subprocesses (``outlast worker``), on SQLite (several
processes on one file) and PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
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

import outlast
from outlast.cli import main
from outlast.store import open_store
from outlast.worker import Worker


@pytest.fixture
def app(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[outlast.App]:
    """The fleet app on this test's store; steps run here log to the test's side log."""
    monkeypatch.setenv("FLEET_LOG", str(tmp_path / "side.log"))
    fleet_app.app.use(store_url)
    yield fleet_app.app
    fleet_app.app.close()


def _counts(log: Path) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for line in lines(log):
        if line.startswith("count "):
            _, scope, n, _ = line.split()
            seen[scope].append(int(n))
    return seen


def test_workers_share_runs_and_survive_a_sigkill(
    app: outlast.App, store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    n = 200 if store_url.startswith("postgresql") else 90
    ids = [app.enqueue(fleet_app.triple, run_id=f"r{i:03d}").run_id for i in range(n)]
    # The victim "runs on another machine": its runs come back when its lease expires.
    victim = spawn_worker(store_url, log, env={"FLEET_HANG_AFTER": "15", "FLEET_FAKE_HOST": "1"})
    healthy = [spawn_worker(store_url, log) for _ in range(2)]
    try:
        wait_until(lambda: f"hang {victim.pid}" in lines(log), 30, "the victim to hang", [victim])
        victim.kill()
        victim.wait()
        wait_until(all_finished(app, ids), 60, f"{n} runs to complete", healthy)
        for p in healthy:
            p.send_signal(signal.SIGTERM)
        for p in healthy:
            assert p.wait(timeout=10) == 0, stderr_of(p)
    finally:
        stop_all([victim, *healthy])
    starts = check_journals(app, ids, 3, log)
    twice = {step for step, count in starts.items() if count > 1}
    victim_steps = {
        line.split()[1] for line in lines(log)
        if line.startswith("start ") and line.split()[2] == str(victim.pid)
    }
    # Only the steps the victim had in flight ran again; each is recorded once all the same.
    assert twice and twice <= victim_steps, (twice, victim_steps)
    assert len(twice) <= 4
    assert sum(app.get_run(step.split(":")[0], steps=False).recoveries for step in twice) >= 1
    pids = {pid for rid in ids for pid in app.get_run(rid, steps=False).result}
    assert {p.pid for p in healthy} <= pids


def test_a_sigstopped_worker_cannot_write_after_its_lease_expired(
    app: outlast.App, store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    rid = app.enqueue(fleet_app.slow, 3, 0.6, run_id="stopped").run_id
    a = spawn_worker(store_url, log, concurrency=1)
    b = None
    try:
        wait_until(lambda: any(x.startswith(f"start {rid}:0 {a.pid}") for x in lines(log)), 20,
                   "worker A to start step 0", [a])
        a.send_signal(signal.SIGSTOP)
        time.sleep(app.lease + 0.3)
        b = spawn_worker(store_url, log, concurrency=1, burst=True)
        wait_until(lambda: any(x.startswith(f"start {rid}:1 {b.pid}") for x in lines(log)), 20,
                   "worker B to take over", [b])
        a.send_signal(signal.SIGCONT)  # A wakes up mid-step, inside B's run
        wait_until(lambda: f"run {rid}: lost" in stderr_of(a), 20, "A to give the run up", [a])
        assert b.wait(timeout=20) == 0, stderr_of(b)
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=10) == 0, stderr_of(a)
    finally:
        stop_all([p for p in (a, b) if p is not None])
    info = app.get_run(rid)
    assert info.status == "completed" and info.recoveries == 1
    assert info.result == [b.pid] * 3  # A's result for step 0 was refused
    assert [s.key for s in info.steps] == ["nap:1", "nap:2", "nap:3"]
    assert any(x.startswith(f"done {rid}:0 {a.pid}") for x in lines(log))  # A did execute it
    assert not any(x.startswith(f"start {rid}:1 {a.pid}") for x in lines(log))  # then stopped


def test_heartbeat_keeps_the_lease_through_a_step_longer_than_it(
    app: outlast.App, store_url: str
) -> None:
    other = open_store(store_url)
    stolen: list[str] = []
    done = threading.Event()

    def thief() -> None:  # another worker, claiming all along
        while not done.is_set():
            stolen.extend(r.run_id for r in other.claim("thief:1:1:x", 1.0, limit=5))
            time.sleep(0.1)

    t = threading.Thread(target=thief)
    t.start()
    try:
        pids = app.run(fleet_app.slow, 1, 2.5 * app.lease, run_id="long")
    finally:
        done.set()
        t.join()
        other.close()
    assert stolen == [] and pids == [os.getpid()]
    info = app.get_run("long")
    assert info.recoveries == 0 and len(info.steps) == 1


def test_first_sigterm_finishes_the_step_and_hands_runs_back(
    app: outlast.App, store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    ids = [app.enqueue(fleet_app.slow, 4, 0.5, run_id=f"g{i}").run_id for i in range(2)]
    # A long lease: only an explicit release lets the runs move on quickly.
    a = spawn_worker(store_url, log, concurrency=2, env={"FLEET_LEASE": "10"})
    try:
        wait_until(lambda: all(any(x.startswith(f"start {r}:0") for x in lines(log)) for r in ids),
                   20, "both runs to start", [a])
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=5) == 0, stderr_of(a)
    finally:
        stop_all([a])
    for rid in ids:
        info = app.get_run(rid)
        assert info.status == "pending" and len(info.steps) == 1, (info.status, info.steps)
        assert app.store.get_run(rid).owner is None  # type: ignore[union-attr]
    b = spawn_worker(store_url, log, concurrency=2, burst=True)
    assert b.wait(timeout=30) == 0, stderr_of(b)
    starts = check_journals(app, ids, 4, log)
    assert set(starts.values()) == {1}  # nothing ran twice


def test_second_sigterm_stops_now_and_releases(
    app: outlast.App, store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    rid = app.enqueue(fleet_app.slow, 2, 30.0, run_id="hard").run_id
    a = spawn_worker(store_url, log, concurrency=1, env={"FLEET_LEASE": "10"})
    try:
        wait_until(lambda: any(x.startswith(f"start {rid}:0") for x in lines(log)), 20,
                   "the run to start", [a])
        a.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert a.poll() is None  # the first one waits for the step
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=5) == 128 + signal.SIGTERM
    finally:
        stop_all([a])
    run = app.store.get_run(rid)
    assert run is not None and run.status == "pending" and run.owner is None


def test_queue_limits_hold_across_the_fleet(
    app: outlast.App, store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    ids = [app.enqueue(fleet_app.gated, ["llm"], 0.15).run_id for _ in range(10)]
    ids += [app.enqueue(fleet_app.gated, ["solo-{pid}"], 0.15, queue="solo").run_id
            for _ in range(9)]
    ids += [
        app.enqueue(fleet_app.gated, [f"keyed-{k}"], 0.15, queue="keyed", concurrency_key=k).run_id
        for k in "ABABABAB"
    ]
    ids += [app.enqueue(fleet_app.gated, ["rated"], 0.0, queue="rated").run_id for _ in range(7)]
    workers = [spawn_worker(store_url, log, concurrency=4) for _ in range(3)]
    try:
        wait_until(all_finished(app, ids), 45, "the queued runs", workers)
    finally:
        stop_all(workers)
    seen = _counts(log)
    assert max(seen["llm"]) == 2, seen["llm"]  # fleet-wide concurrency 2 (and reached)
    solo = {scope: max(v) for scope, v in seen.items() if scope.startswith("solo-")}
    assert solo and set(solo.values()) == {1}, solo  # one per worker
    assert max(seen["keyed-A"]) == 1 and max(seen["keyed-B"]) == 1
    starts = sorted(float(x.split()[3]) for x in lines(log) if x.startswith("count rated "))
    assert len(starts) == 7
    # 3 starts per second: any 4 consecutive starts span about a second (claim-to-step jitter)
    assert min(starts[i + 3] - starts[i] for i in range(4)) > 0.8, starts


def test_priorities_order_claims(app: outlast.App, tmp_path: Path) -> None:
    for i, priority in enumerate([0, 5, 1, 5, 10]):
        app.enqueue(fleet_app.slow, 1, 0.0, run_id=f"p{i}", priority=priority)
    Worker(app, concurrency=1, burst=True, poll=0.05).run()
    order = [x.split()[1].split(":")[0] for x in lines(tmp_path / "side.log") if x.startswith("start")]
    assert order == ["p4", "p1", "p3", "p2", "p0"]


def test_app_run_in_a_limited_queue_waits_its_turn(app: outlast.App, tmp_path: Path) -> None:
    busy = [app.start(fleet_app.gated, ["llm"], 1.0) for _ in range(2)]  # both llm slots
    wait_until(lambda: len(_counts(tmp_path / "side.log")["llm"]) == 2, 10, "both slots taken")
    started = time.monotonic()
    assert app.run(fleet_app.gated, ["llm"], 0.0, run_id="third") == "third"
    assert time.monotonic() - started > 0.5  # it waited for a slot
    assert [b.result(timeout=10) for b in busy] == [b.run_id for b in busy]
    assert max(_counts(tmp_path / "side.log")["llm"]) == 2


def test_outlast_queues_shows_depth_and_limits(app: outlast.App, store_url: str) -> None:
    for _ in range(3):
        app.enqueue(fleet_app.gated, ["llm"], 0.0)
    app.enqueue(fleet_app.gated, ["keyed"], 0.0, queue="keyed", concurrency_key="A")
    runner = CliRunner()
    out = runner.invoke(main, ["queues", "tests.apps.fleet_app:app", "--db", store_url, "--json"])
    assert out.exit_code == 0, out.output
    import json

    rows = {r["queue"]: r for r in json.loads(out.output)}
    assert rows["llm"]["pending"] == 3 and rows["llm"]["limits"] == {"concurrency": 2}
    assert rows["keyed"]["pending"] == 1 and rows["keyed"]["limits"] == {"key_concurrency": 1}
    assert rows["rated"]["limits"] == {"rate_limit": 3, "rate_period": 1.0}
    table = runner.invoke(main, ["queues", "tests.apps.fleet_app:app", "--db", store_url])
    assert table.exit_code == 0 and "concurrency 2" in table.output and "rate 3/1s" in table.output
