"""outlast.integrations.httpx: requests inside a step carry its Idempotency-Key; with the
deduplicating receiver (outlast.dedup_asgi) an effect runs once whatever crashes.
``test_cell_*`` are cells of docs/guarantees.md."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.apps.receiver import Served, served  # noqa: F401 - fixture
from tests.test_effects import CRASH, crash_at

import outlast
from outlast.integrations.httpx import AsyncClient, Client, instrument


@pytest.mark.parametrize("point", ["before", "during", "after"])
def test_cell_http_with_key_and_dedup_receiver(store_url: str, served: Served, point: str) -> None:  # noqa: F811
    app = outlast.App(store_url)
    http = Client(base_url=served.url, trust_env=False)

    @app.step
    def charge() -> int:
        n = int(http.post("/dedup/effect", json={"cents": 100}).json()["n"])
        crash_at("during")  # delivered, not recorded: the retry sends the same key
        return n

    @app.workflow
    def flow() -> int:
        crash_at("before")
        n = int(charge())
        crash_at("after")
        return n

    CRASH["at"] = point
    with pytest.raises(KeyboardInterrupt):
        app.run(flow, run_id="r")
    assert app.run(flow, run_id="r") == 1
    assert served.receiver.executed["dedup"] == {"r:charge:1": 1}
    http.close()
    app.close()


def test_headers_sync_and_async(served: Served, tmp_path: Any) -> None:  # noqa: F811
    import httpx

    seen: list[str | None] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Idempotency-Key"))
        return httpx.Response(200, json={})

    app = outlast.App(f"sqlite:///{tmp_path}/h.db")
    sync = Client(transport=httpx.MockTransport(record))
    plain = instrument(httpx.Client(transport=httpx.MockTransport(record)))

    @app.step
    def sync_step() -> None:
        sync.post("http://x/a")
        sync.get("http://x/a")  # safe method: untouched
        plain.put("http://x/b", headers={"Idempotency-Key": "mine"})  # the caller's key wins

    async def arecord(request: httpx.Request) -> httpx.Response:
        return record(request)

    @app.step
    async def async_step() -> None:
        async with AsyncClient(transport=httpx.MockTransport(arecord)) as client:
            await client.post("http://x/c")

    @app.workflow
    async def flow() -> None:
        await sync_step()  # a sync step in an async workflow runs off the loop: awaited
        await async_step.call(key="tool-7")

    asyncio.run(app.run_async(flow, run_id="h"))
    sync.post("http://x/outside")  # outside a step: no key
    assert seen == ["h:sync_step:1", None, "mine", "h:async_step:tool-7", None]
    with pytest.raises(TypeError):
        instrument(object())  # type: ignore[type-var]
    app.close()


def test_import_outlast_does_not_import_httpx() -> None:
    import subprocess
    import sys

    code = "import sys, outlast, outlast.effects, outlast.transaction; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
