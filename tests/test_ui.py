"""outlast ui over HTTP (a real uvicorn server on 127.0.0.1): the JSON API, filters and keyset
pages, decoded steps, escaping, actions on and off, read-only database, CSRF, Host and token."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

import outlast  # noqa: E402
import uikit  # noqa: E402
from outlast.testing import FakeLLMServer  # noqa: E402
from outlast.ui import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, outlast.App]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'runs.db'}"
    app = uikit.demo_app(url)
    with FakeLLMServer() as llm:
        uikit.fill(app, llm.openai_base_url)
    yield url, app
    app.close()


@pytest.fixture(scope="module")
def ro(db: tuple[str, outlast.App]) -> Iterator[httpx.Client]:
    with uikit.serve(create_app(db[0])) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield client


def test_api_lists_filters_and_pages_by_cursor(ro: httpx.Client) -> None:
    everything = ro.get("/api/runs").json()
    ids = [r["run_id"] for r in everything["runs"]]
    assert ids[:3] == ["plain-2", "plain-1", "plain-0"] and "research-1" in ids
    assert everything["counts"]["failed"] == 1 and everything["counts"]["completed"] == 5
    assert everything["next"] is None
    seen, cursor = [], None
    while True:
        page = ro.get("/api/runs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [r["run_id"] for r in page["runs"]]
        if not (cursor := page["next"]):
            break
    assert seen == ids
    failed = ro.get("/api/runs?status=failed").json()["runs"]
    assert [r["run_id"] for r in failed] == ["research-1"]
    assert failed[0]["error"] == "builtins.PermissionError: the CMS refused the draft: 403 Forbidden"
    assert failed[0]["steps"] == 5 and failed[0]["tokens"] == 50
    assert [r["run_id"] for r in ro.get("/api/runs?workflow=hostile&q=plain-1").json()["runs"]] == ["plain-1"]
    assert ro.get("/api/runs?since=2999-01-01").json()["runs"] == []
    for bad, words in [("status=nope", "status"), ("limit=0", "limit"), ("cursor=%%%", "cursor"),
                       ("since=yesterday", "since")]:
        r = ro.get(f"/api/runs?{bad}")
        assert r.status_code == 400 and words in r.json()["error"], r.text


def test_api_run_has_decoded_steps_model_calls_and_retries(ro: httpx.Client) -> None:
    run = ro.get("/api/runs/research-1").json()
    assert run["status"] == "failed" and run["steps_total"] == 5
    steps = {s["key"]: s for s in run["steps"]}
    assert steps["fetch_sources:1"]["attempts"] == 3
    assert steps["fetch_sources:1"]["result"][0] == "https://example.com/durable agents/0"
    call = steps["openai.chat.completions:1"]
    assert call["kind"] == "llm" and call["meta"]["model"] == "gpt-4o-mini" and call["meta"]["tokens"] > 0
    assert call["input"]["messages"][0]["content"] == "Summarize source 0 about durable agents"
    assert steps["publish:1"]["error"] == {"type": "builtins.PermissionError",
                                           "message": "the CMS refused the draft: 403 Forbidden",
                                           "args": {"$tuple": ["the CMS refused the draft: 403 Forbidden"]}}
    page = ro.get("/api/runs/long-1?offset=290&limit=20").json()
    assert page["steps_total"] == 300 and [s["position"] for s in page["steps"]] == list(range(290, 300))
    assert ro.get("/api/runs/nope").status_code == 404
    llm = ro.get("/api/runs/research-1?kind=llm").json()
    assert [s["key"] for s in llm["steps"]] == ["openai.chat.completions:1", "openai.chat.completions:2"]
    assert llm["steps_matching"] == 2 and llm["kinds"] == ["llm", "step"]
    assert [s["key"] for s in ro.get("/api/runs/research-1?status=failed").json()["steps"]] == ["publish:1"]
    page = ro.get("/runs/research-1?kind=llm").text
    assert "2 of 5" in page and "summarize" not in page


def test_pages_escape_hostile_payloads(ro: httpx.Client) -> None:
    r = ro.get("/runs/hostile-1")
    assert r.status_code == 200
    assert "<script>window.__pwned" not in r.text and "onerror=\"window" not in r.text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "<script" not in r.text.replace('<script src="/static/ui.js" defer></script>', "")


def test_read_only_without_actions(db: tuple[str, outlast.App], ro: httpx.Client) -> None:
    page = ro.get("/runs/approval-1").text
    assert "Send event" not in page and "Cancel run" not in page
    for path, body in [("cancel", {}), ("events", {"name": "approve", "payload": 1}), ("resolve", {"redo": True})]:
        r = ro.post(f"/api/runs/approval-1/{path}", json=body)
        assert r.status_code == 403 and "--allow-actions" in r.json()["error"], r.text
    asgi = create_app(db[0])
    store = asgi.app.state.outlast_app.store
    with pytest.raises(outlast.StoreError, match="readonly") as refused:
        store.send_event("approval-1", "approve", b"1")
    assert not refused.value.transient
    asgi.app.state.outlast_app.close()  # never served: no shutdown to close it
    assert db[1].get_run("approval-1", steps=False).status in ("pending", "suspended")


def test_actions_cross_site_csrf_and_host(db: tuple[str, outlast.App]) -> None:
    url, app = db
    app.enqueue("approval", "act", run_id="act-1")
    with uikit.serve(create_app(url, allow_actions=True)) as base, httpx.Client(base_url=base, timeout=10) as c:
        page = c.get("/runs/act-1").text
        assert "Send event" in page and "Event name" in page and "Payload" in page
        csrf = page.split('name=csrf value="', 1)[1].split('"', 1)[0]
        form = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        refused: list[tuple[dict[str, Any], int]] = [
            ({"content": "name=approve&payload=1", "headers": form}, 403),  # no CSRF token
            ({"content": f"name=approve&payload=1&csrf={csrf}", "headers": {**form, "Origin": "https://evil.example"}}, 403),
            ({"content": '{"name": "approve"}', "headers": {"Content-Type": "text/plain"}}, 415),
            ({"json": {"name": "approve", "payload": 1}, "headers": {"Host": "rebind.evil.example"}}, 403),
            ({"content": b'{"name": "approve", "payload": NaN}', "headers": {"Content-Type": "application/json"}}, 400),
        ]
        for kwargs, status in refused:
            r = c.post("/api/runs/act-1/events", **kwargs)
            assert r.status_code == status, (kwargs, r.text)
        assert app.get_run("act-1").steps == [] and app.get_run("act-1", steps=False).status == "pending"
        r = c.post("/api/runs/act-1/events", content=f"name=approve&payload=%7B%22ok%22%3A1%7D&csrf={csrf}", headers=form)
        assert r.status_code == 200 and r.json()["message"] == "sent event 'approve'", r.text
        assert app.handle("act-1").result(timeout=20) == "act: {'ok': 1}"
        r = c.post("/api/runs/act-1/resolve", json={"redo": True})
        assert r.status_code == 409 and "not paused" in r.json()["error"], r.text
        app.enqueue("approval", "gone", run_id="act-2")
        assert c.post("/api/runs/act-2/cancel", json={}).json()["message"] == "cancelled: act-2"


def test_token_required_and_given_once_by_link(db: tuple[str, outlast.App]) -> None:
    with uikit.serve(create_app(db[0], token="tok en")) as base, httpx.Client(base_url=base, timeout=10) as c:
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/runs", headers={"Authorization": "Bearer tok en"}).status_code == 200
        r = c.get("/runs?status=failed&token=tok%20en")
        assert r.status_code == 303 and r.headers["location"] == "/runs?status=failed"
        assert "tok en" not in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        assert c.get("/runs?status=failed").status_code == 200  # the cookie now carries it


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outlast.cli", "ui", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "OUTLAST_UI_TOKEN": ""})


def test_cli_refuses_public_binding_without_token_and_missing_databases(tmp_path: Path) -> None:
    out = _cli("--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert out.returncode == 1 and "--token" in out.stderr
    out = _cli("--db", f"sqlite:///{tmp_path / 'missing.db'}")
    assert out.returncode == 1 and "no outlast database" in out.stderr
    assert not (tmp_path / "missing.db").exists()


def test_resolve_a_paused_run(db: tuple[str, outlast.App]) -> None:
    url, app = db
    uikit.paused_run(app, "pay-1")
    with uikit.serve(create_app(url, allow_actions=True)) as base, httpx.Client(base_url=base, timeout=10) as c:
        page = c.get("/runs/pay-1").text
        assert "Mark done" in page and "Run again" in page and "outcome unknown" in page
        r = c.post("/api/runs/pay-1/resolve", json={})
        assert r.status_code == 400 and "done" in r.json()["error"]
        r = c.post("/api/runs/pay-1/resolve", json={"done": "charged by hand"})
        assert r.status_code == 200, r.text
    assert app.run("payment", 5, run_id="pay-1") == "charged by hand"


def test_cli_serves_the_dashboard_and_prints_its_link(db: tuple[str, outlast.App]) -> None:
    port = uikit.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "outlast.cli", "ui", "--db", db[0], "--port", str(port), "--token", "s3cret"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/runs?token=s3cret" in line and "read-only" in line
        with httpx.Client(timeout=10, follow_redirects=True) as c:
            for _ in range(100):
                try:
                    r = c.get(line.split()[-1])
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            assert r.status_code == 200 and "research-1" in r.text
            assert c.get(f"http://localhost:{port}/api/runs").status_code == 401  # another name: no cookie
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
