"""outlast ui beyond the steps: replayed vs executed marks, the checkpoints of graph and plain
runs (a page of them for a big run), events received, the snapshot, the fork origin, the retry
and fork actions and their refusals, and the step cache."""

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
    assert source["graph"] is True and source["checkpoints_total"] == 5
    assert source["fork_origin"] is None and source["forked_from"] is None
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
    assert "<th>Node</th><th>Recorded by</th>" in page  # a graph's richer table
    r = c.post("/api/runs/src/fork", json={"checkpoint": "1", "run_id": "fork-ui"})
    assert r.status_code == 200 and r.json()["run_id"] == "fork-ui", r.text
    app.handle("fork-ui").result(timeout=20)
    assert c.get("/api/runs/fork-ui").json()["fork_origin"]["run"] == "src"
    r = c.post("/api/runs/src/fork", json={"checkpoint": "99"})
    assert r.status_code == 400 and "has no checkpoint '99'" in r.json()["error"], r.text
    r = c.post("/api/runs/src/fork", json={})
    assert r.status_code == 400 and "checkpoint" in r.json()["error"]


def test_fork_a_plain_run_from_its_checkpoints_panel(served: tuple[outlast.App, httpx.Client]) -> None:
    app, c = served
    run = c.get("/api/runs/rev-1").json()  # draft, the verdict event, polish: not a graph
    assert run["graph"] is False and run["checkpoints_total"] == 4
    assert [(cp["id"], cp["node"], cp["kind"]) for cp in run["checkpoints"]] == [
        ("0", "start", "start"),
        ("1", "draft:1", "step"),
        ("2", "verdict:1", "event"),
        ("3", "polish:1", "step"),
    ]
    page = c.get("/runs/rev-1").text
    assert page.count("Fork from here") == 4 and '<a href="#step-1">verdict:1</a>' in page
    assert "Fork from checkpoint" in page and "<th>Recorded by</th>" not in page
    r = c.post("/api/runs/rev-1/fork", json={"checkpoint": 2, "run_id": "rev-fork"})
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "forked from checkpoint 2: run rev-fork"
    assert app.handle("rev-fork").result(timeout=20).startswith("DRAFT ABOUT DURABILITY: ")
    fork = c.get("/api/runs/rev-fork").json()
    assert (fork["forked_from"], fork["forked_at"]) == ("rev-1", "2")
    assert fork["fork_origin"] == {"run": "rev-1", "checkpoint": "2"}
    # the stats column's bookkeeping (the engine's frontier, the origin) is never a figure
    for shown in (
        fork["stats"],
        c.get("/api/runs/rev-fork/state").json()["stats"],
        c.get("/api/runs/rev-1").json()["stats"],
    ):
        assert "frontier" not in shown and "forked_from" not in shown, shown
    listed = {r["run_id"]: r for r in c.get("/api/runs?q=rev").json()["runs"]}
    assert listed["rev-fork"]["forked_from"] == "rev-1"
    assert "frontier" not in listed["rev-1"]["stats"]
    page = c.get("/runs/rev-fork").text
    assert 'forked from <a class=origin href="/runs/rev-1">rev-1</a> at checkpoint 2' in page


