"""Short runs: ``app.run`` with a fresh id records the run with its first journal entry.

Nobody else can know a fresh id, so the run is written in the same commit as its first
durable call (one commit less per run). It is recorded earlier whenever someone could see it:
when the workflow reads ``ctx.run_id``, before any write other than a journal entry, when the
heartbeat beats during a long first step, and when the run ends before its first entry.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import outlast
from outlast import Context
from outlast.store.base import Page


def _runs(app: outlast.App) -> list[Any]:
    return app.store.list_runs(Page(limit=10))


@pytest.mark.counts_executions
def test_a_fresh_run_is_recorded_with_its_first_entry(store_url: str) -> None:
    app = outlast.App(store_url)
    seen: list[int] = []

    @app.step
    def first() -> int:
        seen.append(len(_runs(app)))  # not written yet: nobody else can know the run
        return 1

    @app.step
    def second() -> int:
        seen.append(len(_runs(app)))
        return 2

    @app.workflow
    def wf(ctx: Context) -> int:
        return first() + second()

    try:
        assert app.run(wf) == 3
        assert seen == [0, 1]
        (run,) = _runs(app)
        assert run.status == "completed" and run.epoch == 1
        assert [e.key for e in app.store.load_journal(run.run_id)] == ["first:1", "second:1"]
        # an explicit run id may name an existing run: it is created (or found) up front
        seen.clear()
        assert app.run(wf, run_id="named") == 3
        assert seen == [2, 2]
    finally:
        app.close()


def test_the_run_is_recorded_once_its_id_is_handed_out(store_url: str) -> None:
    app = outlast.App(store_url)

    @app.workflow
    def wf(ctx: Context) -> str | None:
        run = app.store.get_run(ctx.run_id)
        return None if run is None else run.status

    try:
        assert app.run(wf) == "running"
    finally:
        app.close()


def test_a_run_that_ends_before_its_first_entry_is_recorded(store_url: str) -> None:
    app = outlast.App(store_url)

    @app.workflow
    def ok(ctx: Context, x: int) -> int:
        return x

    @app.workflow
    def bad(ctx: Context) -> None:
        raise ValueError("no steps at all")

    try:
        assert app.run(ok, 7) == 7
        with pytest.raises(ValueError):
            app.run(bad)
        assert sorted(r.status for r in _runs(app)) == ["completed", "failed"]
    finally:
        app.close()


@pytest.mark.counts_executions
def test_the_heartbeat_records_a_run_whose_first_step_is_long(store_url: str) -> None:
    app = outlast.App(store_url)
    inside, go_on = threading.Event(), threading.Event()
    during: list[list[Any]] = []

    @app.step
    def slow() -> int:
        inside.set()
        assert go_on.wait(10)
        return 1

    @app.workflow
    def wf(ctx: Context) -> int:
        return slow()

    try:
        t = threading.Thread(target=lambda: during.append([app.run(wf)]))
        t.start()
        assert inside.wait(10)
        assert _runs(app) == []
        app._heartbeat.beat()  # what the heartbeat thread does every lease / 3
        (run,) = _runs(app)
        assert (run.status, run.owner, run.epoch) == ("running", app.owner, 1)
        go_on.set()
        t.join(10)
        assert during == [[1]]
        assert [e.key for e in app.store.load_journal(run.run_id)] == ["slow:1"]
        assert app.get_run(run.run_id, steps=False).status == "completed"
    finally:
        go_on.set()
        app.close()


@pytest.mark.counts_executions
def test_an_outage_before_the_first_entry_leaves_nothing_and_says_so(tmp_path: Any) -> None:
    import sqlite3

    path = tmp_path / "outage.db"
    app = outlast.App(f"sqlite:///{path}?busy_timeout=100")
    ran: list[str] = []

    @app.step
    def work() -> int:
        ran.append("work")
        return 1

    @app.workflow
    def wf(ctx: Context) -> int:
        return work()

    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        app.store  # noqa: B018 - open and migrate before the outage
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(outlast.StoreError) as info:
            app.run(wf)
        assert info.value.transient and "Nothing of the run was recorded" in str(info.value)
        blocker.execute("COMMIT")
        assert _runs(app) == []
        assert app.run(wf) == 1 and ran == ["work", "work"]
    finally:
        blocker.close()
        app.close()


def test_an_interrupt_before_the_first_entry_propagates(store_url: str) -> None:
    app = outlast.App(store_url)

    @app.workflow
    def wf(ctx: Context) -> None:
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            app.run(wf)
        assert _runs(app) == []
    finally:
        app.close()
