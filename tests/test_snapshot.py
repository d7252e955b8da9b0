"""Stash and recovery handlers (the fiber pattern), and continue_as_new."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

import outlast


@pytest.fixture
def app(store_url: str) -> Iterator[outlast.App]:
    a = outlast.App(store_url, hibernate_after=0.3)
    yield a
    a.close()


class Crash(KeyboardInterrupt):
    """Stands in for the process dying mid-run: the engine releases the run and re-raises."""


def test_on_recovered_receives_the_last_snapshot_and_old_entries_are_compacted(
    app: outlast.App,
) -> None:
    ran: Counter[str] = Counter()
    crash = {"armed": True}

    @app.step
    def work(i: int) -> int:
        ran[f"work{i}"] += 1
        if i == 3 and crash["armed"]:
            crash["armed"] = False
            raise Crash()
        return i

    def rest(ctx: outlast.Context, total: int, start: int) -> int:
        for i in range(start, 5):
            total += work(i)
            ctx.stash({"total": total, "next": i + 1})
        return total

    @app.workflow
    def summer(ctx: outlast.Context) -> int:
        return rest(ctx, 0, 0)

    seen: list[object] = []

    @summer.on_recovered
    def recovered(ctx: outlast.Context, snap: dict[str, int]) -> int:
        seen.append(snap)
        return rest(ctx, snap["total"], snap["next"])

    with pytest.raises(Crash):
        app.run(summer, run_id="s")
    record = app.store.get_run("s")
    assert record is not None and record.status == "pending"
    assert record.snapshot_position is not None
    assert all(e.position >= record.snapshot_position for e in app.store.load_journal("s"))
    assert app.run(summer, run_id="s") == 0 + 1 + 2 + 3 + 4
    assert seen == [{"total": 3, "next": 3}]
    assert ran == {"work0": 1, "work1": 1, "work2": 1, "work3": 2, "work4": 1}


def test_recovery_handler_after_hibernation_replays_calls_after_the_stash(app: outlast.App) -> None:
    ran: Counter[str] = Counter()

    @app.step
    def work(name: str) -> str:
        ran[name] += 1
        return name

    def tail(ctx: outlast.Context, got: list[str]) -> list[str]:
        got = [*got, work("b")]  # recorded after the stash: replayed, not re-run
        ctx.sleep(0.5)  # hibernates
        return [*got, work("c")]

    @app.workflow
    def w(ctx: outlast.Context) -> list[str]:
        got = [work("a")]
        ctx.stash(got)
        return tail(ctx, got)

    @w.on_recovered
    def again(ctx: outlast.Context, snap: list[str]) -> list[str]:
        return tail(ctx, snap)

    assert app.run(w, run_id="h") == ["a", "b", "c"]
    assert ran == {"a": 1, "b": 1, "c": 1}


def test_stash_without_handler_is_refused(app: outlast.App) -> None:
    @app.workflow
    def w(ctx: outlast.Context) -> None:
        ctx.stash(1)

    with pytest.raises(outlast.ConfigurationError, match="on_recovered"):
        app.run(w, run_id="n")
    assert app.store.get_run("n").snapshot is None  # type: ignore[union-attr]


def test_continue_as_new_keeps_the_run_id_and_drops_the_old_journal(app: outlast.App) -> None:
    ran: Counter[int] = Counter()

    @app.step
    def tick(n: int) -> int:
        ran[n] += 1
        return n

    @app.workflow
    def countdown(ctx: outlast.Context, n: int, acc: int = 0) -> int:
        for i in range(3):
            acc += tick(n * 10 + i)
        if n == 0:
            return acc
        ctx.continue_as_new(n - 1, acc=acc)

    expected = sum(n * 10 + i for n in range(4) for i in range(3))
    assert app.run(countdown, 3, run_id="c") == expected
    assert app.run(countdown, 3, run_id="c") == expected  # the original arguments still name it
    assert set(ran.values()) == {1}
    keys = [s.key for s in app.get_run("c").steps]
    assert keys == ["tick:1", "tick:2", "tick:3"]  # the last generation only
    assert app.list_runs(workflow="countdown")[0].run_id == "c"
