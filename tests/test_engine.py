"""The engine on both stores, with every workflow and step written both sync and async.

``Agent`` builds the same workflows in either mode, so one test body checks both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pydantic
import pytest

import outlast
from outlast import Context


@dataclasses.dataclass(frozen=True)
class Finding:
    topic: str
    score: float
    tags: tuple[str, ...]


class Summary(pydantic.BaseModel):
    title: str
    points: list[str]


class Crash(BaseException):
    """Stands in for the process dying mid-run (a BaseException, like SystemExit)."""


class Agent:
    """A research workflow in sync or async form; ``calls`` counts real step executions."""

    def __init__(self, url: str, mode: str, **app_options: Any) -> None:
        self.mode = mode
        self.app = outlast.App(url, **app_options)
        self.calls: Counter[str] = Counter()
        self.crash_after: str | None = None
        self.keys: list[str] = []
        app, calls = self.app, self.calls

        def body_search(topic: str) -> Finding:
            calls["search"] += 1
            self.keys.append(outlast.idempotency_key())
            return Finding(topic, len(topic) / 10, ("a", "b"))

        def body_summarize(findings: list[Finding]) -> Summary:
            calls["summarize"] += 1
            return Summary(title="s", points=[f.topic for f in findings])

        if mode == "sync":

            @app.step
            def search(topic: str) -> Finding:
                return body_search(topic)

            @app.step
            def summarize(findings: list[Finding]) -> Summary:
                return body_summarize(findings)

            @app.workflow
            def research(ctx: Context, topics: list[str]) -> dict[str, Any]:
                found = []
                for t in topics:
                    found.append(search(t))
                    if self.crash_after == t:
                        raise Crash()
                return {"summary": summarize(found), "when": ctx.now()}

        else:

            @app.step
            async def search(topic: str) -> Finding:
                await asyncio.sleep(0)
                return body_search(topic)

            @app.step
            async def summarize(findings: list[Finding]) -> Summary:
                return body_summarize(findings)

            @app.workflow
            async def research(ctx: Context, topics: list[str]) -> dict[str, Any]:
                found = []
                for t in topics:
                    found.append(await search(t))
                    if self.crash_after == t:
                        raise Crash()
                return {"summary": await summarize(found), "when": ctx.now()}

        self.research = research
        self.search = search

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "sync":
            return self.app.run(self.research, *args, **kwargs)
        return asyncio.run(self.app.run_async(self.research, *args, **kwargs))


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_run_returns_result_and_journals_steps(store_url: str, mode: str) -> None:
    agent = Agent(store_url, mode)
    result = agent.run(["acme", "globex"], run_id="r1")
    assert result["summary"] == Summary(title="s", points=["acme", "globex"])
    info = agent.app.get_run("r1")
    assert info.status == "completed"
    assert [s.name for s in info.steps] == ["search", "search", "summarize", "now"]
    assert all(s.status == "completed" and s.attempts == 1 for s in info.steps)
    assert info.result["summary"] == result["summary"]
    assert agent.keys == ["r1:search:1", "r1:search:2"]


def test_crash_resumes_without_redoing_steps(store_url: str, mode: str) -> None:
    agent = Agent(store_url, mode)
    agent.crash_after = "globex"
    with pytest.raises(Crash):
        agent.run(["acme", "globex", "initech"], run_id="r2")
    assert agent.app.get_run("r2").status == "pending"  # released for anyone to resume
    agent.crash_after = None
    result = agent.run(["acme", "globex", "initech"], run_id="r2")
    assert result["summary"].points == ["acme", "globex", "initech"]
    assert agent.calls == Counter(search=3, summarize=1)
    # A finished run is returned from the store, not run again.
    again = agent.run(["acme", "globex", "initech"], run_id="r2")
    assert again == result
    assert agent.calls == Counter(search=3, summarize=1)


def test_replayed_values_keep_their_types(store_url: str, mode: str) -> None:
    agent = Agent(store_url, mode)
    agent.crash_after = "b"
    with pytest.raises(Crash):
        agent.run(["a", "b"], run_id="types")
    fresh = Agent(store_url, mode)  # a new process: nothing cached in memory
    result = fresh.run(["a", "b"], run_id="types")
    assert fresh.calls == Counter(summarize=1)
    assert result["summary"] == Summary(title="s", points=["a", "b"])
    assert type(result["summary"]) is Summary


def test_same_run_id_with_other_arguments_is_refused(store_url: str, mode: str) -> None:
    agent = Agent(store_url, mode)
    agent.run(["a"], run_id="r3")
    with pytest.raises(outlast.RunConflict, match="r3"):
        agent.run(["b"], run_id="r3")


def test_divergence_names_run_position_and_both_calls(store_url: str) -> None:
    app = outlast.App(store_url)

    @app.step
    def fetch(x: int) -> int:
        return x

    @app.step
    def other(x: int) -> int:
        return x

    crash = {"on": True}

    @app.workflow(name="flow")
    def flow_v1(ctx: Context) -> int:
        fetch(1)
        if crash["on"]:
            raise Crash()
        return fetch(2)

    with pytest.raises(Crash):
        app.run(flow_v1, run_id="d1")

    app2 = outlast.App(store_url)
    other2 = app2.step(name="other")(lambda x: x)

    @app2.workflow(name="flow")
    def flow_v2(ctx: Context) -> int:
        return int(other2(1))

    with pytest.raises(outlast.NonDeterminismError) as err:
        app2.run(flow_v2, run_id="d1")
    assert err.value.run_id == "d1" and err.value.position == 0
    assert "fetch" in str(err.value) and "other" in str(err.value)
    assert app2.get_run("d1").status == "failed"


def test_divergent_arguments_are_detected(store_url: str) -> None:
    app = outlast.App(store_url)
    arg = {"v": 1}

    @app.step
    def fetch(x: int) -> int:
        return x

    @app.workflow
    def flow(ctx: Context) -> int:
        fetch(arg["v"])
        if arg["v"] == 1:
            raise Crash()
        return 0

    with pytest.raises(Crash):
        app.run(flow, run_id="d2")
    arg["v"] = 2
    with pytest.raises(outlast.NonDeterminismError) as caught:
        app.run(flow, run_id="d2")
    # both the recorded and the new arguments are named (issue 12, item 3)
    assert "recorded with arguments (1), but the code passes (2) now" in str(caught.value)
    assert caught.value.recorded.startswith("step 'fetch'(1)")  # type: ignore[attr-defined]


def test_divergent_arguments_show_bounded_previews(store_url: str) -> None:
    app = outlast.App(store_url)
    arg: dict[str, Any] = {"text": "a" * 5000, "flag": True}

    @app.step
    def write(text: str, *, flag: bool) -> int:
        return len(text)

    @app.workflow
    def flow(ctx: Context) -> int:
        n = write(arg["text"], flag=arg["flag"])
        if arg["flag"]:
            raise Crash()
        return n

    with pytest.raises(Crash):
        app.run(flow, run_id="d3")
    arg["flag"] = False
    with pytest.raises(outlast.NonDeterminismError) as caught:
        app.run(flow, run_id="d3")
    message = str(caught.value)
    assert "flag=True), but the code passes ('aaa" in message and "flag=False) now" in message
    assert len(message) < 1500  # a 5,000-character argument is shown cut, not whole


def test_retries_back_off_and_are_recorded(store_url: str, mode: str) -> None:
    app = outlast.App(store_url)
    attempts: list[float] = []
    keys: set[str] = set()
    policy = outlast.Retry(attempts=3, initial=0.01, max_delay=0.05)

    def flaky_body() -> str:
        attempts.append(time.monotonic())
        keys.add(outlast.idempotency_key())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    if mode == "sync":
        flaky = app.step(retry=policy)(flaky_body)

        @app.workflow
        def wf(ctx: Context) -> str:
            return str(flaky())

        assert app.run(wf, run_id="retry") == "ok"
    else:

        async def flaky_async() -> str:
            return flaky_body()

        flaky_a = app.step(retry=policy, name="flaky_body")(flaky_async)

        @app.workflow
        async def wf_async(ctx: Context) -> str:
            return str(await flaky_a())

        assert asyncio.run(app.run_async(wf_async, run_id="retry")) == "ok"
    steps = app.get_run("retry").steps
    assert steps[0].attempts == 3 and steps[0].status == "completed"
    assert keys == {"retry:flaky_body:1"}  # stable across attempts


def test_terminal_error_is_not_retried_and_replays(store_url: str) -> None:
    app = outlast.App(store_url)
    calls = Counter[str]()

    @app.step(retry=outlast.Retry(attempts=5, initial=0.01))
    def charge() -> None:
        calls["charge"] += 1
        raise outlast.TerminalError("card declined")

    @app.step
    def note(msg: str) -> str:
        calls["note"] += 1
        return msg

    crash = {"on": True}

    @app.workflow
    def pay(ctx: Context) -> str:
        try:
            charge()
        except outlast.TerminalError as exc:
            note(str(exc))
        if crash["on"]:
            raise Crash()
        return "handled"

    with pytest.raises(Crash):
        app.run(pay, run_id="t1")
    crash["on"] = False
    assert app.run(pay, run_id="t1") == "handled"
    assert calls == Counter(charge=1, note=1)
    steps = app.get_run("t1").steps
    assert steps[0].status == "failed" and "card declined" in (steps[0].error or "")


def test_retry_after_hint_is_honoured(store_url: str) -> None:
    app = outlast.App(store_url)
    times: list[float] = []

    @app.step(retry=outlast.Retry(attempts=2, initial=0.0, max_delay=5))
    def limited() -> int:
        times.append(time.monotonic())
        if len(times) == 1:
            raise outlast.RetryableError("429", retry_after=0.3)
        return 1

    @app.workflow
    def wf(ctx: Context) -> int:
        return int(limited())

    assert app.run(wf) == 1
    assert times[1] - times[0] >= 0.3


def test_failed_workflow_raises_and_is_stored(store_url: str, mode: str) -> None:
    app = outlast.App(store_url)

    if mode == "sync":

        @app.workflow
        def boom(ctx: Context) -> None:
            raise KeyError("missing")

        with pytest.raises(KeyError):
            app.run(boom, run_id="f1")
        with pytest.raises(KeyError):  # from the store this time
            app.run(boom, run_id="f1")
    else:

        @app.workflow
        async def boom_async(ctx: Context) -> None:
            raise KeyError("missing")

        with pytest.raises(KeyError):
            asyncio.run(app.run_async(boom_async, run_id="f1"))
    info = app.get_run("f1")
    assert info.status == "failed" and isinstance(info.error, KeyError)


def test_ctx_values_replay_identically(store_url: str) -> None:
    app = outlast.App(store_url)
    seen: list[tuple[float, str, float]] = []
    crash = {"on": True}

    @app.workflow
    def wf(ctx: Context) -> tuple[float, str, float]:
        values = (ctx.now(), ctx.uuid(), ctx.random())
        seen.append(values)
        if crash["on"]:
            raise Crash()
        return values

    with pytest.raises(Crash):
        app.run(wf, run_id="v1")
    crash["on"] = False
    assert app.run(wf, run_id="v1") == seen[0]
    assert seen[0] == seen[1]


def test_step_outside_workflow_just_runs(store_url: str) -> None:
    app = outlast.App(store_url)

    @app.step
    def double(x: int) -> int:
        return x * 2

    assert double(4) == 8
    with pytest.raises(outlast.OutlastError, match="outside a journaled step"):
        outlast.idempotency_key()


def test_unstorable_result_fails_the_step_and_keeps_the_journal(store_url: str) -> None:
    app = outlast.App(store_url)

    @app.step
    def fine() -> int:
        return 1

    @app.step
    def leaky() -> Any:
        return threading.Lock()

    @app.workflow
    def wf(ctx: Context) -> None:
        fine()
        leaky()

    with pytest.raises(outlast.SerializationError, match="leaky") as err:
        app.run(wf, run_id="s1")
    assert "lock" in str(err.value).lower()
    info = app.get_run("s1")
    assert info.status == "failed"
    assert [(s.name, s.status) for s in info.steps] == [("fine", "completed"), ("leaky", "failed")]


def test_unknown_run_and_bad_url() -> None:
    with pytest.raises(outlast.ConfigurationError, match="bad store URL"):
        _ = outlast.App("mysql://nope").store
    with pytest.raises(outlast.ConfigurationError, match="does not exist"):
        _ = outlast.App("sqlite:////nonexistent-dir/x.db").store


def test_sqlite_page_size_is_chosen_for_a_new_file_only(tmp_path: Path) -> None:
    import sqlite3

    from outlast.store import open_store

    def size(path: Path) -> int:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("PRAGMA page_size").fetchone()[0])

    small, default = tmp_path / "small.db", tmp_path / "default.db"
    open_store(f"sqlite:///{small}?page_size=4096").close()
    open_store(f"sqlite:///{default}").close()
    assert (size(small), size(default)) == (4096, 8192)
    open_store(f"sqlite:///{small}?page_size=16384").close()  # an existing file keeps its own
    assert size(small) == 4096
    for bad in ("1000", "x", "131072"):
        with pytest.raises(outlast.ConfigurationError, match="power of two"):
            open_store(f"sqlite:///{tmp_path / 'bad.db'}?page_size={bad}")


def test_unknown_run_id_is_reported(store_url: str) -> None:
    app = outlast.App(store_url)
    with pytest.raises(outlast.RunNotFound, match="nope"):
        app.get_run("nope")
    with pytest.raises(outlast.RunNotFound):
        app.cancel("nope")
    with pytest.raises(outlast.RunNotFound):
        app.handle("nope")


def test_cancel_stops_at_next_step_boundary(store_url: str, mode: str) -> None:
    app = outlast.App(store_url)
    started = threading.Event()
    swallowed: list[str] = []

    @app.step
    def tick(i: int) -> int:
        started.set()
        time.sleep(0.05)
        return i

    @app.workflow
    def loop(ctx: Context) -> int:
        total = 0
        for i in range(200):
            try:
                total += tick(i)
            except Exception:  # user code cannot swallow a cancel
                swallowed.append("x")
        return total

    handle = app.start(loop, run_id="c1")
    assert started.wait(5)
    assert app.cancel("c1") == ["c1"]
    with pytest.raises(outlast.RunCancelled):
        handle.result(timeout=10)
    assert handle.status == "cancelled"
    assert swallowed == []
    assert len(app.get_run("c1").steps) < 200


def test_start_returns_handle_and_result(store_url: str) -> None:
    agent = Agent(store_url, "sync")
    handle = agent.app.start(agent.research, ["x"], run_id="h1")
    assert handle.run_id == "h1"
    assert handle.result(timeout=10)["summary"].points == ["x"]
    assert handle.status == "completed"


def test_corrupted_journal_row_gives_clear_error(sqlite_url: str) -> None:
    import sqlite3

    agent = Agent(sqlite_url, "sync")
    agent.crash_after = "a"
    with pytest.raises(Crash):
        agent.run(["a", "b"], run_id="bad")
    path = sqlite_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # commit, then close
        conn.execute("UPDATE outlast_journal SET output = x'7b7b7b' WHERE run_id = 'bad'")
    agent.crash_after = None
    with pytest.raises(outlast.SerializationError, match="search"):
        agent.run(["a", "b"], run_id="bad")


def test_large_results_are_stored_once_as_blobs(store_url: str) -> None:
    app = outlast.App(store_url)
    doc = ["x" * 3000, "y" * 3000]

    @app.step
    def fetch() -> list[str]:
        return doc

    @app.workflow
    def big(ctx: Context) -> dict[str, Any]:
        return {"docs": fetch(), "n": 2}

    assert app.run(big, run_id="big") == {"docs": doc, "n": 2}
    info = app.get_run("big")
    assert info.result == {"docs": doc, "n": 2}
    # Both the step's entry and the run's result refer to the same blobs: each stored once.
    assert len(info._output or b"") < 1000
    assert len(app.store.load_journal("big")[0].output or b"") < 1000
    fresh = outlast.App(store_url)
    fresh.workflow(name="big")(lambda ctx: None)
    assert fresh.run("big", run_id="big") == {"docs": doc, "n": 2}


def test_store_outage_stops_the_run_instead_of_failing_it(tmp_path: Any) -> None:
    import sqlite3

    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}?busy_timeout=100"
    app = outlast.App(url, lease=1.0)
    calls: Counter[str] = Counter()
    caught: list[str] = []
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    @app.step
    def first() -> int:
        calls["first"] += 1
        # Another process takes the write lock for longer than our busy timeout.
        if calls["first"] == 1:
            blocker.execute("BEGIN EXCLUSIVE")
        return 1

    @app.step
    def second() -> int:
        calls["second"] += 1
        return 2

    @app.workflow
    def flow(ctx: Context) -> int:
        try:
            a = first()
        except Exception as exc:  # an outage must not surface as the step's error
            caught.append(type(exc).__name__)
            raise
        return a + second()

    with pytest.raises(outlast.StoreError) as info:  # the caller sees the outage itself...
        app.run(flow, run_id="outage")
    assert info.value.transient and "database is locked" in str(info.value)
    assert "'outage'" in str(info.value) and "'first'" in str(info.value)
    assert caught == []  # ...but the workflow never saw it as the step's error
    blocker.execute("COMMIT")
    assert app.get_run("outage").status in ("running", "pending")  # not failed
    assert app.run(flow, run_id="outage") == 3  # resumes once the store is back
    assert calls["first"] == 2  # its record was lost with the outage: it ran again
    assert calls["second"] == 1
    info = app.get_run("outage")
    assert info.status == "completed" and [s.name for s in info.steps] == ["first", "second"]
    blocker.close()


def test_a_journal_with_more_calls_than_the_code_makes_is_a_divergence(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)

    @app.step
    def a() -> int:
        return 1

    @app.step
    def b() -> int:
        return 2

    class Crash(BaseException):
        """The process dies after b() was recorded: the run is left pending."""

    @app.workflow
    def flow(ctx: Context) -> int:
        a()
        ctx.sleep(0.01)
        b()
        raise Crash

    with pytest.raises(Crash):
        app.run(flow, run_id="shrunk")
    fresh = outlast.App(sqlite_url)
    fresh.step(name="a")(lambda: 1)

    @fresh.workflow(name="flow")
    def shorter(ctx: Context) -> int:  # b() was removed from the end
        x = a()
        ctx.sleep(0.01)
        return x

    with pytest.raises(outlast.NonDeterminismError) as info:
        fresh.run(shorter, run_id="shrunk")
    assert "'b'" in str(info.value) and "finished without calling it" in str(info.value)
    app.close()
    fresh.close()


def test_a_value_this_process_cannot_read_leaves_the_run_for_one_that_can(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import sys
    import types

    module = types.ModuleType("outlast_test_elsewhere")
    monkeypatch.setitem(sys.modules, "outlast_test_elsewhere", module)
    exec(
        "import dataclasses\n@dataclasses.dataclass\nclass Params:\n    n: int\n",
        module.__dict__,
    )
    params = module.Params(4)
    assert dataclasses.is_dataclass(params)
    app = outlast.App(sqlite_url, lease=1.0)

    @app.workflow
    def uses(ctx: Context, p: Any) -> int:
        return int(p.n) * 2

    app.enqueue(uses, params, run_id="elsewhere")
    monkeypatch.delitem(sys.modules, "outlast_test_elsewhere")  # "another process"
    with pytest.raises(outlast.UnreadableValue) as info:
        app.handle("elsewhere").result()
    assert "outlast_test_elsewhere" in str(info.value)
    stored = app.get_run("elsewhere", steps=False)
    assert stored.status == "suspended"  # never failed: not the run's fault
    assert stored.reason is not None and "unreadable here" in stored.reason
    monkeypatch.setitem(sys.modules, "outlast_test_elsewhere", module)  # a process that can
    assert app.handle("elsewhere").result(timeout=10) == 8
    app.close()
