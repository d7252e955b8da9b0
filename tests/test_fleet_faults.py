"""A fleet under faults that must not stop it: a worker frozen inside its claim, a worker
killed holding a slot of a limited queue, a cancel during an in-memory wait, a saturated
limited queue in front of unlimited runs. Real worker subprocesses, both stores where both
apply."""

from __future__ import annotations

import signal
import subprocess
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
    stop_all,
    wait_until,
)

import outlast
from outlast.store import Store
from outlast.store.base import NewRun, Page


@pytest.fixture
def app(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[outlast.App]:
    """The fleet app on this test's store; steps run here log to the test's side log."""
    monkeypatch.setenv("FLEET_LOG", str(tmp_path / "side.log"))
    fleet_app.app.use(store_url)
    yield fleet_app.app
    fleet_app.app.close()


def _starts_by(log: Path, pid: int, since: float, until: float) -> tuple[int, int]:
    """Steps ``pid`` started in [since, until]: (limited ``llm`` steps, default-queue steps)."""
    limited = unlimited = 0
    for line in lines(log):
        parts = line.split()
        if parts[0] == "count" and parts[1] == f"llm-{pid}" and since <= float(parts[3]) <= until:
            limited += 1
        elif parts[0] == "start" and parts[2] == str(pid) and since <= float(parts[3]) <= until:
            unlimited += 1
    return limited, unlimited


@pytest.mark.postgres
@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_worker_frozen_in_its_claim_does_not_stop_the_fleet(
    app: outlast.App, store_url: str, tmp_path: Path
) -> None:
    import psycopg

    log, lease = tmp_path / "side.log", 2.0
    ids = [app.enqueue(fleet_app.gated, ["llm", "llm-{pid}"], 0.03).run_id for _ in range(300)]
    ids += [app.enqueue(fleet_app.slow, 1, 0.3).run_id for _ in range(100)]
    env = {"FLEET_LEASE": str(lease)}
    schema = store_url.rsplit("=", 1)[1]
    name = "outlast_frozen_" + schema
    a = spawn_worker(f"{store_url}&application_name={name}", log, concurrency=2, env=env)
    # B starts once A holds llm runs: B's own freed slots re-claim at once, so a B that starts
    # first can keep the llm queue's 2 slots to itself (fair, but not what this test needs).
    # B has slots beyond the llm queue's 2, for the unlimited runs.
    b: subprocess.Popen[bytes] | None = None
    server = store_url.split("?")[0]
    # claim locks only: the liveness and wake-token locks a worker holds for its whole life
    # (store/postgres_session.py) live in namespaces of their own
    held_sql = """SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s
        AND l.classid = (hashtext(%s)::bigint & 4294967295)::oid"""
    try:
        with psycopg.connect(server, autocommit=True) as conn:

            def held() -> int:
                return int(conn.execute(held_sql, (name, schema)).fetchone()[0])  # type: ignore[index]

            wait_until(lambda: _starts_by(log, a.pid, 0, 2e9)[0] > 3, 30, "A to claim", [a])
            b = spawn_worker(store_url, log, concurrency=4, env=env)
            # Freeze A at the moment it is seen holding a claim's lock, if it ever is: a claim
            # that spans round trips keeps that lock while A is stopped.
            for _ in range(15):
                deadline = time.monotonic() + 0.4
                while not held() and time.monotonic() < deadline:
                    pass
                a.send_signal(signal.SIGSTOP)
                time.sleep(0.1)
                if held():
                    break
                a.send_signal(signal.SIGCONT)
            else:
                a.send_signal(signal.SIGSTOP)
            frozen_at = time.time()
            mine = [r.run_id for r in app.store.list_runs(Page(status="running", limit=100))
                    if r.owner and r.owner.split(":")[1] == str(a.pid)]
            samples = []
            while time.time() < frozen_at + lease + 1.5:
                samples.append(held())
                time.sleep(0.1)
            taken = wait_until_taken(app, mine, a.pid, lease + 3)
            activity = conn.execute(
                "SELECT state, left(query, 60), xact_start FROM pg_stat_activity "
                "WHERE application_name = %s", (name,)).fetchall()
            now = conn.execute("SELECT extract(epoch from clock_timestamp())").fetchone()
            # unlimited steps all along; limited ones at the latest once A's slots expired
            limited, unlimited = _starts_by(log, b.pid, frozen_at, frozen_at + lease + 1.5)
        # B kept starting steps (limited and unlimited), and the frozen A held no lock
        assert limited > 0 and unlimited > 0 and max(samples) == 0, (limited, unlimited, samples)
        assert mine and taken, ([(r.status, r.owner, a.pid, b.pid, r.recoveries, r.workflow,
                                  r.lease_expires_at) for r in map(app.store.get_run, mine) if r],
                                activity, now)  # A's runs taken over
        a.kill()
        wait_until(all_finished(app, ids), 90, "every run to finish", [b])
    finally:
        stop_all([p for p in (a, b) if p is not None])
    check_journals(app, [r for r in ids if app.get_run(r, steps=False).workflow == "slow"], 1,
                   log)


def wait_until_taken(app: outlast.App, run_ids: list[str], pid: int, timeout: float) -> bool:
    """True once none of ``run_ids`` is owned by the process ``pid`` any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owners = [app.store.get_run(r).owner for r in run_ids]  # type: ignore[union-attr]
        if not any(o and o.split(":")[1] == str(pid) for o in owners):
            return True
        time.sleep(0.1)
    return False





@pytest.mark.parametrize("queue,key", [("single", None), ("keyed", "A")])
def test_a_limited_run_of_a_killed_worker_restarts_at_once_on_its_host(
    app: outlast.App, store_url: str, tmp_path: Path, queue: str, key: str | None
) -> None:
    log, lease = tmp_path / "side.log", 8.0
    rid = app.enqueue(fleet_app.slow, 3, 0.3, queue=queue, concurrency_key=key).run_id
    # another run of the same slot waits behind it: the limit itself still holds
    later = app.enqueue(fleet_app.slow, 1, 0.0, queue=queue, concurrency_key=key).run_id
    env = {"FLEET_LEASE": str(lease), "FLEET_HANG_AFTER": "2"}
    a = spawn_worker(store_url, log, concurrency=1, env=env)
    b = None
    try:
        wait_until(lambda: f"hang {a.pid}" in lines(log), 20, "A to hang in step 1", [a])
        b = spawn_worker(store_url, log, concurrency=2, env={"FLEET_LEASE": str(lease)})
        time.sleep(1.0)  # B is up and scanning
        a.kill()
        a.wait()
        killed = time.monotonic()
        wait_until(lambda: any(x.startswith(f"start {rid}:1 {b.pid}") for x in lines(log)),
                   lease, "B to restart the killed run", [b])
        # the dead run no longer held its slot, and the stolen run holds it again
        assert time.monotonic() - killed < lease / 2
        wait_until(all_finished(app, [rid, later]), 20, "both runs", [b])
    finally:
        stop_all([p for p in (a, b) if p is not None])
    starts = [x.split() for x in lines(log) if x.startswith("start ") and len(x.split()) == 4]
    later_start = min(float(p[3]) for p in starts if p[1] == f"{later}:0")
    rid_done = [float(x.split()[3]) for x in lines(log) if x.startswith(f"done {rid}:2 ")]
    assert rid_done and later_start >= rid_done[0]  # one at a time, as the queue says


def test_a_saturated_limited_queue_does_not_block_other_runs(
    app: outlast.App, store_url: str
) -> None:
    for _ in range(60):
        app.enqueue(fleet_app.gated, ["llm"], 0.0)  # older: first in claim order
    free = [app.enqueue(fleet_app.slow, 1, 0.0).run_id for _ in range(3)]
    busy = app.store.claim("busy:1:1:x", 60.0, queues=app.queues, limit=2)
    assert [r.queue for r in busy] == ["llm", "llm"]  # both llm slots taken
    claimed = app.store.claim(app.owner, 5.0, queues=app.queues, limit=2)
    assert sorted(r.run_id for r in claimed) == sorted(free[:2]), [r.queue for r in claimed]
    keyed = [app.enqueue(fleet_app.gated, ["k"], 0.0, queue="keyed", concurrency_key="A").run_id
             for _ in range(60)]
    other = app.enqueue(fleet_app.gated, ["k"], 0.0, queue="keyed", concurrency_key="B").run_id
    first = app.store.claim(app.owner, 5.0, queues=app.queues, limit=1)
    assert [r.run_id for r in first] == [free[2]]
    first = app.store.claim(app.owner, 5.0, queues=app.queues, limit=3)
    assert sorted(r.run_id for r in first) == sorted([keyed[0], other])


@pytest.mark.postgres
def test_postgres_sessions_carry_lock_and_idle_transaction_backstops(pg_url: str) -> None:
    from outlast.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        settings = store._run(lambda c, _: c.execute(
            "SELECT current_setting('idle_in_transaction_session_timeout'), "
            "current_setting('lock_timeout')").fetchone())
    finally:
        store.close()
    assert settings == ("1min", "10s")


def test_a_cancel_from_another_process_stops_an_in_memory_sleep(
    app: outlast.App, store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    ids = [app.enqueue(fleet_app.dozing, 1.0).run_id for _ in range(3)]
    # a long lease: the heartbeat (every lease / 3) would notice the cancel only after the sleep
    a = spawn_worker(store_url, log, concurrency=3, env={"FLEET_LEASE": "15"})
    try:
        wait_until(lambda: all(any(x.startswith(f"done {r}:0 ") for x in lines(log)) for r in ids),
                   20, "the first steps", [a])
        for rid in ids:
            app.cancel(rid)
        cancelled_at = time.time()
        time.sleep(2.0)  # past the sleeps' end
    finally:
        stop_all([a])
    late = [x for x in lines(log) if x.startswith("start ") and float(x.split()[3]) > cancelled_at]
    assert late == []
    assert {app.get_run(r, steps=False).status for r in ids} == {"cancelled"}


def test_prune_keeps_finished_children_of_an_unfinished_parent(store: Store) -> None:
    def run(run_id: str, parent: str | None = None) -> int:
        store.create_run(NewRun(run_id, "wf", b"[[],{}]", "h", parent_id=parent))
        return store.claim("w:1:1:x", 30.0, run_id=run_id)[0].epoch

    parent_epoch = run("parent")
    store.finish("child", run("child", "parent"), "completed", output=b"1")
    store.finish("orphan", run("orphan", "gone"), "completed", output=b"2")  # parent pruned
    time.sleep(0.01)
    # the live parent has not collected its child's result yet
    assert store.prune(time.time()) == 1
    assert store.get_run("child") is not None and store.get_run("orphan") is None
    store.finish("parent", parent_epoch, "completed", output=b"3")
    time.sleep(0.01)
    assert store.prune(time.time()) == 2
    assert store.get_run("child") is None and store.get_run("parent") is None


def test_outlast_queues_without_the_app_shows_limits_as_unknown(
    app: outlast.App, store_url: str
) -> None:
    import json

    from click.testing import CliRunner

    from outlast.cli import main

    app.enqueue(fleet_app.gated, ["llm"], 0.0)
    out = CliRunner().invoke(main, ["queues", "--db", store_url, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [
        {"queue": "llm", "pending": 1, "running": 0, "suspended": 0, "limits": None}
    ]


def test_a_run_its_worker_handed_back_is_logged_released_not_lost(
    app: outlast.App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from outlast.worker import Worker

    caplog.set_level("INFO", logger="outlast.worker")
    rid = app.enqueue(fleet_app.slow, 2, 0.5).run_id
    worker = Worker(app, concurrency=1, poll=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_until(lambda: any(x.startswith(f"start {rid}:0") for x in lines(tmp_path / "side.log")),
                   10, "the step to start")
        worker._release_now()  # what an abort does; its step then finishes, unrecorded
    finally:
        worker.stop()
        thread.join(10)
    assert f"run {rid}: released" in caplog.text
    assert f"run {rid}: lost" not in caplog.text, caplog.text
    assert app.store.get_run(rid).status == "pending"  # type: ignore[union-attr]
