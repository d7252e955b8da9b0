"""Tests for outlast.dedup: the receiving side of idempotency keys.

Every test that touches a database runs twice, on a real SQLite file and on the PostgreSQL server
of ``conftest.pg_server`` (127.0.0.1:5432 unless ``OUTLAST_TEST_POSTGRES`` says otherwise), each
in a table of its own that is dropped afterwards. The middleware tests serve a real Starlette app
with uvicorn on a random 127.0.0.1 port and call it with httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from outlast import dedup as dedup_module
from outlast.dedup import (
    Deduplicator,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    IdempotencyMiddleware,
)
from outlast.errors import ConfigurationError, SerializationError, Timeout

# Subprocesses import the same tree as this file, installed or not.
SRC = Path(__file__).resolve().parents[1] / "src"

pytestmark = pytest.mark.timeout(60)

MakeDedup = Callable[..., Deduplicator]


def _drop(url: str, table: str) -> None:
    if url.startswith("sqlite"):
        path = url[len("sqlite:///") :]
        if os.path.exists(path):
            conn = sqlite3.connect(path)
            try:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            finally:
                conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, table) of a fresh table on one backend; the table is dropped afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'service.db'}"
    else:
        url = str(request.getfixturevalue("pg_server"))  # conftest: checks the server is up
    table = f"dedup_test_{uuid.uuid4().hex[:12]}"
    yield url, table
    _drop(url, table)


@pytest.fixture
def make(db: tuple[str, str]) -> Iterator[MakeDedup]:
    """Open Deduplicators on the test's table (as separate workers would), closed afterwards."""
    url, table = db
    opened: list[Deduplicator] = []

    def factory(**options: Any) -> Deduplicator:
        opened.append(Deduplicator(url, table=table, **options))
        return opened[-1]

    yield factory
    for d in opened:
        d.close()


@pytest.fixture
def dedup(make: MakeDedup) -> Deduplicator:
    return make()


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


def _wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


class Held:
    """A key claimed by a handler in another thread that runs until ``release()``."""

    def __init__(self, d: Deduplicator, key: str, response: bytes = b"first") -> None:
        self.started = threading.Event()
        self._go = threading.Event()
        self.result: list[bytes] = []

        def fn() -> bytes:
            self.started.set()
            assert self._go.wait(20)
            return response

        self._thread = threading.Thread(target=lambda: self.result.append(d.execute(key, "fp", fn)))
        self._thread.start()
        assert self.started.wait(10)

    def release(self) -> bytes:
        self._go.set()
        self._thread.join(10)
        return self.result[0]


# -- the core -----------------------------------------------------------------------------------


def test_repeat_returns_stored_response_without_running(make: MakeDedup) -> None:
    first, other_worker = make(), make()
    calls: list[str] = []

    def fn(tag: str) -> Callable[[], bytes]:
        return lambda: calls.append(tag) or tag.encode()

    assert first.execute("k", "fp", fn("a")) == b"a"
    assert first.execute("k", "fp", fn("b")) == b"a"
    assert other_worker.execute("k", "fp", fn("c")) == b"a"
    assert other_worker.execute("other key", "fp", fn("d")) == b"d"
    assert calls == ["a", "d"]