def test_a_big_run_lists_the_checkpoints_of_its_steps_page(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    app = outlast.App(url)

    @app.step
    def s(i: int) -> int:
        return i

    @app.workflow
    def big(ctx: outlast.Context, n: int) -> int:
        return sum(s(i) for i in range(n))

    app.run(big, 450, run_id="big-1")
    with (
        uikit.serve(create_app(app=app, allow_actions=True)) as base,
        httpx.Client(base_url=base, timeout=10) as c,
    ):
        first = c.get("/api/runs/big-1").json()
        assert first["checkpoints_total"] == 451
        assert [cp["id"] for cp in first["checkpoints"]] == [str(i) for i in range(201)]
        last = c.get("/api/runs/big-1?offset=400").json()
        assert [cp["id"] for cp in last["checkpoints"]] == [str(i) for i in range(401, 451)]
        page = c.get("/runs/big-1?page=2").text
        assert page.count("Fork from here") == 50 and "50 of 451, after the steps shown" in page
        assert page.count("Fork from checkpoint") == 1  # one form for any other checkpoint
        r = c.post("/api/runs/big-1/fork", json={"checkpoint": "7", "run_id": "big-7"})
        assert r.status_code == 200, r.text
        assert app.handle("big-7").result(timeout=20) == sum(range(450))
        assert len(app.get_run("big-7").steps) == 450
    with (  # `outlast ui --db`: no workflows here, the fork is recorded for a worker
        uikit.serve(create_app(url, allow_actions=True)) as base,
        httpx.Client(base_url=base, timeout=10) as c,
    ):
        r = c.post("/api/runs/big-1/fork", json={"checkpoint": "449", "run_id": "big-449"})
        assert r.status_code == 200, r.text
        assert app.get_run("big-449", steps=False).status == "pending"
    assert app.handle("big-449").result(timeout=20) == sum(range(450))
    app.close()


def test_retry_button_only_on_failed_runs_and_retry_completes_it(
    served: tuple[outlast.App, httpx.Client],
) -> None:
    app, c = served
    tries = {"n": 0}

    @app.step
    def flaky() -> str:
        tries["n"] += 1
        if tries["n"] == 1:
            raise outlast.TerminalError("first try fails")
        return "ok"

    @app.workflow
    def fails_once(ctx: outlast.Context) -> str:
        return flaky()

    with pytest.raises(outlast.TerminalError):
        app.run("fails_once", run_id="retry-1")
    assert "Retry run" in c.get("/runs/retry-1").text
    r = c.post("/api/runs/retry-1/retry", json={})
    assert r.status_code == 200, r.text
    assert r.json()["message"].startswith("retrying: run retry-1")
    assert app.handle("retry-1").result(timeout=20) == "ok"
    assert "Retry run" not in c.get("/runs/retry-1").text  # completed now
    app.enqueue("review", "x", run_id="to-cancel")
    app.cancel("to-cancel")
    page = c.get("/runs/to-cancel").text  # app.retry refuses a cancelled run: no button
    assert "This run has ended" in page and "Retry run" not in page
    assert "Fork from checkpoint" in page


def test_refused_retries_and_forks_are_clear_errors(
    served: tuple[outlast.App, httpx.Client],
) -> None:
    _, c = served
    taken = {"checkpoint": "1", "run_id": "stash-1"}
    refused = [
        ("/api/runs/rev-1/retry", {}, 409, "is completed, not failed"),
        ("/api/runs/nope/retry", {}, 404, "run 'nope' not found"),
        ("/api/runs/nope/fork", {"checkpoint": "1"}, 404, "run 'nope' not found"),
        ("/api/runs/rev-1/fork", taken, 409, "run id 'stash-1' already exists"),
        ("/api/runs/rev-1/fork", {"checkpoint": "77"}, 400, "has no checkpoint '77'"),
        ("/api/runs/rev-1/fork", {"checkpoint": "x"}, 400, "has no checkpoint 'x'"),
    ]
    for path, body, status, words in refused:
        r = c.post(path, json=body)
        assert r.status_code == status and words in r.json()["error"], (path, body, r.text)
    # a page's form without JavaScript gets the error page, with the message and the status
    page = c.get("/runs/rev-1").text
    csrf = page.split('name=csrf value="', 1)[1].split('"', 1)[0]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = c.post("/api/runs/rev-1/retry", content=f"csrf={csrf}", headers=form)
    assert r.status_code == 409 and "<h1>409</h1>" in r.text
    assert "is completed, not failed" in r.text
    r = c.post("/api/runs/rev-1/fork", content=f"csrf={csrf}&checkpoint=77&run_id=", headers=form)
    assert r.status_code == 400 and "has no checkpoint &#x27;77&#x27;" in r.text


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
