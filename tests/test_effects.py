"""At-most-once steps, reconcile, pauses and the operator's resolve, against a real HTTP receiver.

A crash at a chosen point is a KeyboardInterrupt raised there: the process stops executing the
run and the journal holds exactly what a SIGKILL at that point leaves (nothing written after
it). Random real SIGKILLs are in test_torture.py. Names of the form ``test_cell_*`` are the
cells of docs/guarantees.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.apps.receiver import Served, served  # noqa: F401 - fixture

import outlast
from outlast.effects import NOT_DONE

ROOT = Path(__file__).resolve().parent.parent
CRASH: dict[str, str | None] = {"at": None}


def crash_at(point: str) -> None:
    """Stop the process here once (the next execution passes)."""
    if CRASH["at"] == point:
        CRASH["at"] = None
        raise KeyboardInterrupt(f"crash {point}")


def _post_raw(srv_url: str) -> int:
    key = outlast.idempotency_key()
    r = httpx.post(f"{srv_url}/raw/effect", json={"key": key}, trust_env=False)
    r.raise_for_status()
    return int(r.json()["n"])


def _app(store_url: str, srv: Served, *, reconcile: Any = None, plain: bool = False) -> tuple[outlast.App, Any]:
    app = outlast.App(store_url)

    def send() -> int:
        crash_at("before effect")
        n = _post_raw(srv.url)
        crash_at("during")  # the effect happened, its outcome is not recorded
        return n

    step = app.step(send) if plain else app.step(at_most_once=True, reconcile=reconcile)(send)

    @app.workflow
    def flow(ctx: outlast.Context) -> int:
        crash_at("before")
        n = step()
        crash_at("after")
        return int(n)

    return app, flow


def _crash_then(app: outlast.App, flow: Any, point: str, run_id: str) -> None:
    CRASH["at"] = point
    with pytest.raises(KeyboardInterrupt):
        app.run(flow, run_id=run_id)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CRASH["at"] = None


@pytest.mark.parametrize("point,expected", [("before", 1), ("during", 2), ("after", 1)])
def test_cell_plain_step(store_url: str, served: Served, point: str, expected: int) -> None:  # noqa: F811
    app, flow = _app(store_url, served, plain=True)
    _crash_then(app, flow, point, "r")
    assert app.run(flow, run_id="r") == expected
    assert served.raw("r:send:1") == expected  # a plain step re-runs an interrupted effect
    app.close()


def test_intent_is_recorded_before_the_effect(store_url: str) -> None:
    app = outlast.App(store_url)
    seen: list[list[str]] = []

    @app.step(at_most_once=True)
    def send() -> str:
        seen.append([e.status for e in app.store.load_journal("r")])
        return "sent"

    @app.workflow
    def flow() -> str:
        return str(send())

    assert app.run(flow, run_id="r") == "sent"
    assert seen == [["intent"]]
    assert [s.status for s in app.get_run("r").steps] == ["completed"]
    app.close()


@pytest.mark.parametrize("point", ["before", "after"])
def test_cell_at_most_once_before_and_after(store_url: str, served: Served, point: str) -> None:  # noqa: F811
    app, flow = _app(store_url, served)
    _crash_then(app, flow, point, "r")
    assert app.run(flow, run_id="r") == 1
    assert served.raw("r:send:1") == 1
    app.close()


def test_cell_at_most_once_during_pauses_and_operator_records_done(
    store_url: str, served: Served  # noqa: F811
) -> None:
    app, flow = _app(store_url, served)
    _crash_then(app, flow, "during", "r")
    with pytest.raises(outlast.RunPaused, match="outcome unknown: step 'send'") as info:
        app.run(flow, run_id="r")
    assert "outlast resolve r --done JSON" in str(info.value)
    paused = app.list_runs(status="paused")
    assert [(p.run_id, (p.reason or "")[:15]) for p in paused] == [("r", "outcome unknown")]
    assert [s.status for s in app.get_run("r").steps] == ["intent"]
    # The operator checks the receiver (it ran once) and records the result with the CLI.
    out = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "resolve", "r", "--done", json.dumps(7), "--db", store_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "pending" in out.stdout
    assert app.run(flow, run_id="r") == 7
    assert served.raw("r:send:1") == 1
    app.close()


def test_cell_at_most_once_crash_before_effect_operator_redoes(
    store_url: str, served: Served  # noqa: F811
) -> None:
    app, flow = _app(store_url, served)
    _crash_then(app, flow, "before effect", "r")  # intent written, effect not sent
    with pytest.raises(outlast.RunPaused):
        app.run(flow, run_id="r")
    assert served.raw("r:send:1") == 0
    info = app.resolve("r", redo=True)
    assert info.status == "pending" and info.steps == [] or info.status == "pending"
    assert app.run(flow, run_id="r") == 1
    assert served.raw("r:send:1") == 1
    app.close()


def _asks(srv: Served) -> Any:
    def reconcile(key: str) -> Any:
        n = srv.raw(key)
        return n if n else NOT_DONE

    return reconcile


@pytest.mark.parametrize("point", ["before effect", "during"])
def test_cell_reconcile_settles_an_unknown_outcome(
    store_url: str, served: Served, point: str  # noqa: F811
) -> None:
    app, flow = _app(store_url, served, reconcile=_asks(served))
    _crash_then(app, flow, point, "r")
    assert app.run(flow, run_id="r") == 1
    assert served.raw("r:send:1") == 1
    (step,) = app.get_run("r").steps
    assert step.status == "completed"
    assert step.meta.get("reconciled") is (True if point == "during" else None)
    app.close()


def test_reconcile_that_raises_pauses_with_its_error_then_retry(
    store_url: str, served: Served  # noqa: F811
) -> None:
    broken = {"on": True}

    def reconcile(key: str) -> Any:
        if broken["on"]:
            raise ConnectionError("receiver audit API is down")
        return served.raw(key) or NOT_DONE

    app, flow = _app(store_url, served, reconcile=reconcile)
    _crash_then(app, flow, "during", "r")
    with pytest.raises(outlast.RunPaused, match="ConnectionError: receiver audit API is down"):
        app.run(flow, run_id="r")
    assert [s.status for s in app.get_run("r").steps] == ["intent"]  # nothing lost
    broken["on"] = False
    app.resolve("r", retry=True)
    assert app.run(flow, run_id="r") == 1
    assert served.raw("r:send:1") == 1
    app.close()


def test_resolve_bad_input_leaves_the_run_intact(store_url: str, served: Served) -> None:  # noqa: F811
    app, flow = _app(store_url, served)
    with pytest.raises(outlast.NotPaused, match="is completed, not paused"):
        app.run(flow, run_id="done-run")
        app.resolve("done-run", redo=True)
    with pytest.raises(outlast.RunNotFound):
        app.resolve("nope", redo=True)
    _crash_then(app, flow, "during", "r")
    with pytest.raises(outlast.RunPaused):
        app.run(flow, run_id="r")
    before = app.store.load_journal("r")
    with pytest.raises(outlast.ConfigurationError, match="exactly one of"):
        app.resolve("r", done=1, redo=True)
    with pytest.raises(outlast.ConfigurationError, match="exactly one of"):
        app.resolve("r")
    with pytest.raises(outlast.ConfigurationError, match="no step awaiting an outcome under key"):
        app.resolve("r", done=1, key="other:1")
    with pytest.raises(outlast.SerializationError):
        app.resolve("r", done=object())
    out = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "resolve", "r", "--done", "{not json", "--db", store_url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0 and "not JSON" in out.stderr
    assert app.get_run("r").status == "paused"
    assert app.store.load_journal("r") == before
    app.resolve("r", done=1, key="r:send:1")  # the idempotency key names the step too
    assert app.run(flow, run_id="r") == 1
    app.close()


def test_async_at_most_once_with_async_reconcile(store_url: str, served: Served) -> None:  # noqa: F811
    import asyncio

    app = outlast.App(store_url)
    asked: list[str] = []

    async def reconcile(key: str) -> Any:
        asked.append(key)
        return served.raw(key) or NOT_DONE

    @app.step(at_most_once=True, reconcile=reconcile)
    async def send() -> int:
        async with httpx.AsyncClient(trust_env=False) as client:
            r = await client.post(f"{served.url}/raw/effect", json={"key": outlast.idempotency_key()})
        crash_at("during")
        return int(r.json()["n"])

    @app.workflow
    async def flow() -> int:
        return int(await send())

    CRASH["at"] = "during"
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(app.run_async(flow, run_id="a"))
    assert asyncio.run(app.run_async(flow, run_id="a")) == 1
    assert asked == ["a:send:1"] and served.raw("a:send:1") == 1
    app.close()


def test_decoration_errors() -> None:
    app = outlast.App("sqlite:///:memory:")
    with pytest.raises(outlast.ConfigurationError, match="add at_most_once=True"):
        app.step(reconcile=lambda key: NOT_DONE)(lambda: 1)

    async def areconcile(key: str) -> Any:
        return NOT_DONE

    with pytest.raises(outlast.ConfigurationError, match="sync but its reconcile"):
        app.step(at_most_once=True, reconcile=areconcile)(lambda: 1)
    with pytest.raises(outlast.ConfigurationError, match="must be a function"):
        app.step(at_most_once=True, reconcile=42)(lambda: 1)  # type: ignore[arg-type]