def test_concurrent_duplicates_in_threads_run_once(dedup: Deduplicator) -> None:
    runs = Counter[str]()
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    results: list[bytes] = []

    def fn() -> bytes:
        with lock:
            runs["n"] += 1
        time.sleep(0.2)
        return threading.current_thread().name.encode()

    def call() -> None:
        barrier.wait()
        results.append(dedup.execute("key", "fp", fn))

    threads = [threading.Thread(target=call, name=f"t{i}") for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert runs["n"] == 1
    assert len(results) == 8 and len(set(results)) == 1


def test_concurrent_duplicates_in_asyncio_run_once(dedup: Deduplicator) -> None:
    runs: list[int] = []

    async def main() -> list[bytes]:
        async def fn() -> bytes:
            runs.append(1)
            await asyncio.sleep(0.2)
            return f"run {len(runs)}".encode()

        return await asyncio.gather(*(dedup.aexecute("key", "fp", fn) for _ in range(8)))

    assert asyncio.run(main()) == [b"run 1"] * 8
    assert runs == [1]


WORKER = """
import os, sys, time
from outlast.dedup import Deduplicator
url, table, key, log, ready, go = sys.argv[1:7]
d = Deduplicator(url, table=table)
def fn():
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(0.3)
    return f"pid {os.getpid()}".encode()
open(ready + str(os.getpid()), "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
print(d.execute(key, "fp", fn).decode(), flush=True)
d.close()
"""


def test_concurrent_duplicates_in_processes_run_once(
    db: tuple[str, str], make: MakeDedup, tmp_path: Path
) -> None:
    url, table = db
    make()  # create the table up front, as a deployed service would have
    log, go = tmp_path / "executions.log", tmp_path / "go"
    ready = str(tmp_path / "ready-")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, table, "key", str(log), ready, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_subprocess_env(),
            text=True,
        )
        for _ in range(3)
    ]
    try:
        _wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 3)
        go.touch()
        outputs = [p.communicate(timeout=20) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    executed = log.read_text().split()
    assert len(executed) == 1
    assert {out.strip() for out, _ in outputs} == {f"pid {executed[0]}"}


def test_other_fingerprint_raises_key_reused_and_runs_nothing(dedup: Deduplicator) -> None:
    dedup.execute("charge-42", "fingerprint-a", lambda: b"ok")
    ran: list[bool] = []
    with pytest.raises(IdempotencyKeyReused, match="charge-42") as info:
        dedup.execute("charge-42", "fingerprint-b", lambda: ran.append(True) or b"no")
    assert not ran
    assert (info.value.key, info.value.stored_fingerprint) == ("charge-42", "fingerprint-a")
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is IdempotencyKeyReused and again.key == "charge-42"
    assert str(again) == str(info.value)


def test_exception_releases_the_key_and_propagates(make: MakeDedup) -> None:
    dedup = make(in_flight_timeout=2)  # an unreleased key would fail the test in 2 s, not 60

    def boom() -> bytes:
        raise ValueError("card declined")

    with pytest.raises(ValueError, match="card declined"):
        dedup.execute("k", "fp", boom)
    assert dedup.execute("k", "fp", lambda: b"retried") == b"retried"
    # Released means deleted: a retry may even carry another request now.
    with pytest.raises(ValueError):
        dedup.execute("k2", "fp", boom)
    assert dedup.execute("k2", "other fp", lambda: b"new request") == b"new request"


def test_async_exception_and_cancellation_release_the_key(make: MakeDedup) -> None:
    dedup = make(in_flight_timeout=2)

    async def boom() -> bytes:
        raise ValueError("card declined")

    async def slow() -> bytes:
        await asyncio.sleep(30)
        return b"never"

    async def quick() -> bytes:
        return b"retried"

    async def main() -> None:
        with pytest.raises(ValueError):
            await dedup.aexecute("k", "fp", boom)
        assert await dedup.aexecute("k", "fp", quick) == b"retried"
        task = asyncio.create_task(dedup.aexecute("gone", "fp", slow))
        await asyncio.sleep(0.2)  # claimed and running
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(dedup.aexecute("gone", "fp", quick), 1.5) == b"retried"

    asyncio.run(main())


def test_waiting_duplicate_runs_when_the_first_fails(dedup: Deduplicator) -> None:
    go = threading.Event()
    started = threading.Event()
    errors: list[BaseException] = []

    def failing() -> bytes:
        started.set()
        go.wait(10)
        raise RuntimeError("first attempt failed")

    def first() -> None:
        try:
            dedup.execute("k", "fp", failing)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(10)
    threading.Timer(0.2, go.set).start()
    assert dedup.execute("k", "fp", lambda: b"second") == b"second"
    thread.join(10)
    assert len(errors) == 1


def test_non_bytes_result_raises_and_releases(dedup: Deduplicator) -> None:
    with pytest.raises(SerializationError, match="returned str"):
        dedup.execute("k", "fp", lambda: "text")  # type: ignore[arg-type, return-value]
    assert dedup.execute("k", "fp", lambda: b"bytes") == b"bytes"


def test_duplicate_waiting_past_in_flight_timeout_gets_in_flight_error(make: MakeDedup) -> None:
    d = make(in_flight_timeout=0.4)
    held = Held(d, "k")
    ran: list[bool] = []
    start = time.monotonic()
    with pytest.raises(IdempotencyKeyInFlight, match="'k'") as info:
        d.execute("k", "fp", lambda: ran.append(True) or b"dup")
    assert 0.35 < time.monotonic() - start < 3
    assert isinstance(info.value, Timeout) and not ran
    assert held.release() == b"first"
    assert d.execute("k", "fp", lambda: b"late") == b"first"


CRASHER = """
import sys, time
from outlast.dedup import Deduplicator
url, table, started = sys.argv[1:4]
d = Deduplicator(url, table=table)
def fn():
    open(started, "w").close()
    time.sleep(60)
    return b"never"
d.execute("k", "fp", fn)
"""


def test_claim_of_a_killed_handler_is_taken_over_once_stale(
    db: tuple[str, str], make: MakeDedup, tmp_path: Path
) -> None:
    url, table = db
    d = make(in_flight_timeout=0.5)
    started = tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, url, table, str(started)], env=_subprocess_env()
    )
    try:
        _wait_for(started.exists)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Fresh claim: a duplicate waits for it, then gives up without running.
    with pytest.raises(IdempotencyKeyInFlight):
        d.execute("k", "fp", lambda: b"too early")
    time.sleep(0.1)
    assert d.execute("k", "fp", lambda: b"taken over") == b"taken over"
    assert d.execute("k", "fp", lambda: b"again") == b"taken over"


