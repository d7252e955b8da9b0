"""The HTTP endpoint on a real uvicorn server (127.0.0.1), and the send/prune/serve CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import outlast

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from outlast.server import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app(store_url: str) -> Iterator[outlast.App]:
    a = outlast.App(store_url, hibernate_after=0.3)

    @a.workflow
    def approval(ctx: outlast.Context, subject: str) -> str:
        return f"{subject}: {ctx.wait_for('approve')}"

    yield a
    a.close()


@pytest.fixture
def client(app: outlast.App) -> Iterator[httpx.Client]:
    port = _free_port()
    config = uvicorn.Config(
        create_app(app, token=TOKEN, max_body=1000), host="127.0.0.1", port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as c:
        yield c
    server.should_exit = True
    thread.join(10)


def test_start_send_and_show(app: outlast.App, client: httpx.Client) -> None:
    r = client.post("/runs", json={"workflow": "approval", "args": ["mail"], "run_id": "a1"})
    assert r.status_code == 201 and r.json()["run_id"] == "a1"
    assert client.get("/runs/a1").json()["status"] == "pending"
    r = client.post("/runs/a1/events/approve", content=b'"yes"')
    assert r.status_code == 202
    assert app.handle("a1").result(timeout=20) == "mail: yes"
    shown = client.get("/runs/a1").json()
    assert {k: shown[k] for k in ("run_id", "workflow", "status", "result", "forked_from")} == {
        "run_id": "a1", "workflow": "approval", "status": "completed", "result": "mail: yes",
        "forked_from": None,
    }


def test_show_names_a_forks_origin_and_hides_the_frontier(app: outlast.App, client: httpx.Client) -> None:
    client.post("/runs", json={"workflow": "approval", "args": ["mail"], "run_id": "f0"})
    client.post("/runs/f0/events/approve", content=b'"yes"')
    assert app.handle("f0").result(timeout=20) == "mail: yes"
    app.fork("f0", "1", new_run_id="f1").result(timeout=20)
    shown = client.get("/runs/f1").json()
    assert (shown["forked_from"], shown["forked_at"], shown["result"]) == ("f0", "1", "mail: yes")
    assert "frontier" not in shown["stats"] and "forked_from" not in shown["stats"]
    origin = client.get("/runs/f0").json()
    assert origin["forked_from"] is None and "frontier" not in origin["stats"]


def test_bad_input_gets_clear_4xx_and_leaves_data_intact(app: outlast.App, client: httpx.Client) -> None:
    client.post("/runs", json={"workflow": "approval", "args": ["x"], "run_id": "b1"})
    cases = [
        (client.post("/runs/b1/events/approve", content=b"{not json"), 400, "JSON"),
        (client.post("/runs/nope/events/approve", content=b"1"), 404, "nope"),
        (client.get("/runs/nope"), 404, "nope"),
        (client.post("/runs/b1/events/approve", content=b"[" + b"1," * 600 + b"1]"), 413, "1000"),
        (client.post("/runs", json={"workflow": "nothing"}), 404, "unknown workflow"),
        (client.post("/runs", json={"args": []}), 400, "workflow"),
        (client.post("/runs", json={"workflow": "approval", "args": ["other"], "run_id": "b1"}), 409, "other arguments"),
        (client.post("/runs/b1/events/approve", content=b"1", headers={"Authorization": "Bearer wrong"}), 401, "token"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, (status, response.text)
        assert words in response.json()["error"]
    assert app.store.load_journal("b1") == []
    assert app.get_run("b1", steps=False).status == "pending"
    app.cancel("b1")
    r = client.post("/runs/b1/events/approve", content=b"1")
    assert r.status_code == 409 and "cancelled" in r.json()["error"]


def test_serve_refuses_public_binding_without_token(store_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "serve", "tests.apps.waity:app", "--db", store_url,
         "--host", "0.0.0.0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OUTLAST_SERVE_TOKEN": ""},
        capture_output=True, timeout=30,
    )
    assert out.returncode == 1 and b"--token" in out.stderr


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outlast.cli", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
    )


def test_cli_send_and_prune(app: outlast.App, store_url: str) -> None:
    app.enqueue("approval", "cli", run_id="c1")
    bad = _cli("send", "c1", "approve", "{nope", "--db", store_url)
    assert bad.returncode != 0 and "JSON" in bad.stderr
    ok = _cli("send", "c1", "approve", json.dumps({"by": "ann"}), "--db", store_url)
    assert ok.returncode == 0, ok.stderr
    assert app.handle("c1").result(timeout=20) == "cli: {'by': 'ann'}"
    app.enqueue("approval", "kept", run_id="c2")  # not finished: never pruned
    assert "pruned 0 run(s)" in _cli("prune", "--older-than", "1d", "--db", store_url).stdout
    time.sleep(0.05)
    assert "pruned 1 run(s)" in _cli("prune", "--older-than", "0s", "--db", store_url).stdout
    assert app.store.get_run("c1") is None and app.store.get_run("c2") is not None
    assert _cli("prune", "--older-than", "soon", "--db", store_url).returncode != 0
