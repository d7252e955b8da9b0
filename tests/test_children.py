"""Child workflows and parallel steps: journaled, cancelled with the parent, and replayed
deterministically under the replay-each-step test mode."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest

import outlast
from outlast.context import REPLAY_EACH_STEP


@pytest.fixture
def app(store_url: str) -> Iterator[outlast.App]:
    a = outlast.App(store_url, hibernate_after=0.3)
    yield a
    a.close()


def test_children_results_are_journaled_with_parent_id(app: outlast.App) -> None:
    ran: Counter[int] = Counter()

    @app.workflow
    def square(n: int) -> int:
        ran[n] += 1
        return n * n

    @app.workflow
    def parent(ctx: outlast.Context) -> list[int]:
        handles = [ctx.start_child(square, i) for i in range(3)]
        return [h.result() for h in handles]

    assert app.run(parent, run_id="p") == [0, 1, 4]
    assert app.run(parent, run_id="p") == [0, 1, 4]  # finished: stored result
    kids = app.list_runs(workflow="square")
    assert sorted(k.run_id for k in kids) == ["p:square:1", "p:square:2", "p:square:3"]
    assert all(k.parent_id == "p" and k.status == "completed" for k in kids)
    assert ran == {0: 1, 1: 1, 2: 1}
    kinds = [s.kind for s in app.get_run("p").steps]
    assert kinds == ["child"] * 3 + ["child_result"] * 3


def test_child_failure_reaches_the_parent_and_is_replayed(app: outlast.App) -> None:
    @app.workflow
    def bad() -> None:
        raise ValueError("no good")

    @app.workflow
    def parent(ctx: outlast.Context) -> str:
        h = ctx.start_child(bad)
        try:
            h.result()
        except ValueError as exc:
            ctx.sleep(0.5)  # hibernates: the replay must raise the same error
            return f"caught {exc}"
        return "no error"

    assert app.run(parent, run_id="pf") == "caught no good"


def test_child_that_hibernates_wakes_its_parent(app: outlast.App) -> None:
    @app.workflow
    def child(ctx: outlast.Context) -> object:
        return ctx.wait_for("go")

    @app.workflow
    def parent(ctx: outlast.Context) -> object:
        return ctx.start_child(child, run_id="kid").result()

    h = app.start(parent, run_id="pw")
    deadline = time.monotonic() + 20
    while app.store.get_run("kid") is None or app.get_run("kid").status != "suspended" or h.status != "suspended":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    app.send("kid", "go", "yes")
    assert app.handle("kid").result(timeout=20) == "yes"  # this process runs the child
    assert h.result(timeout=20) == "yes"  # its finish woke the parent at once


def test_cancelling_the_parent_cancels_its_children(app: outlast.App) -> None:
    @app.workflow
    def child(ctx: outlast.Context) -> object:
        return ctx.wait_for("never")

    @app.workflow
    def parent(ctx: outlast.Context) -> object:
        return ctx.start_child(child, run_id="c1").result()

    h = app.start(parent, run_id="pc")
    deadline = time.monotonic() + 20
    while h.status != "suspended":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert sorted(app.cancel("pc")) == ["c1", "pc"]
    assert app.get_run("c1").status == "cancelled"
    with pytest.raises(outlast.RunCancelled):
        h.result(timeout=5)


def test_explicit_child_id_owned_by_someone_else_is_refused(app: outlast.App) -> None:
    @app.workflow
    def child() -> int:
        return 1

    @app.workflow
    def parent(ctx: outlast.Context) -> int:
        return int(ctx.start_child(child, run_id="taken").result())

    app.run(child, run_id="taken")
    with pytest.raises(outlast.RunConflict, match="not a child"):
        app.run(parent, run_id="pt")


def _build(app: outlast.App, ran: Counter[str]) -> outlast.Workflow[..., object]:
    @app.step
    async def fetch(name: str, delay: float) -> str:
        ran[name] += 1
        await asyncio.sleep(delay)
        return name.upper()

    @app.workflow
    async def sub(ctx: outlast.Context, name: str) -> str:
        ran[f"sub-{name}"] += 1
        first = await fetch(f"{name}-a", 0.0)
        return first + "+" + await fetch(f"{name}-b", 0.01)

    @app.workflow
    async def fan(ctx: outlast.Context) -> object:
        # Finish order differs from call order: identities still come from call order or keys.
        steps = await asyncio.gather(fetch("x", 0.05), fetch("y", 0.0), fetch.call("z", 0.02, key="zed"))
        kids = [ctx.start_child(sub, n) for n in ("k1", "k2")]
        results = await asyncio.gather(*(k.result() for k in kids))
        tail = await fetch("tail", 0.0)
        return [*steps, *results, tail]

    return fan


@pytest.mark.counts_executions
def test_gather_of_steps_and_children_replays_deterministically(
    app: outlast.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: Counter[str] = Counter()
    fan = _build(app, ran)
    expected = ["X", "Y", "Z", "K1-A+K1-B", "K2-A+K2-B", "TAIL"]
    assert app.run(fan, run_id="plain") == expected
    assert set(ran.values()) == {1}, ran

    monkeypatch.setenv(REPLAY_EACH_STEP, "1")
    ran.clear()
    assert app.run(fan, run_id="replayed") == expected
    assert ran["sub-k1"] > 1 and ran["tail"] == 1  # the workflows did replay

    def journal(run_id: str) -> list[tuple[int, str, str]]:
        return [(s.position, s.key.replace(run_id, "ID"), s.kind) for s in app.get_run(run_id).steps]

    # Same identities at the same positions whatever finished first and however often the
    # run was stopped and replayed (a step still running when a sibling's record stopped the
    # run ran again: that is the at-least-once contract of plain steps).
    assert journal("replayed") == journal("plain")
    for kid in ("k1", "k2"):
        assert journal(f"replayed:sub:{kid[-1]}") == journal(f"plain:sub:{kid[-1]}")
    assert "fetch:zed" in {k for _, k, _ in journal("plain")}


def test_default_child_ids_count_starts_only(app: outlast.App) -> None:
    @app.workflow
    def kid(n: int) -> int:
        return n

    @app.workflow
    def parent(ctx: outlast.Context) -> list[str]:
        ids = []
        for n in range(3):
            child = ctx.start_child(kid, n)
            ids.append(child.run_id)
            child.result()  # results are keyed by the child's id: they do not count
        return ids

    assert app.run(parent, run_id="p") == ["p:kid:1", "p:kid:2", "p:kid:3"]


def test_children_run_inline_obey_their_queue_limits(app: outlast.App) -> None:
    import asyncio
    import threading

    app.queue("single", concurrency=1)
    running: list[int] = []
    peak: list[int] = []
    lock = threading.Lock()

    @app.step
    async def work(n: int) -> int:
        with lock:
            running.append(n)
            peak.append(len(running))
        await asyncio.sleep(0.1)
        with lock:
            running.remove(n)
        return n

    @app.workflow(queue="single")
    async def kid(n: int) -> int:
        return int(await work(n))

    @app.workflow
    async def parent(ctx: outlast.Context) -> list[int]:
        kids = [ctx.start_child(kid, n) for n in range(4)]
        return list(await asyncio.gather(*(k.result() for k in kids)))

    assert asyncio.run(app.run_async(parent, run_id="limited")) == [0, 1, 2, 3]
    assert max(peak) == 1, peak  # never two children of a concurrency=1 queue at once


def test_continue_as_new_gives_each_iteration_its_own_identities(app: outlast.App) -> None:
    keys: list[str] = []

    @app.step
    def effect() -> str:
        keys.append(outlast.idempotency_key())
        return keys[-1]

    @app.workflow
    def kid(n: int) -> int:
        return n * 10

    @app.workflow
    def loop(ctx: outlast.Context, i: int) -> list[int]:
        effect()
        got = ctx.start_child(kid, i).result()
        if i < 3:
            ctx.continue_as_new(i + 1)
        return [got, i]

    assert app.run(loop, 1, run_id="gen") == [30, 3]
    assert len(set(keys)) == 3, keys  # each iteration's effect has its own key
    kids = sorted(r.run_id for r in app.list_runs(workflow="kid"))
    assert kids == ["gen:g2:kid:1", "gen:g3:kid:1", "gen:kid:1"], kids