def test_stale_handler_cannot_overwrite_the_takeover(
    make: MakeDedup, caplog: pytest.LogCaptureFixture
) -> None:
    d = make(in_flight_timeout=0.3)
    held = Held(d, "k", response=b"slow first")
    time.sleep(0.45)
    assert d.execute("k", "fp", lambda: b"takeover") == b"takeover"
    assert held.release() == b"slow first"  # its caller gets what its own run produced
    assert d.execute("k", "fp", lambda: b"x") == b"takeover"
    assert "ran twice" in caplog.text


def test_prune_deletes_old_finished_keys_only(dedup: Deduplicator) -> None:
    dedup.execute("old", "fp", lambda: b"old")
    time.sleep(0.6)
    dedup.execute("new", "fp", lambda: b"new")
    held = Held(dedup, "running")
    try:
        assert dedup.prune(0.3) == 1
    finally:
        held.release()
    assert dedup.execute("old", "fp", lambda: b"old again") == b"old again"
    assert dedup.execute("new", "fp", lambda: b"new again") == b"new"
    assert dedup.execute("running", "fp", lambda: b"x") == b"first"


def test_ttl_forgets_stored_responses(make: MakeDedup) -> None:
    d = make(ttl=0.5)
    assert d.execute("k", "fp", lambda: b"one") == b"one"
    assert d.execute("k", "fp", lambda: b"two") == b"one"
    with pytest.raises(IdempotencyKeyReused):
        d.execute("k", "other", lambda: b"two")
    time.sleep(0.6)
    assert d.execute("k", "other", lambda: b"three") == b"three"
    assert d.execute("k", "other", lambda: b"four") == b"three"


# -- the decorator ------------------------------------------------------------------------------


def test_once_decorator_sync(dedup: Deduplicator) -> None:
    calls: list[tuple[str, int]] = []

    @dedup.once
    def charge(key: str, amount: int, currency: str = "EUR") -> dict[str, Any]:
        calls.append((key, amount))
        return {"charged": amount, "currency": currency, "pair": (1, 2), "n": len(calls)}

    expected = {"charged": 5, "currency": "EUR", "pair": [1, 2], "n": 1}
    assert charge("k1", 5) == expected
    assert charge("k1", amount=5) == expected
    assert charge("k1", 5, "EUR") == expected
    assert calls == [("k1", 5)]
    with pytest.raises(IdempotencyKeyReused, match="k1"):
        charge("k1", 6)
    assert charge("k2", 6)["n"] == 2
    assert charge.__name__ == "charge"

    @dedup.once(scope="refunds")
    def refund(key: str, amount: int) -> int:
        return -amount

    assert refund("k1", 5) == -5  # another scope: the same key is a different key


def test_once_decorator_rejects_non_json_result_and_releases(dedup: Deduplicator) -> None:
    results: list[object] = [object(), "fine"]

    @dedup.once
    def produce(key: str) -> object:
        return results.pop(0)

    with pytest.raises(SerializationError, match="JSON"):
        produce("k")
    assert produce("k") == "fine"


