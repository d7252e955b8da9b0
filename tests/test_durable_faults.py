"""The one fault rule of the durable-call path, on both stores.

- A write the database refuses for good (a key SQLite cannot encode, a NUL byte PostgreSQL
  cannot store) fails the step with the database's reason: the body runs once, never in a loop.
- An outage (SQLite: another connection holds the write lock past the busy timeout;
  PostgreSQL: a TCP proxy the test cuts) in each durable primitive stops the run for
  resumption: the workflow never sees a driver exception, the caller gets a transient
  StoreError naming the run, and running it again once the store is back completes it without
  re-running what was recorded.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.tcp_proxy import TcpProxy

import outlast
from outlast import Context


class Outage:
    """Makes the store unreachable on demand: ``start()`` then ``end()``."""

    def __init__(self, url: str, start: Callable[[], None], end: Callable[[], None]) -> None:
        self.url, self._start, self._end = url, start, end
        self.active = False

    def start(self) -> None:
        if not self.active:
            self.active = True
            self._start()

    def end(self) -> None:
        if self.active:
            self.active = False
            self._end()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    if request.param == "sqlite":
        path = tmp_path / "outage.db"
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        o = Outage(
            f"sqlite:///{path}?busy_timeout=100",
            lambda: blocker.execute("BEGIN EXCLUSIVE"),
            lambda: blocker.execute("COMMIT"),
        )
        yield o
        o.end()
        blocker.close()
        return
    pg_url = request.getfixturevalue("pg_url")
    proxy = TcpProxy(("127.0.0.1", 5432))
    o = Outage(proxy.url(pg_url) + "&retry_for=0.3", proxy.cut, proxy.restore)
    yield o
    o.end()
    proxy.close()


def _outlasts(app: outlast.App, wf: Any, outage: Outage, run_id: str, *args: Any) -> Any:
    """Run ``wf`` into the outage (the caller must see a transient StoreError naming the run),
    end the outage, and run it again to its result."""
    with pytest.raises(outlast.StoreError) as info:
        app.run(wf, *args, run_id=run_id)
    assert info.value.transient, info.value
    assert repr(run_id) in str(info.value)
    outage.end()
    deadline = time.monotonic() + 30
    while True:  # the store may take a moment to answer; the run waits out its back-off
        try:
            assert app.get_run(run_id, steps=False).status != "failed"
            return app.run(wf, *args, run_id=run_id)
        except outlast.StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


PRIMITIVES = ["step", "transaction", "event", "stash", "child", "graph", "now"]


@pytest.mark.parametrize("primitive", PRIMITIVES)
def test_an_outage_in_each_primitive_stops_the_run_for_resumption(
    outage: Outage, primitive: str
) -> None:
    app = outlast.App(outage.url, lease=1.0)
    ran: Counter[str] = Counter()
    caught: list[str] = []

    @app.step
    def before() -> int:
        ran["before"] += 1
        return 1

    @app.step
    def after(x: int) -> int:
        ran["after"] += 1
        return x + 1

    @app.step
    def work() -> int:
        ran["work"] += 1
        return 10

    @app.transaction
    def tx(conn: Any) -> int:
        ran["tx"] += 1
        conn.execute("SELECT 1")
        return 10

    @app.workflow
    def kid(x: int) -> int:
        ran["kid"] += 1
        return x * 10

    graph = app.graph("g")

    @graph.node
    def only(state: dict[str, Any]) -> dict[str, Any]:
        ran["node"] += 1
        if ran["node"] == 1:
            outage.start()
        return {"v": 10}

    graph.edge(outlast.START, "only")
    graph.edge("only", outlast.END)

    @app.workflow
    def flow(ctx: Context) -> int:
        base = before()
        first = ran["flow"] == 0
        ran["flow"] += 1
        if first and primitive != "graph":
            outage.start()
        try:
            if primitive == "step":
                value = work()
            elif primitive == "transaction":
                value = tx()
            elif primitive == "event":
                value = ctx.wait_for("go", timeout=0.5) if not first else ctx.wait_for("go")
            elif primitive == "stash":
                ctx.stash({"at": 1})
                value = 10
            elif primitive == "child":
                value = ctx.start_child(kid, 1).result()
            else:
                value = 10 if ctx.now() > 0 else 0
        except Exception as exc:  # a store fault must never reach user code as an Exception
            caught.append(f"{type(exc).__name__}: {exc}")
            raise
        return after(base + value)

    @flow.on_recovered
    def back(ctx: Context, snap: dict[str, Any]) -> int:
        return after(1 + 10)

    if primitive == "event":  # the event is sent once the outage ends
        original_end = outage._end

        def end_and_send() -> None:
            original_end()
            deadline = time.monotonic() + 30
            while True:
                try:
                    app.send(f"o-{primitive}", "go", 10)
                    return
                except outlast.StoreError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)

        outage._end = end_and_send
    if primitive == "graph":
        assert _outlasts(app, graph, outage, f"o-{primitive}", {}) == {"v": 10}
        assert ran["node"] == 2  # its update was not recorded: it runs again, once
        app.close()
        return
    assert _outlasts(app, flow, outage, f"o-{primitive}") == 12
    assert caught == []
    assert ran["before"] == 1  # recorded before the outage: never again
    assert ran["after"] == 1
    if primitive == "transaction":
        assert ran["tx"] == 1  # its transaction could not start during the outage
    if primitive == "child":
        assert ran["kid"] == 1
    info = app.get_run(f"o-{primitive}")
    assert info.status == "completed"
    app.close()


def test_a_model_call_outage_stops_the_run_and_the_call_is_sent_once_more(outage: Outage) -> None:
    openai = pytest.importorskip("openai")
    from outlast.testing import FakeLLMServer

    with FakeLLMServer() as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
        llm = outlast.llm.wrap(client)
        app = outlast.App(outage.url, lease=1.0)
        caught: list[str] = []
        executions: list[int] = []

        @app.step
        def before() -> int:
            return 1

        @app.workflow
        def chat(ctx: Context) -> str:
            before()
            executions.append(1)
            if len(executions) == 1:
                outage.start()
            try:
                reply = llm.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
            except Exception as exc:
                caught.append(type(exc).__name__)
                raise
            return str(reply.choices[0].message.content)

        assert isinstance(_outlasts(app, chat, outage, "o-llm"), str)
        assert caught == []
        # SQLite readers are not blocked: the request went out and its record was lost, so it
        # is sent once more. PostgreSQL was unreachable before sending (the budget read).
        assert server.count() == (2 if outage.url.startswith("sqlite") else 1)
        client.close()
        app.close()


# -- permanent refusals ------------------------------------------------------------------------


def _bad_key(store_url: str) -> str:
    # SQLite cannot encode a lone surrogate; PostgreSQL text cannot hold NUL.
    return "o-\ud800" if store_url.startswith("sqlite") else "o-\x00-1"


def test_a_write_the_database_refuses_fails_the_step_once_never_a_loop(store_url: str) -> None:
    app = outlast.App(store_url)
    charged: list[str] = []

    @app.step(retry=outlast.Retry(attempts=3, initial=0.01))
    def charge(order: str) -> str:
        charged.append(order)
        return "charged"

    @app.workflow
    def checkout(ctx: Context) -> str:
        return str(charge.call("o-1", key=_bad_key(store_url)))

    started = time.monotonic()
    with pytest.raises(outlast.StoreError) as info:
        app.run(checkout, run_id="refused")
    assert time.monotonic() - started < 10
    assert not info.value.transient
    assert len(charged) <= 3 and len(charged) == 1  # the body ran once: no retry, no loop
    message = str(info.value)
    assert "'charge'" in message and "'refused'" in message and "refused" in message
    run = app.get_run("refused", steps=False)
    assert run.status == "failed"
    error = run.error
    assert error is not None and "could not be recorded" in str(error)
    # Asking again gives the stored failure; the step does not run again.
    with pytest.raises(outlast.OutlastError):
        app.run(checkout, run_id="refused")
    assert len(charged) == 1
    app.close()


def test_an_at_most_once_intent_the_database_refuses_never_runs_the_effect(
    store_url: str,
) -> None:
    app = outlast.App(store_url)
    sent: list[int] = []

    @app.step(at_most_once=True)
    def email(n: int) -> str:
        sent.append(n)
        return "ok"

    @app.workflow
    def notify(ctx: Context) -> str:
        return str(email.call(1, key=_bad_key(store_url)))

    with pytest.raises(outlast.StoreError) as info:
        app.run(notify, run_id="amo")
    assert not info.value.transient and "'email'" in str(info.value)
    assert sent == []  # the intent could not be recorded: the effect never ran
    assert app.get_run("amo", steps=False).status == "failed"
    app.close()


# -- disk full ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_a_clear_error_and_the_run_resumes_after_space_is_freed(
    small_disk: Path,
) -> None:
    app = outlast.App(f"sqlite:///{small_disk}/full.db?busy_timeout=200", lease=1.0)
    ran: Counter[int] = Counter()

    @app.step
    def chunk(i: int) -> str:
        ran[i] += 1
        return os.urandom(40_000).hex()  # 80 KB a step, ~45 KB once compressed

    @app.workflow
    def fill(ctx: Context, n: int) -> int:
        return sum(len(chunk(i)) for i in range(n))

    ballast = small_disk / "ballast"
    started = time.monotonic()
    with pytest.raises(outlast.StoreError) as info:
        app.run(fill, 24, run_id="full")
    assert time.monotonic() - started < 30
    assert info.value.transient and "is full" in str(info.value) and "'full'" in str(info.value)
    done_before = [i for i, n in ran.items() if n == 1]
    assert done_before and max(ran.values()) == 1  # nothing ran twice, no loop
    # Free space: the ballast a test would remove is replaced by growing the mount.
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    assert not ballast.exists()
    deadline = time.monotonic() + 30
    while True:
        try:
            total = app.run(fill, 24, run_id="full")
            break
        except outlast.StoreError:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert total == 24 * 80_000
    recorded = [s for s in app.get_run("full").steps if s.name == "chunk"]
    assert len(recorded) == 24
    # Only the step whose result could not be written ran twice.
    assert sum(1 for n in ran.values() if n == 2) <= 1, ran
    app.close()
