"""Liveness from the database session (PostgreSQL): a worker on another host that dies is
taken over at once, not after its lease; without session liveness (a transaction-mode pooler)
the lease decides; a worker whose connection is cut while its process lives is fenced; one
enqueue wakes one idle worker; a cancel reaches an in-memory sleep in another process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.apps import fleet_app
from tests.fleetkit import lines, spawn_worker, stderr_of, stop_all, wait_until
from tests.tcp_proxy import TcpProxy

import outlast
from outlast.store import open_store
from outlast.store.base import NewRun
from outlast.store.postgres import PostgresStore
from outlast.store.postgres_session import LIVE_MARK

pytestmark = pytest.mark.postgres

LONG_LEASE = "15"  # the longest allowed; the waits below are shorter: liveness, not the lease


@pytest.fixture
def app(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[outlast.App]:
    monkeypatch.setenv("FLEET_LOG", str(tmp_path / "side.log"))
    fleet_app.app.use(pg_url)
    yield fleet_app.app
    fleet_app.app.close()


def _started(log: Path, step: str, pid: int) -> bool:
    return any(x.startswith(f"start {step} {pid}") for x in lines(log))


def test_a_dead_worker_on_another_host_is_taken_over_before_its_lease(
    app: outlast.App, pg_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    rid = app.enqueue(fleet_app.triple, run_id="far").run_id
    env = {"FLEET_LEASE": LONG_LEASE, "FLEET_FAKE_HOST": "1"}
    victim = spawn_worker(pg_url, log, concurrency=1, env={**env, "FLEET_HANG_AFTER": "1"})
    survivor = None
    try:
        wait_until(lambda: f"hang {victim.pid}" in lines(log), 30, "the victim", [victim])
        assert app.store.get_run(rid).owner.endswith(LIVE_MARK)  # type: ignore[union-attr]
        survivor = spawn_worker(pg_url, log, concurrency=1, env=env)
        victim.kill()
        victim.wait()
        wait_until(
            lambda: _started(log, f"{rid}:0", survivor.pid),
            10,  # type: ignore[union-attr]
            "the survivor to take the run over",
            [survivor],
        )
    finally:
        stop_all([p for p in (victim, survivor) if p is not None])
    run = app.store.get_run(rid)
    assert run is not None and run.recoveries == 1


def test_without_session_liveness_the_lease_decides(
    app: outlast.App, pg_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    url = pg_url + "&pooler=transaction"
    rid = app.enqueue(fleet_app.triple, run_id="pooled").run_id
    env = {"FLEET_LEASE": "6", "FLEET_FAKE_HOST": "1"}
    victim = spawn_worker(url, log, concurrency=1, env={**env, "FLEET_HANG_AFTER": "1"})
    survivor = None
    try:
        wait_until(lambda: f"hang {victim.pid}" in lines(log), 30, "the victim", [victim])
        owner = app.store.get_run(rid).owner  # type: ignore[union-attr]
        assert owner is not None and not owner.endswith(LIVE_MARK)
        survivor = spawn_worker(url, log, concurrency=1, env=env)
        victim.kill()
        victim.wait()
        time.sleep(3.0)  # longer than a liveness takeover takes, shorter than the lease
        run = app.store.get_run(rid)
        assert run is not None and run.owner == owner and run.status == "running"
        wait_until(
            lambda: _started(log, f"{rid}:0", survivor.pid),
            20,  # type: ignore[union-attr]
            "the lease to expire and the survivor to take over",
            [survivor],
        )
    finally:
        stop_all([p for p in (victim, survivor) if p is not None])


def test_a_worker_cut_off_from_the_database_is_fenced(
    app: outlast.App, pg_url: str, pg_server: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    rid = app.enqueue(fleet_app.slow, 2, 4.0, run_id="cut").run_id
    host, port = pg_server.split("@", 1)[1].split("/", 1)[0].split(":")
    proxy = TcpProxy((host, int(port)))
    env = {"FLEET_LEASE": LONG_LEASE, "FLEET_FAKE_HOST": "1"}
    a = spawn_worker(proxy.url(pg_url), log, concurrency=1, env=env)
    b = None
    try:
        wait_until(lambda: _started(log, f"{rid}:0", a.pid), 30, "A to start step 0", [a])
        b = spawn_worker(pg_url, log, concurrency=1, env=env)
        proxy.cut()  # A lives on, mid-step, without its database session
        wait_until(
            lambda: _started(log, f"{rid}:0", b.pid),
            10,  # type: ignore[union-attr]
            "B to take the run over",
            [b],
        )
        proxy.restore()  # A's step ends; its write must be refused
        wait_until(lambda: f"run {rid}: lost" in stderr_of(a), 30, "A to give the run up", [a])
        wait_until(
            lambda: app.store.get_run(rid).status == "completed",
            30,  # type: ignore[union-attr]
            "the run to complete",
            [b],
        )
    finally:
        stop_all([p for p in (a, b) if p is not None])
        proxy.close()
    info = app.get_run(rid)
    assert info.result == [b.pid, b.pid]  # A's result for step 0 was refused
    assert any(x.startswith(f"done {rid}:0 {a.pid}") for x in lines(log))  # A did execute it
    assert not _started(log, f"{rid}:1", a.pid)


def test_one_enqueue_wakes_one_idle_worker(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(4)]
    woken = [0] * len(stores)
    done = threading.Event()

    def idle(i: int) -> None:
        while not done.is_set():
            if stores[i].wait_for_work(30.0):  # no poll tick in this test: only wake-ups
                woken[i] += 1

    threads = [threading.Thread(target=idle, args=(i,)) for i in range(len(stores))]
    try:
        for i, s in enumerate(stores):
            s.attach(f"w{i}", lambda run_id: None)
        for t in threads:
            t.start()
        time.sleep(1.5)  # one of them takes the wake token (and claims once to catch up)
        before = list(woken)
        stores[0].create_run(NewRun("one", "wf", b"", "h"))
        time.sleep(1.5)
        after = [n - b for n, b in zip(woken, before, strict=True)]
    finally:
        done.set()
        for s in stores:
            s.wake_waiters()
        for t in threads:
            t.join(5)
        for s in stores:
            s.close()
    # the token holder, and the next in line catching up: not every idle worker
    assert 1 <= sum(after) <= 2, after


def test_a_cancel_from_another_process_ends_an_in_memory_sleep(
    app: outlast.App, pg_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "side.log"
    rid = app.enqueue(fleet_app.dozing, 4.5, run_id="dozing").run_id  # in memory (< 5 s)
    # a long lease: the heartbeat (every lease / 3 = 5 s) notices a cancel only later
    w = spawn_worker(pg_url, log, concurrency=1, env={"FLEET_LEASE": LONG_LEASE})
    try:
        wait_until(
            lambda: any(x.startswith(f"done {rid}:0") for x in lines(log)), 30, "step 0", [w]
        )
        time.sleep(0.5)  # into the sleep
        assert app.cancel(rid) == [rid]
        wait_until(
            lambda: f"run {rid}: cancelled" in stderr_of(w),
            2.5,
            "the worker to stop the sleeping run",
            [w],
        )
    finally:
        stop_all([w])
    assert not any(x.startswith(f"start {rid}:1") for x in lines(log))


def test_dead_owners_is_none_through_a_transaction_pooler(pg_url: str) -> None:
    store = PostgresStore(pg_url + "&pooler=transaction")
    try:
        assert store.attach("x:1:1:aa", lambda run_id: None) == "x:1:1:aa"
        assert store.dead_owners() is None
    finally:
        store.close()


def test_closing_a_store_while_its_token_thread_works_raises_nothing(pg_url: str) -> None:
    # The wake token's thread owns its connection: a close at any moment (here while the
    # thread connects, waits for the lock or holds it) ends it without an error in the thread.
    errors: list[BaseException] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment,misc]
    try:
        for i in range(12):
            store = open_store(pg_url)
            store.attach(f"closer{i}", lambda run_id: None)
            waiter = threading.Thread(target=store.wait_for_work, args=(5.0,))
            waiter.start()
            time.sleep(0.05 * (i % 6))
            store.close()
            store.wake_waiters()
            waiter.join(5)
            tokens = [t for t in threading.enumerate() if t.name == "outlast-token"]
            for t in tokens:
                t.join(3)
    finally:
        threading.excepthook = hook
    assert errors == []
    assert not [t for t in threading.enumerate() if t.name == "outlast-token"]