def test_once_decorator_async(dedup: Deduplicator) -> None:
    calls: list[int] = []

    @dedup.once
    async def charge(key: str, amount: int) -> dict[str, int]:
        calls.append(amount)
        await asyncio.sleep(0.1)
        return {"charged": amount, "n": len(calls)}

    async def main() -> None:
        results = await asyncio.gather(*(charge("k", 7) for _ in range(5)))
        assert results == [{"charged": 7, "n": 1}] * 5
        assert await charge("k", amount=7) == {"charged": 7, "n": 1}
        with pytest.raises(IdempotencyKeyReused):
            await charge("k", 8)

    asyncio.run(main())
    assert calls == [7]


# -- configuration and imports ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options", "match"),
    [
        ("mysql://x/y", {}, "bad dedup URL"),
        ("sqlite:///:memory:", {}, "file every worker shares"),
        ("sqlite:///no/such/folder/x.db", {}, "does not exist"),
        ("sqlite:///x.db?journal=wal", {}, "unknown option"),
        ("sqlite:///x.db", {"table": "drop table; --"}, "bad table name"),
    ],
)
def test_bad_configuration_is_refused(
    url: str, options: dict[str, Any], match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=match):
        Deduplicator(url, **options)
    assert not (tmp_path / "x.db").exists()


def test_import_needs_only_the_standard_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from outlast.dedup import Deduplicator, IdempotencyMiddleware\n"
        f"Deduplicator('sqlite:///{tmp_path / 'a.db'}').execute('k', 'f', lambda: b'x')\n"
        "print(sorted(m for m in ('psycopg', 'starlette', 'uvicorn', 'httpx') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_subprocess_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_all_is_sorted_and_complete() -> None:
    assert dedup_module.__all__ == sorted(dedup_module.__all__)
    for name in dedup_module.__all__:
        assert getattr(dedup_module, name).__doc__


# -- the ASGI middleware ------------------------------------------------------------------------


