"""``outlast worker --queue NAME``: a worker claims only runs of its queues (both stores), and
on PostgreSQL workers of different queues never take each other's wake-ups."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.apps import fleet_app

import outlast
from outlast.cli import main
from outlast.store import open_store
from outlast.store.base import NewRun
from outlast.worker import Worker


@pytest.fixture
def app(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[outlast.App]:
    monkeypatch.setenv("FLEET_LOG", str(tmp_path / "side.log"))
    fleet_app.app.use(store_url)
    yield fleet_app.app
    fleet_app.app.close()


def _statuses(app: outlast.App, ids: list[str]) -> list[str]:
    return [app.get_run(rid).status for rid in ids]


def test_a_worker_claims_only_runs_of_its_queues(app: outlast.App) -> None:
    a = [app.enqueue(fleet_app.triple, queue="a").run_id for _ in range(3)]
    b = [app.enqueue(fleet_app.triple, queue="b").run_id for _ in range(2)]
    other = app.enqueue(fleet_app.triple).run_id
    limited = app.enqueue(fleet_app.gated, [], 0.0).run_id  # queue "llm", limits declared

    assert Worker(app, queues=["a", "llm"], burst=True, poll=0.05).run() == 4
    assert _statuses(app, [*a, limited]) == ["completed"] * 4
    assert _statuses(app, [*b, other]) == ["pending"] * 3

    assert Worker(app, queues=[], burst=True, poll=0.05).run() == 0  # no queue: nothing
    assert Worker(app, queues=["b", "b"], burst=True, poll=0.05).run() == 2
    assert _statuses(app, [other]) == ["pending"]


def test_outlast_worker_queue_option(app: outlast.App, store_url: str) -> None:
    b = app.enqueue(fleet_app.triple, queue="b").run_id
    c = app.enqueue(fleet_app.triple, queue="c").run_id
    d = app.enqueue(fleet_app.triple, queue="d").run_id
    result = CliRunner().invoke(
        main,
        [
            "worker",
            "tests.apps.fleet_app:app",
            "--db",
            store_url,
            "--burst",
            "--queue",
            "b",
            "--queue",
            "d",
            "--poll",
            "0.05",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 run(s) executed" in result.output
    assert _statuses(app, [b, c, d]) == ["completed", "pending", "completed"]


def test_empty_queue_name_is_refused(app: outlast.App) -> None:
    with pytest.raises(ValueError, match="queue names must not be empty"):
        Worker(app, queues=["a", ""])


@pytest.mark.postgres
def test_workers_of_other_queues_do_not_take_the_wake_up(pg_url: str) -> None:
    """Two idle waiters of queue a queue up for the wake token before one of queue b; a run
    enqueued in b must wake the b waiter (its group has a token of its own), not only hand
    the token from one a waiter to the other."""
    groups = ["queues:a", "queues:a", "queues:b"]
    stores = [open_store(pg_url) for _ in groups]
    woken = [0] * len(stores)
    done = threading.Event()

    def idle(i: int) -> None:
        while not done.is_set():
            if stores[i].wait_for_work(30.0, groups[i]):  # no poll tick: only wake-ups
                woken[i] += 1

    threads = [threading.Thread(target=idle, args=(i,)) for i in range(len(stores))]
    try:
        for i, s in enumerate(stores):
            s.attach(f"w{i}", lambda run_id: None)
        for t in threads:
            t.start()
            time.sleep(0.8)  # in this order in the lock's queue, each settled
        time.sleep(1.0)
        before = list(woken)
        stores[0].create_run(NewRun("one", "wf", b"", "h", queue="b"))
        deadline = time.monotonic() + 5.0
        while woken[2] == before[2] and time.monotonic() < deadline:
            time.sleep(0.05)
        after = list(woken)  # before the wake-ups of the shutdown below
    finally:
        done.set()
        for s in stores:
            s.wake_waiters()
        for t in threads:
            t.join(5)
        for s in stores:
            s.close()
    assert after[2] > before[2], (before, after)
