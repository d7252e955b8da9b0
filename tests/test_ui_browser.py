"""outlast ui in a real headless Chromium (Debian's package, driven by Playwright).

Filters from the URL, opening a run, expanding a step, hostile payloads shown as text, sending
an event from the form and seeing the run complete on the open page without a reload (a worker
thread runs it), actions absent and refused when not allowed, the token. With
OUTLAST_UI_SCREENSHOTS=1 the test also rewrites docs/img/ui-runs.png and docs/img/ui-run.png.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)

import outlast  # noqa: E402
import uikit  # noqa: E402
from outlast.testing import FakeLLMServer  # noqa: E402
from outlast.ui import create_app  # noqa: E402
from outlast.worker import Worker  # noqa: E402

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
SCREENSHOTS = os.environ.get("OUTLAST_UI_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, outlast.App]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('uib') / 'runs.db'}"
    app = uikit.demo_app(url)
    with FakeLLMServer() as llm:
        uikit.fill(app, llm.openai_base_url)
    yield url, app
    app.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def read_only(db: tuple[str, outlast.App]) -> Iterator[str]:
    with uikit.serve(create_app(db[0])) as base:
        yield base


def test_filters_from_the_url_open_a_run_and_expand_a_step(page: Any, read_only: str) -> None:
    if SCREENSHOTS:
        page.goto(f"{read_only}/runs")
        page.screenshot(path=str(IMG / "ui-runs.png"), full_page=True)
    page.goto(f"{read_only}/runs?status=failed")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 1 and "research-1" in rows.inner_text()
    assert page.locator("select[name=status]").input_value() == "failed"
    page.click("text=research-1")
    page.wait_for_url(f"{read_only}/runs/research-1")
    step = page.locator("details.step", has_text="publish")
    assert not step.locator(".detail").is_visible()
    step.locator("summary").click()
    assert "the CMS refused the draft: 403 Forbidden" in step.locator(".detail").inner_text()
    assert "3 attempts" in page.locator("details.step", has_text="fetch_sources").inner_text()
    assert "gpt-4o-mini" in page.locator("details.step.k-llm").first.inner_text()
    width = page.locator("details.step .bar").first.evaluate("b => b.style.width")
    assert width.endswith("%")
    page.locator("nav.stepfilter a", has_text="failed").click()
    page.wait_for_url(f"{read_only}/runs/research-1?status=failed")
    assert page.locator("details.step").count() == 1
    page.go_back()
    if SCREENSHOTS:
        page.locator("details.step.k-llm").first.locator("summary").click()
        page.screenshot(path=str(IMG / "ui-run.png"), full_page=True)


def test_hostile_payloads_show_as_text_and_never_run(page: Any, read_only: str) -> None:
    page.goto(f"{read_only}/runs/hostile-1")
    page.locator("details.step summary").first.click()
    shown = uikit.HOSTILE.replace('"', '\\"')  # as JSON text
    assert shown in page.locator("details.step .detail").inner_text()
    assert shown in page.locator("pre.result").first.inner_text()
    assert page.evaluate("window.__pwned") is None


def test_actions_are_absent_and_refused_when_not_allowed(page: Any, read_only: str) -> None:
    page.goto(f"{read_only}/runs/approval-1")
    assert page.get_by_role("button", name="Send event").count() == 0
    status = page.evaluate("""() => fetch('/api/runs/approval-1/cancel', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: '{}'}).then(r => r.status)""")
    assert status == 403


def test_send_event_from_the_form_and_see_the_run_complete_live(page: Any, db: tuple[str, outlast.App]) -> None:
    url, app = db
    app.enqueue("approval", "deploy", run_id="live-1")
    worker = Worker(app, concurrency=2, poll=0.1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with uikit.serve(create_app(url, allow_actions=True)) as base:
            page.goto(f"{base}/runs/live-1")
            chip = page.locator("#live h1 .chip")
            sync_api.expect(chip).to_have_text("suspended", timeout=20_000)
            page.evaluate("window.__marker = 42")
            sync_api.expect(page.get_by_label("Event name")).to_have_value("approve", timeout=5_000)
            page.get_by_label("Payload").fill('"yes"')
            # A live update while the run's actions stay the same keeps what is being typed.
            head = page.locator("#live h1")
            epoch = head.get_attribute("data-epoch")
            page.evaluate("document.querySelector('#live h1').setAttribute('data-epoch', '-1')")
            sync_api.expect(head).to_have_attribute("data-epoch", str(epoch), timeout=10_000)
            assert page.get_by_label("Payload").input_value() == '"yes"'
            page.once("dialog", lambda dialog: dialog.accept())
            page.get_by_role("button", name="Send event").click()
            sync_api.expect(page.locator("#flash")).to_have_text("sent event 'approve'", timeout=10_000)
            sync_api.expect(chip).to_have_text("completed", timeout=20_000)
            assert "deploy: yes" in page.locator("pre.result").first.inner_text()
            # The ended run's actions replace the event form and the cancel button.
            actions = page.locator("section.actions")
            sync_api.expect(actions).to_contain_text("This run has ended.", timeout=10_000)
            assert page.get_by_role("button", name="Send event").count() == 0
            assert page.get_by_role("button", name="Cancel run").count() == 0
            assert page.evaluate("window.__marker") == 42  # the same page: never reloaded
    finally:
        worker.stop()
        thread.join(10)


def test_a_dismissed_confirmation_sends_nothing(page: Any, db: tuple[str, outlast.App]) -> None:
    url, app = db
    app.enqueue("approval", "keep", run_id="live-2")
    with uikit.serve(create_app(url, allow_actions=True)) as base:
        page.goto(f"{base}/runs/live-2")
        page.get_by_label("Event name").fill("approve")
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.get_by_role("button", name="Send event").click()
        page.wait_for_timeout(300)
        assert page.locator("#flash").inner_text() == ""
    assert app.get_run("live-2").steps == [] and app.get_run("live-2", steps=False).status == "pending"


def test_the_token_is_required_and_kept_from_the_printed_link(page: Any, db: tuple[str, outlast.App]) -> None:
    with uikit.serve(create_app(db[0], token="t0ken")) as base:
        response = page.goto(f"{base}/runs")
        assert response.status == 401 and "token" in page.content()
        page.goto(f"{base}/runs?token=t0ken&status=failed")
        assert page.url == f"{base}/runs?status=failed"
        assert page.locator("table.runs tbody tr").count() == 1
        page.click("text=research-1")
        assert page.locator("#live h1 .chip").inner_text() == "failed"


def test_run_again_on_a_paused_run(page: Any, db: tuple[str, outlast.App]) -> None:
    url, app = db
    uikit.paused_run(app, "pay-2")
    with uikit.serve(create_app(url, allow_actions=True)) as base:
        page.goto(f"{base}/runs/pay-2")
        chip = page.locator("#live h1 .chip")
        assert chip.inner_text() == "paused"
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Run again").click()
        sync_api.expect(page.locator("#flash")).to_have_text("the step runs again", timeout=10_000)
        sync_api.expect(chip).to_have_text("pending", timeout=10_000)
        # resolved: the paused run's own buttons go with the live update
        sync_api.expect(page.get_by_role("button", name="Mark done")).to_have_count(0, timeout=10_000)
        assert page.get_by_role("button", name="Run again").count() == 0
        assert page.get_by_role("button", name="Send event").count() == 1
    assert app.run("payment", 5, run_id="pay-2") == "charged 5"


def test_fork_a_graph_run_from_a_checkpoint_after_a_live_refresh(page: Any, db: tuple[str, outlast.App]) -> None:
    from tests.apps.graphy import loop_graph

    _, app = db
    if "loop" not in app.workflows:
        loop_graph(app)
    app.run("loop", {"rounds": 2}, run_id="graph-1")
    with uikit.serve(create_app(app=app, allow_actions=True)) as base:
        page.goto(f"{base}/runs/graph-1")
        assert page.locator("details.checkpoints tbody tr").count() == 5
        # The fork buttons live inside the part of the page a live update replaces: make the
        # page see a change (a stale epoch), let it refresh, and the new buttons still confirm.
        head = page.locator("#live h1")
        epoch = head.get_attribute("data-epoch")
        page.evaluate("window.__marker = 7; document.querySelector('#live h1').setAttribute('data-epoch', '-1')")
        sync_api.expect(head).to_have_attribute("data-epoch", str(epoch), timeout=10_000)
        row = page.locator("details.checkpoints tr[data-checkpoint='2']")
        page.once("dialog", lambda dialog: dialog.dismiss())
        row.get_by_role("button", name="Fork from here").click()
        page.wait_for_timeout(300)
        assert page.locator("#flash").inner_text() == ""
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Fork from here").click()
        sync_api.expect(page.locator("#flash")).to_contain_text("forked from checkpoint 2: run ", timeout=10_000)
        new_id = page.locator("#flash").inner_text().rsplit(" ", 1)[1]
        assert page.evaluate("window.__marker") == 7
        app.handle(new_id).result(timeout=20)
        page.goto(f"{base}/runs/{new_id}")
        assert page.locator("a.origin").inner_text() == "graph-1"
        if SCREENSHOTS:
            page.screenshot(path=str(IMG / "ui-graph.png"), full_page=True)


def test_fork_a_plain_run_from_a_checkpoint_and_from_the_form(page: Any, db: tuple[str, outlast.App]) -> None:
    _, app = db  # long-1: 300 calls of one step, more than one page of steps
    flash = page.locator("#flash")
    with uikit.serve(create_app(app=app, allow_actions=True)) as base:
        page.goto(f"{base}/runs/long-1")
        panel = page.locator("details.checkpoints")
        panel.locator("summary").click()
        assert "201 of 301, after the steps shown" in panel.locator("summary").inner_text()  # the first page's only
        assert panel.locator("tbody tr").count() == 201
        row = panel.locator("tr[data-checkpoint='3']")
        assert "tick:3" in row.inner_text()
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Fork from here").click()
        sync_api.expect(flash).to_contain_text("forked from checkpoint 3: run ", timeout=10_000)
        first = flash.inner_text().rsplit(" ", 1)[1]
        assert app.handle(first).result(timeout=20) == sum(range(300))
        # any checkpoint by its number, with a chosen id; refusals are said on the page
        form = page.locator("form.fork")
        form.get_by_label("Checkpoint").fill("250")
        form.get_by_label("New run id (optional)").fill("long-fork")
        for expected in ["forked from checkpoint 250: run long-fork",
                         "Refused: run id 'long-fork' already exists; choose another id for the fork"]:
            page.once("dialog", lambda dialog: dialog.accept())
            form.get_by_role("button", name="Fork from checkpoint").click()
            sync_api.expect(flash).to_have_text(expected, timeout=10_000)
        form.get_by_label("Checkpoint").fill("999")
        form.get_by_label("New run id (optional)").fill("")
        page.once("dialog", lambda dialog: dialog.accept())
        form.get_by_role("button", name="Fork from checkpoint").click()
        sync_api.expect(flash).to_contain_text("Refused: run 'long-1' has no checkpoint '999'", timeout=10_000)
        assert app.handle("long-fork").result(timeout=20) == sum(range(300))
        page.goto(f"{base}/runs/long-fork")
        assert page.locator("a.origin").inner_text() == "long-1"
        assert "forked from long-1 at checkpoint 250" in page.locator("#live p.facts", has_text="forked").inner_text()
        page.locator("a.origin").click()
        page.wait_for_url(f"{base}/runs/long-1")


def test_retry_a_failed_run_and_see_it_complete(page: Any, db: tuple[str, outlast.App]) -> None:
    _, app = db
    tries = {"n": 0}

    @app.step
    def flaky_once(topic: str) -> str:
        tries["n"] += 1
        if tries["n"] == 1:
            raise outlast.TerminalError("the service said no, this once")
        return f"done: {topic}"

    @app.workflow
    def fails_once(ctx: outlast.Context, topic: str) -> str:
        return flaky_once(topic)

    with pytest.raises(outlast.TerminalError):
        app.run(fails_once, "retries", run_id="retry-b1")
    with uikit.serve(create_app(app=app, allow_actions=True)) as base:
        page.goto(f"{base}/runs/retry-b1")
        chip = page.locator("#live h1 .chip")
        assert chip.inner_text() == "failed"
        if SCREENSHOTS:
            page.screenshot(path=str(IMG / "ui-failed.png"), full_page=True)
        page.evaluate("window.__marker = 9")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Retry run").click()
        sync_api.expect(page.locator("#flash")).to_contain_text("retrying: run retry-b1", timeout=10_000)
        sync_api.expect(chip).to_have_text("completed", timeout=20_000)  # live: no reload
        assert '"done: retries"' in page.locator("pre.result").first.inner_text()
        # The actions follow the run: no retry for a completed run, the fork form stays.
        sync_api.expect(page.get_by_role("button", name="Retry run")).to_have_count(0, timeout=10_000)
        assert page.get_by_role("button", name="Fork from checkpoint").count() == 1
        assert page.evaluate("window.__marker") == 9  # the same page: never reloaded
    assert tries["n"] == 2


def test_cancel_replaces_the_open_runs_actions_with_the_ended_ones(
    page: Any, db: tuple[str, outlast.App]
) -> None:
    url, app = db
    app.enqueue("approval", "stop", run_id="live-3")
    with uikit.serve(create_app(url, allow_actions=True)) as base:
        page.goto(f"{base}/runs/live-3")
        page.evaluate("window.__marker = 3")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Cancel run").click()
        sync_api.expect(page.locator("#live h1 .chip")).to_have_text("cancelled", timeout=10_000)
        actions = page.locator("section.actions")
        sync_api.expect(actions).to_contain_text("This run has ended.", timeout=10_000)
        for gone in ("Cancel run", "Send event", "Retry run"):
            assert page.get_by_role("button", name=gone).count() == 0, gone
        assert page.evaluate("window.__marker") == 3