def _service(d: Deduplicator) -> tuple[Any, Counter[str]]:
    """A Starlette app whose handlers count their runs per request id."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    runs = Counter[str]()

    async def charge(request: Request) -> JSONResponse:
        data = await request.json()
        runs[data["id"]] += 1
        await asyncio.sleep(float(data.get("sleep", 0)))
        body = {"id": data["id"], "run": runs[data["id"]]}
        return JSONResponse(body, status_code=201, headers={"x-charged": "yes"})

    async def flaky(request: Request) -> JSONResponse:
        data = await request.json()
        runs[data["id"]] += 1
        if runs[data["id"]] == 1:
            return JSONResponse({"error": "upstream down"}, status_code=503)
        return JSONResponse({"run": runs[data["id"]]})

    async def crash(request: Request) -> JSONResponse:
        data = await request.json()
        runs[data["id"]] += 1
        if runs[data["id"]] == 1:
            raise RuntimeError("handler crashed")
        return JSONResponse({"run": runs[data["id"]]})

    app = Starlette(
        routes=[
            Route("/charge", charge, methods=["POST", "GET"]),
            Route("/flaky", flaky, methods=["POST"]),
            Route("/crash", crash, methods=["POST"]),
        ]
    )
    app.add_middleware(IdempotencyMiddleware, dedup=d)
    return app, runs


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[httpx.Client]:
    """Serve ``app`` with uvicorn on a random 127.0.0.1 port; yield a client for it."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", ws="none", http="h11", log_level="critical", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started or not thread.is_alive(), seconds=10)
        assert server.started, "uvicorn did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20, trust_env=False) as c:
            yield c
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _post(client: httpx.Client, path: str, body: dict[str, Any], key: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(path, content=json.dumps(body), headers=headers)


def test_middleware_replays_the_stored_response(dedup: Deduplicator) -> None:
    app, runs = _service(dedup)
    with _serve(app) as client:
        first = _post(client, "/charge", {"id": "a"}, "run1:charge:0")
        again = _post(client, "/charge", {"id": "a"}, "run1:charge:0")
    assert (first.status_code, first.json()) == (201, {"id": "a", "run": 1})
    assert "idempotent-replayed" not in first.headers
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["x-charged"] == "yes"
    assert runs["a"] == 1


def test_middleware_passes_through_without_key_or_for_other_methods(dedup: Deduplicator) -> None:
    app, runs = _service(dedup)
    key = {"Idempotency-Key": "g"}
    with _serve(app) as client:
        assert _post(client, "/charge", {"id": "a"}, None).status_code == 201
        assert _post(client, "/charge", {"id": "a"}, None).status_code == 201
        client.request("GET", "/charge", content=b'{"id": "b"}', headers=key)
        get = client.request("GET", "/charge", content=b'{"id": "b"}', headers=key)
        # The key is scoped by method and path: one key may go to two endpoints.
        assert _post(client, "/charge", {"id": "c"}, "shared").status_code == 201
        assert _post(client, "/flaky", {"id": "d"}, "shared").status_code == 503
        empty = _post(client, "/charge", {"id": "e"}, "")
    assert "idempotent-replayed" not in get.headers
    assert (empty.status_code, empty.json()["error"]) == (400, "idempotency_key_empty")
    assert (runs["a"], runs["b"], runs["c"], runs["d"], runs["e"]) == (2, 2, 1, 1, 0)


def test_middleware_answers_422_for_another_body_with_the_same_key(dedup: Deduplicator) -> None:
    app, runs = _service(dedup)
    with _serve(app) as client:
        assert _post(client, "/charge", {"id": "a"}, "k").status_code == 201
        reused = _post(client, "/charge", {"id": "a", "amount": 2}, "k")
    assert reused.status_code == 422
    assert reused.json()["error"] == "idempotency_key_reused"
    assert "'k'" in reused.json()["detail"]
    assert runs["a"] == 1


def test_middleware_does_not_store_server_errors(dedup: Deduplicator) -> None:
    app, runs = _service(dedup)
    with _serve(app) as client:
        failed = _post(client, "/flaky", {"id": "a"}, "k")
        retried = _post(client, "/flaky", {"id": "a"}, "k")
        replayed = _post(client, "/flaky", {"id": "a"}, "k")
        crashed = _post(client, "/crash", {"id": "b"}, "k")
        after_crash = _post(client, "/crash", {"id": "b"}, "k")
    assert failed.status_code == 503
    assert (retried.status_code, retried.json()) == (200, {"run": 2})
    assert "idempotent-replayed" not in retried.headers
    assert replayed.json() == {"run": 2} and replayed.headers["idempotent-replayed"] == "true"
    assert crashed.status_code == 500
    assert (after_crash.status_code, after_crash.json()) == (200, {"run": 2})
    assert (runs["a"], runs["b"]) == (2, 2)


def test_middleware_runs_concurrent_duplicates_once(dedup: Deduplicator) -> None:
    app, runs = _service(dedup)
    responses: list[httpx.Response] = []
    with _serve(app) as client:
        barrier = threading.Barrier(6)

        def call() -> None:
            barrier.wait()
            responses.append(_post(client, "/charge", {"id": "a", "sleep": 0.3}, "k"))

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert runs["a"] == 1
    assert [r.status_code for r in responses] == [201] * 6
    assert {r.content for r in responses} == {b'{"id":"a","run":1}'}
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 5


def test_middleware_answers_409_when_the_first_request_outlasts_the_wait(make: MakeDedup) -> None:
    app, runs = _service(make(in_flight_timeout=0.4))
    with _serve(app) as client:
        first: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: first.append(_post(client, "/charge", {"id": "a", "sleep": 1.2}, "k"))
        )
        thread.start()
        _wait_for(lambda: runs["a"] == 1)
        duplicate = _post(client, "/charge", {"id": "a", "sleep": 1.2}, "k")
        thread.join(10)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"] == "idempotency_key_in_flight"
    assert first[0].status_code == 201
    assert runs["a"] == 1


# -- scoping, bounds and validation (issue 13, items 4 to 6) ------------------------------------


def _tenant_service(d: Deduplicator, **options: Any) -> tuple[Any, Counter[str]]:
    """A bare ASGI app behind the middleware: answers with its run count for the path, sets a
    cookie, and echoes the caller's body, so a replay to the wrong caller shows."""
    runs = Counter[str]()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        runs[scope["path"]] += 1
        payload = json.dumps(
            {"path": scope["path"], "run": runs[scope["path"]], "body": body.decode()}
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"set-cookie", f"session=secret-{runs[scope['path']]}; HttpOnly".encode()),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return IdempotencyMiddleware(app, dedup=d, **options), runs


