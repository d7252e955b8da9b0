"""Retrying a child run (docs/versioning.md, "Retrying a child"): a parent still waiting gets
the retried child's new outcome; a parent that already recorded the failure keeps it until
it is retried itself."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

import outlast
from outlast.worker import Worker


def build(url: str, broken: dict[str, bool], ran: Counter[str]) -> outlast.App:
    """``parent`` starts child ``kid`` and returns what it returns; ``child`` waits for "go",
    runs ``work`` (which fails while ``broken["work"]``), then waits for "go2"."""
    app = outlast.App(url, hibernate_after=0.1)

    @app.step
    def work() -> str:
        ran["work"] += 1
        if broken["work"]:
            raise ValueError("work is broken")
        return "worked"

    @app.workflow
    def child(ctx: outlast.Context) -> str:
        ctx.wait_for("go")
        work()
        return str(ctx.wait_for("go2"))

    @app.workflow
    def parent(ctx: outlast.Context) -> str:
        ran["parent"] += 1
        return "got " + ctx.start_child(child, run_id="kid").result()

    return app


def wait_until(app: outlast.App, **statuses: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        runs = {rid: app.store.get_run(rid) for rid in statuses}
        if all(r is not None and r.status == statuses[rid] for rid, r in runs.items()):
            return
        assert time.monotonic() < deadline, runs
        time.sleep(0.02)


@pytest.fixture
def opened() -> Iterator[list[outlast.App]]:
    """Apps a test opened, closed after it (and after its workers stopped: this fixture is
    asked for first, so it is torn down last)."""
    apps: list[outlast.App] = []
    yield apps
    for app in apps:
        app.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[[outlast.App], None]]:
    """Starts a worker on an app in a thread; every one is stopped after the test."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start(app: outlast.App) -> None:
        w = Worker(app, concurrency=2, poll=0.05)
        thread = threading.Thread(target=w.run, daemon=True)
        thread.start()
        started.append((w, thread))

    yield start
    for w, thread in started:
        w.stop()
        thread.join(10)


def _fail_the_child_while_the_parent_waits(
    url: str, broken: dict[str, bool], ran: Counter[str]
) -> outlast.App:
    """Both runs suspended, then the child fails with nobody running the parent: the parent
    is still waiting (its wake-up is due) when the child is retried."""
    first = build(url, broken, ran)
    first.start("parent", run_id="p")
    wait_until(first, kid="suspended", p="suspended")
    first.close()
    app = build(url, broken, ran)
    app.send("kid", "go", 1)
    with pytest.raises(ValueError, match="work is broken"):
        app.handle("kid").result(timeout=20)
    assert app.get_run("p", steps=False).status == "suspended"
    return app


def test_a_waiting_parent_gets_the_retried_childs_new_outcome(
    store_url: str, opened: list[outlast.App], start_worker: Callable[[outlast.App], None]
) -> None:
    broken, ran = {"work": True}, Counter[str]()
    app = _fail_the_child_while_the_parent_waits(store_url, broken, ran)
    opened.append(app)
    broken["work"] = False
    app.retry("kid", execute=False)
    start_worker(app)
    wait_until(app, kid="suspended")  # waits for "go2": the retried child has no outcome yet
    wait_until(app, p="suspended")
    # The parent waits for the retry's notice: the failure's notice, still queued at the
    # parent, no longer wakes it (it used to, on every release: a hot loop while the child
    # waited).
    parent = app.store.get_run("p")
    assert parent is not None and parent.wait_event == "outlast.child-retry1:kid"
    epoch = parent.epoch
    time.sleep(1.0)  # a dozen worker polls: a parent woken by a stale notice would move on
    still = app.store.get_run("p")
    assert still is not None and still.epoch == epoch and still.status == "suspended"
    app.send("kid", "go2", "fine")
    assert app.handle("p").result(timeout=20) == "got fine"
    assert ran["work"] == 2  # once failing, once retried
    steps = app.get_run("p").steps
    assert [(s.kind, s.status) for s in steps] == [
        ("child", "completed"),
        ("child_result", "completed"),
    ]


def test_a_parent_that_recorded_the_failure_keeps_it_until_retried(
    store_url: str, opened: list[outlast.App]
) -> None:
    broken, ran = {"work": True}, Counter[str]()
    app = _fail_the_child_while_the_parent_waits(store_url, broken, ran)
    opened.append(app)
    with pytest.raises(ValueError, match="work is broken"):
        app.handle("p").result(timeout=20)  # the parent records the child's failure, and fails
    broken["work"] = False
    app.retry("kid")
    app.send("kid", "go2", "fine")
    assert app.handle("kid").result(timeout=20) == "fine"
    # The parent's journal holds the child's failure: it keeps it (no run's recorded past
    # changes under it) ...
    assert app.get_run("p", steps=False).status == "failed"
    with pytest.raises(ValueError, match="work is broken"):
        app.handle("p").result(timeout=5)
    # ... until it is retried: the retry drops that recorded result, and the parent reads the
    # child's new one without running the child again.
    assert app.retry("p").result(timeout=20) == "got fine"
    assert ran["work"] == 2
    assert [s.status for s in app.get_run("p").steps] == ["completed", "completed"]
