"""outlast ui beyond the steps: replayed vs executed marks, a graph run's checkpoints, events
received, the snapshot, the fork origin, the retry and fork actions, and the step cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

from tests.apps.graphy import loop_graph  # noqa: E402

import outlast  # noqa: E402
import uikit  # noqa: E402
from outlast.ui import create_app  # noqa: E402
from outlast.ui import data as ui_data  # noqa: E402
from outlast.ui.steps import StepCache  # noqa: E402


def _app(url: str) -> outlast.App:
    app = outlast.App(url, hibernate_after=0.1)

    @app.step
    def draft(topic: str) -> str:
        return f"draft about {topic}"

    @app.step
    def polish(text: str) -> str:
        return text.upper()

    @app.workflow
    def review(ctx: outlast.Context, topic: str) -> str:
        text = draft(topic)
        verdict = ctx.wait_for(
            "verdict"
        )  # the run hibernates here: a later execution replays draft
        return polish(f"{text}: {verdict}")

    @app.workflow
    def stasher(ctx: outlast.Context, n: int) -> int:
        ctx.stash({"done": n, "<b>": "<script>x</script>"})
        return n

    @stasher.on_recovered
    def _(ctx: outlast.Context, stashed: Any, n: int) -> int:
        return int(stashed["done"])

    loop_graph(app)
    return app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[outlast.App, httpx.Client]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('panels') / 'runs.db'}"
    app = _app(url)
    handle = app.start("review", "durability", run_id="rev-1")
    deadline = time.monotonic() + 20
    while app.get_run("rev-1", steps=False).status != "suspended":  # hibernated on the verdict
        assert time.monotonic() < deadline, "the run did not hibernate"
        time.sleep(0.02)
    app.send("rev-1", "verdict", {"ok": "<img src=x onerror=alert(1)>"})
    handle.result(timeout=20)
    app.run("stasher", 7, run_id="stash-1")
    app.run("loop", {"rounds": 2}, run_id="src")
    app.fork("src", "2", new_run_id="fork-1").result(timeout=20)
    with (
        uikit.serve(create_app(app=app, allow_actions=True)) as base,
        httpx.Client(base_url=base, timeout=10) as c,
    ):
        yield app, c
    app.close()


def test_steps_say_replayed_or_executed(served: tuple[outlast.App, httpx.Client]) -> None:
    _, c = served
    run = c.get("/api/runs/rev-1").json()
    marks = {s["name"]: s["mark"] for s in run["steps"]}
    # draft ran before the run hibernated; the execution that took the verdict replayed it
    assert marks == {"draft": "replayed", "verdict": "executed", "polish": "executed"}
    steps = {s["name"]: s for s in run["steps"]}
    assert steps["draft"]["epoch"] < steps["polish"]["epoch"] == run["last_execution"]
    assert run["replayed_steps"] == 1
    page = c.get("/runs/rev-1").text
    assert page.count('class="mark m-replayed"') == 1 and page.count('class="mark m-executed"') == 2
    assert "1 of 3 steps were answered from the journal by a later execution" in page
    one = c.get("/api/runs/src").json()  # one execution: every step executed, no marks shown
    assert {s["mark"] for s in one["steps"]} == {"executed"} and one["replayed_steps"] == 0
    assert "m-executed" not in c.get("/runs/src").text


def test_events_received_panel_escapes_the_payload(
    served: tuple[outlast.App, httpx.Client],
) -> None:
    _, c = served
    run = c.get("/api/runs/rev-1").json()
    assert [(e["name"], e["payload"]) for e in run["events"]] == [
        ("verdict", {"ok": "<img src=x onerror=alert(1)>"})
    ]
    page = c.get("/runs/rev-1").text
    assert (
        "Events received" in page
        and "<img src=x" not in page
        and "&lt;img src=x onerror=alert(1)&gt;" in page
    )


def test_snapshot_panel(served: tuple[outlast.App, httpx.Client]) -> None:
    _, c = served
    snap = c.get("/api/runs/stash-1").json()["snapshot"]
    assert snap["stash"] == {"done": 7, "<b>": "<script>x</script>"} and snap["generation"] == 1
    page = c.get("/runs/stash-1").text
    assert "Snapshot (taken at step" in page and "<script>x" not in page
    assert c.get("/api/runs/rev-1").json()["snapshot"] is None


def test_graph_checkpoints_fork_origin_and_fork_button(
    served: tuple[outlast.App, httpx.Client],
) -> None:
    app, c = served
    source = c.get("/api/runs/src").json()
    assert [cp["id"] for cp in source["checkpoints"]] == ["0", "1", "2", "3", "4"]
    assert source["fork_origin"] is None and c.get("/api/runs/rev-1").json()["checkpoints"] is None
    fork = c.get("/api/runs/fork-1").json()
    assert fork["fork_origin"] == {"run": "src", "checkpoint": "2", "update": {}}
    assert [(cp["id"], cp["inherited"]) for cp in fork["checkpoints"]][:4] == [
        ("0", True),
        ("1", True),
        ("2", True),
        ("3", False),
    ]
    page = c.get("/runs/fork-1").text
    assert 'forked from <a class=origin href="/runs/src">src</a> at checkpoint 2' in page
    assert page.count("Fork from here") == len(fork["checkpoints"])
    r = c.post("/api/runs/src/fork", json={"checkpoint": "1", "run_id": "fork-ui"})
    assert r.status_code == 200 and r.json()["run_id"] == "fork-ui", r.text
    app.handle("fork-ui").result(timeout=20)
    assert c.get("/api/runs/fork-ui").json()["fork_origin"]["run"] == "src"
    r = c.post("/api/runs/src/fork", json={"checkpoint": "99"})
    assert r.status_code == 409 and "has no checkpoint '99'" in r.json()["error"], r.text
    r = c.post("/api/runs/src/fork", json={})
    assert r.status_code == 400 and "checkpoint" in r.json()["error"]


def test_retry_button_calls_app_retry(
    served: tuple[outlast.App, httpx.Client], tmp_path: Path
) -> None:
    if not callable(getattr(outlast.App, "retry", None)):
        pytest.skip("app.retry() is not in this version of outlast (the evolution issue adds it)")
    app, c = served

    tries = {"n": 0}

    @app.workflow
    def fails_once(ctx: outlast.Context) -> str:
        tries["n"] += 1
        if tries["n"] == 1:
            raise RuntimeError("first try fails")
        return "ok"

    with pytest.raises(RuntimeError):
        app.run("fails_once", run_id="retry-1")
    assert "Retry run" in c.get("/runs/retry-1").text
    r = c.post("/api/runs/retry-1/retry", json={})
    assert r.status_code == 200 and r.json()["message"].startswith("retrying"), r.text


def test_retry_without_app_retry_is_absent_and_404(tmp_path: Path) -> None:
    if callable(getattr(outlast.App, "retry", None)):
        pytest.skip(
            "this outlast has app.retry(): the button is there (test_retry_button_calls_app_retry)"
        )
    url = f"sqlite:///{tmp_path / 'r.db'}"
    app = outlast.App(url)

    @app.workflow
    def boom(ctx: outlast.Context) -> None:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        app.run(boom, run_id="b-1")
    with (
        uikit.serve(create_app(url, allow_actions=True)) as base,
        httpx.Client(base_url=base, timeout=10) as c,
    ):
        assert "Retry run" not in c.get("/runs/b-1").text
        r = c.post("/api/runs/b-1/retry", json={})
        assert r.status_code == 404 and "app.retry()" in r.json()["error"]
    app.close()


def test_fork_and_retry_refused_without_actions(served: tuple[outlast.App, httpx.Client]) -> None:
    app, _ = served
    with uikit.serve(create_app(app=app)) as base, httpx.Client(base_url=base, timeout=10) as c:
        assert "Fork from here" not in c.get("/runs/src").text
        for path, body in [("fork", {"checkpoint": "1"}), ("retry", {})]:
            r = c.post(f"/api/runs/src/{path}", json=body)
            assert r.status_code == 403 and "--allow-actions" in r.json()["error"]


def test_step_cache_decodes_an_entry_once(served: tuple[outlast.App, httpx.Client]) -> None:
    app, _ = served
    cache = StepCache()
    first = ui_data.run_detail(app, "rev-1", cache=cache)
    assert first is not None and len(cache) == 3
    first["steps"][0]["result"] = "changed by a caller"  # callers get copies
    again = ui_data.run_detail(app, "rev-1", cache=cache)
    assert again is not None and again["steps"][0]["result"] == "draft about durability"
    assert again["steps"] == ui_data.run_detail(app, "rev-1")["steps"]  # type: ignore[index]
    tiny = StepCache(entries=2)
    ui_data.run_detail(app, "rev-1", cache=tiny)
    assert len(tiny) == 2