def _call(
    client: httpx.Client, path: str, key: str, body: str = "{}", **headers: str
) -> httpx.Response:
    """POST with the key; ``x_tenant="a"`` sends the header ``x-tenant: a``."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return client.post(path, content=body, headers={"Idempotency-Key": key, **sent})


def test_middleware_keeps_callers_apart_by_authorization(dedup: Deduplicator) -> None:
    app, runs = _tenant_service(dedup)
    with _serve(app) as client:
        alice = _call(client, "/pay", "run1:pay:0", '{"card": "a"}', authorization="Bearer alice")
        # Mallory repeats (or pre-poisons) Alice's predictable key with her own request.
        mallory = _call(client, "/pay", "run1:pay:0", '{"card": "m"}', authorization="Bearer m")
        alice_again = _call(
            client, "/pay", "run1:pay:0", '{"card": "a"}', authorization="Bearer alice"
        )
        anonymous = _call(client, "/pay", "run1:pay:0", '{"card": "a"}')
    assert (alice.status_code, alice.json()["body"]) == (201, '{"card": "a"}')
    assert (mallory.status_code, mallory.json()["body"]) == (201, '{"card": "m"}')
    assert "idempotent-replayed" not in mallory.headers
    assert alice_again.headers["idempotent-replayed"] == "true"
    assert alice_again.json() == alice.json()
    assert anonymous.json()["run"] == 3 and "idempotent-replayed" not in anonymous.headers
    assert runs["/pay"] == 3


def test_middleware_scope_hook_names_the_caller(dedup: Deduplicator) -> None:
    def tenant(scope: Any) -> str:
        return dict(scope["headers"]).get(b"x-tenant", b"").decode()

    async def async_tenant(scope: Any) -> str:
        return tenant(scope)

    for hook in (tenant, async_tenant):
        app, runs = _tenant_service(dedup, scope=hook)
        with _serve(app) as client:
            first = _call(client, "/pay", str(hook), authorization="Bearer t1", x_tenant="acme")
            # The token rotated between retries; the tenant did not: replayed.
            retry = _call(client, "/pay", str(hook), authorization="Bearer t2", x_tenant="acme")
            other = _call(client, "/pay", str(hook), authorization="Bearer t1", x_tenant="initech")
        assert retry.headers["idempotent-replayed"] == "true" and retry.json() == first.json()
        assert "idempotent-replayed" not in other.headers
        assert runs["/pay"] == 2

    app, _ = _tenant_service(dedup, scope=lambda scope: 42)
    with _serve(app) as client:
        assert _call(client, "/pay", "k").status_code == 500  # a bug in the hook, not the client


def test_middleware_never_stores_or_replays_set_cookie(db: tuple[str, str], make: MakeDedup) -> None:
    app, runs = _tenant_service(make())
    with _serve(app) as client:
        first = _call(client, "/login", "k")
        again = _call(client, "/login", "k")
    assert first.headers["set-cookie"] == "session=secret-1; HttpOnly"
    assert again.headers["idempotent-replayed"] == "true"
    assert "set-cookie" not in again.headers and again.json() == first.json()
    url, table = db
    stored = _read_column(url, table, "response")
    assert len(stored) == 1 and b"secret" not in stored[0] and b"set-cookie" not in stored[0]
    assert runs["/login"] == 1


def _read_column(url: str, table: str, column: str) -> list[Any]:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        try:
            return [bytes(r[0]) for r in conn.execute(f"SELECT {column} FROM {table}")]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return [bytes(r[0]) for r in conn.execute(f"SELECT {column} FROM {table}")]


def test_middleware_scope_cannot_be_spelled_two_ways(dedup: Deduplicator) -> None:
    app, runs = _tenant_service(dedup)
    with _serve(app) as client:
        order = _call(client, "/v1/orders/1", "cancel:k")
        cancel = _call(client, "/v1/orders/1:cancel", "k")
    assert "idempotent-replayed" not in cancel.headers
    assert cancel.json()["path"] == "/v1/orders/1:cancel" and order.json()["path"] == "/v1/orders/1"
    assert runs == {"/v1/orders/1": 1, "/v1/orders/1:cancel": 1}


def test_execute_scopes_cannot_be_spelled_two_ways(dedup: Deduplicator) -> None:
    assert dedup.execute("x:k", "fp", lambda: b"a", scope=("POST /v1",)) == b"a"
    assert dedup.execute("k", "fp", lambda: b"b", scope=("POST /v1:x",)) == b"b"
    assert dedup.execute("k", "fp", lambda: b"c", scope=("POST", "/v1:x")) == b"c"
    assert dedup.execute("k", "fp", lambda: b"d", scope=('POST", "/v1:x',)) == b"d"
    assert dedup.execute("k", "fp", lambda: b"e") == b"e"
    assert dedup.execute("k", "fp", lambda: b"f", scope=("POST", "/v1:x")) == b"c"
    with pytest.raises(TypeError, match="sequence of strings"):
        dedup.execute("k", "fp", lambda: b"g", scope="POST")

    @dedup.once(scope="billing")
    def charge(key: str) -> str:
        return "billing"

    @dedup.once(scope="billing:x")
    def other(key: str) -> str:
        return "billing:x"

    assert (charge("x:k"), other("k")) == ("billing", "billing:x")


def test_long_keys_are_stored_as_digests(dedup: Deduplicator) -> None:
    key = os.urandom(6_000).hex()  # random: PostgreSQL would compress a repeated character
    assert dedup.execute(key, "fp", lambda: b"first") == b"first"
    assert dedup.execute(key, "fp", lambda: b"again") == b"first"
    assert dedup.execute(key + "!", "fp", lambda: b"other") == b"other"


def test_middleware_refuses_overlong_keys_with_400(make: MakeDedup) -> None:
    app, runs = _tenant_service(make(), max_key_length=1024)
    with _serve(app) as client:
        too_long = _call(client, "/pay", "k" * 12_000)
        longest = _call(client, "/pay", "k" * 1024)
        replay = _call(client, "/pay", "k" * 1024)
    assert too_long.status_code == 400
    assert too_long.json()["error"] == "idempotency_key_too_long"
    assert "12000 characters" in too_long.json()["detail"]
    assert "1024" in too_long.json()["detail"]
    assert longest.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert runs["/pay"] == 1
    with pytest.raises(ValueError, match="max_key_length"):
        IdempotencyMiddleware(app, dedup=make(), max_key_length=0)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 0, -1, "5", True])
@pytest.mark.parametrize("option", ["ttl", "in_flight_timeout"])
def test_bad_durations_are_refused(db: tuple[str, str], option: str, bad: Any) -> None:
    url, table = db
    with pytest.raises(ValueError, match=f"{option} must be a finite positive number"):
        Deduplicator(url, table=table, **{option: bad})


def test_prune_refuses_bad_ages(dedup: Deduplicator) -> None:
    for bad in (float("nan"), float("inf"), -1, "1"):
        with pytest.raises(ValueError, match="older_than_seconds"):
            dedup.prune(bad)  # type: ignore[arg-type]
    assert dedup.prune(0) == 0


def test_durations_travel_as_parameters(make: MakeDedup) -> None:
    d = make(ttl=12345.678, in_flight_timeout=98765.4321)
    sql = vars(d._backend.sql)
    assert not [s for s in sql.values() if "12345" in s or "98765" in s]
    assert d.execute("k", "fp", lambda: b"one") == b"one"
    assert d.execute("k", "fp", lambda: b"two") == b"one"


OLD_LAYOUT = (
    "CREATE TABLE {t} (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, state TEXT NOT NULL,"
    " token TEXT NOT NULL, response {blob}, created_at {real} NOT NULL,"
    " claimed_at {real} NOT NULL, finished_at {real})"
)


def test_a_table_from_before_scoping_opens_and_its_rows_are_not_replayed(
    db: tuple[str, str], make: MakeDedup
) -> None:
    url, table = db
    old_row = ("POST /charge:k", "fp", "done", "t", b'{"status":201,"headers":[]}\nold', 1.0, 1.0, 1.0)
    insert = f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///") :])
        with conn:
            conn.execute(OLD_LAYOUT.format(t=table, blob="BLOB", real="REAL"))
            conn.execute(insert, old_row)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(OLD_LAYOUT.format(t=table, blob="BYTEA", real="DOUBLE PRECISION"))
            pg.execute(insert.replace("?", "%s"), old_row)
    d = make()
    app, runs = _tenant_service(d)
    with _serve(app) as client:
        fresh = _call(client, "/charge", "k")
    assert "idempotent-replayed" not in fresh.headers and runs["/charge"] == 1
    assert d.prune(60) == 1  # the old row is pruned like any other
