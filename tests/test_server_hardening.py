"""outlast serve against hostile input (#13.1-3, #12.10): cross-site requests, foreign Host
headers, enqueue options smuggled in kwargs, NaN/deep/surrogate payloads, arguments that do
not fit the workflow, and a fuzz of the request parsing. A real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import outlast

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from outlast.server import create_app  # noqa: E402
from test_server import _free_port  # noqa: E402


@dataclass
class Order:
    sku: str
    qty: int


class Customer(BaseModel):
    name: str
    vip: bool = False


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[outlast.App, httpx.Client]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('serve') / 'runs.db'}"
    app = outlast.App(url, hibernate_after=0.3)
    app.queue("bulk", concurrency=1)

    @app.workflow
    def approval(ctx: outlast.Context, subject: str) -> str:
        return f"{subject}: {ctx.wait_for('approve')}"

    @app.workflow
    def typed(ctx: outlast.Context, order: Order, who: Customer, when: datetime, n: int = 1) -> str:
        return f"{type(order).__name__} {order.qty} {type(who).__name__} {who.vip} {when.year} {n}"

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(app), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as client:
        yield app, client
    server.should_exit = True
    thread.join(10)
    app.close()


def _error(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert words in r.json()["error"], r.text


def test_cross_site_and_rebinding_requests_are_refused(served: tuple[outlast.App, httpx.Client]) -> None:
    app, client = served
    app.enqueue("approval", "x", run_id="cs1")
    # What a page on another site can send without a preflight: text/plain, a form.
    _error(client.post("/runs/cs1/events/approve", content=b'"yes"', headers={"Content-Type": "text/plain"}),
           415, "application/json")
    _error(client.post("/runs/cs1/events/approve", content=b'"yes"',
                       headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}), 403, "cross-site")
    _error(client.post("/runs/cs1/events/approve", content=b'"yes"', headers={"Origin": "http://localhost:3000"}),
           403, "Origin")
    _error(client.get("/runs/cs1", headers={"Host": "rebind.evil.example"}), 403, "not this server")
    assert app.get_run("cs1", steps=False).status == "pending"
    assert app.store.load_journal("cs1") == []
    ok = client.post("/runs/cs1/events/approve", content=b'"yes"', headers={"Origin": client.base_url.__str__().rstrip("/")})
    assert ok.status_code == 202, ok.text
    assert app.handle("cs1").result(timeout=20) == "x: yes"


def test_kwargs_go_to_the_workflow_only(served: tuple[outlast.App, httpx.Client]) -> None:
    app, client = served
    for bad in ({"queue": "bulk"}, {"priority": 5}, {"concurrency_key": "k"}, {"run_id": "x"},
                {"workflow": "typed"}, {"nope": 1}):
        r = client.post("/runs", json={"workflow": "approval", "args": ["s"], "kwargs": bad, "run_id": "kw1"})
        _error(r, 400, "do not fit workflow 'approval'")
    cases = [
        ({"priority": 10**30}, "priority"), ({"priority": True}, "priority"), ({"priority": 1.5}, "priority"),
        ({"queue": "vip"}, "declared queues"), ({"queue": 3}, "declared queues"),
        ({"concurrency_key": ""}, "concurrency_key"), ({"options": {}}, "unknown field"),
        ({"run_id": 7}, "run_id"), ({"run_id": "r" * 201}, "run_id"),
    ]
    for extra, words in cases:
        _error(client.post("/runs", json={"workflow": "approval", "args": ["s"], "run_id": "kw1", **extra}), 400, words)
    assert app.store.get_run("kw1") is None  # nothing was created by any refused request
    r = client.post("/runs", json={"workflow": "approval", "args": ["s"], "run_id": "kw1", "queue": "bulk", "priority": 7})
    assert r.status_code == 201, r.text
    record = app.store.get_run("kw1")
    assert record is not None and (record.queue, record.priority) == ("bulk", 7)


def test_payloads_json_cannot_show_are_refused_and_never_stored(served: tuple[outlast.App, httpx.Client]) -> None:
    app, client = served
    app.enqueue("approval", "p", run_id="pl1")
    deep = b"[" * 100_000 + b"]" * 100_000
    cases = [
        (b"[NaN, Infinity]", "NaN is not JSON"), (b"-Infinity", "Infinity is not JSON"),
        (b'"\\ud800"', "lone surrogate"), (b'{"\\udc00": 1}', "lone surrogate"),
        (deep, "nested deeper"), (b"[" * 65 + b"]" * 65, "nested deeper"),
        (b"1" * 5000, "valid JSON"), (b"\xff\xfe", "UTF-8"),
    ]
    big = httpx.Client(base_url=client.base_url, headers=client.headers, timeout=10)
    for body, words in cases:
        _error(big.post("/runs/pl1/events/approve", content=body), 400, words)
        _error(big.post("/runs", content=body), 400, words)
    big.close()
    _error(client.post("/runs", content=json.dumps({"workflow": "approval", "args": ["\ud800"]}).encode()), 400, "lone surrogate")
    # Nothing bad was stored: the next valid event is the first one the run reads.
    assert client.post("/runs/pl1/events/approve", json=[1, 2]).status_code == 202
    assert app.handle("pl1").result(timeout=20) == "p: [1, 2]"
    assert client.get("/runs/pl1").json()["result"] == "p: [1, 2]"


def test_arguments_are_checked_and_converted_to_annotated_types(served: tuple[outlast.App, httpx.Client]) -> None:
    app, client = served
    body = {"workflow": "typed", "run_id": "ty1",
            "kwargs": {"order": {"sku": "a", "qty": "3"}, "who": {"name": "ann", "vip": True}, "when": "2026-01-02T00:00:00"}}
    _error(client.post("/runs", json={**body, "kwargs": {**body["kwargs"], "order": {"sku": "a"}}}), 400, "order")
    _error(client.post("/runs", json={**body, "kwargs": {**body["kwargs"], "when": "soon"}}), 400, "when")
    _error(client.post("/runs", json={**body, "kwargs": {"order": {"sku": "a", "qty": 1}}}), 400, "missing")
    assert app.store.get_run("ty1") is None
    r = client.post("/runs", json=body)
    assert r.status_code == 201, r.text
    assert app.handle("ty1").result(timeout=20) == "Order 3 Customer True 2026 1"
    again = client.post("/runs", json=body)  # the same run posted again: its result, not 201
    assert again.status_code == 200 and again.json()["result"] == "Order 3 Customer True 2026 1"
    other = client.post("/runs", json={**body, "kwargs": {**body["kwargs"], "n": 2}})
    _error(other, 409, "other arguments")


def test_results_json_cannot_hold_are_shown_tagged(served: tuple[outlast.App, httpx.Client]) -> None:
    app, client = served

    @app.workflow
    def odd(ctx: outlast.Context) -> object:
        return {(1, 2): float("nan"), "b": b"\x01"}

    app.run(odd, run_id="odd1")
    r = client.get("/runs/odd1")
    assert r.status_code == 200
    assert json.loads(r.text, parse_constant=lambda c: pytest.fail(c))["result"] == {
        "$map": [[{"$tuple": [1, 2]}, {"$float": "NaN"}], ["b", {"$bytes": "AQ=="}]]
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=10,
)
documents = st.fixed_dictionaries(
    {}, optional={"workflow": st.sampled_from(["approval", "typed", "nope"]) | st.text(max_size=5) | json_values,
                  "args": json_values, "kwargs": json_values, "run_id": json_values, "queue": json_values,
                  "priority": json_values, "concurrency_key": json_values},
)
bodies = (
    documents.map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, path=st.sampled_from(["/runs", "/runs/fz/events/go", "/runs/nope/events/go"]),
       ctype=st.sampled_from(["application/json", "text/plain", "application/json; charset=utf-8", ""]))
def test_fuzz_request_parsing_never_500(served: tuple[outlast.App, httpx.Client], body: bytes, path: str, ctype: str) -> None:
    app, client = served
    if app.store.get_run("fz") is None:
        app.enqueue("approval", "fz", run_id="fz")
    r = client.post(path, content=body, headers={"Content-Type": ctype})
    assert r.status_code < 500, (r.status_code, r.text)
    assert isinstance(r.json(), dict)
    if r.status_code >= 400:
        assert r.json()["error"]
