"""A real HTTP receiver on 127.0.0.1 for side-effect tests: it counts what it executed.

- ``POST /dedup/effect``: behind :class:`outlast.dedup_asgi.IdempotencyMiddleware` (a
  :class:`~outlast.dedup.Deduplicator` on a SQLite file): a repeated ``Idempotency-Key`` gets
  the stored response, the handler runs once per key.
- ``POST /raw/effect``: no deduplication (an SMTP server, a legacy API): every request runs.
  The body's ``key`` names the effect.
- ``GET /raw/seen?key=K``: how often the raw effect ``K`` ran (what a reconcile function asks).

``executed["dedup"][key]`` and ``executed["raw"][key]`` count handler executions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from outlast.dedup import Deduplicator
from outlast.dedup_asgi import IdempotencyMiddleware


class Receiver:
    """The receiving service; ``delay`` seconds of work per effect widen the crash windows."""

    def __init__(self, dedup_db: str, delay: float = 0.0) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Mount, Route

        self.delay = delay
        self.executed: dict[str, Counter[str]] = {"dedup": Counter(), "raw": Counter()}
        self.in_flight = 0
        #: effect requests received so far (progress, for timing kills)
        self.started = 0
        self.dedup = Deduplicator(f"sqlite:///{dedup_db}")

        async def dedup_effect(request: Request) -> JSONResponse:
            return await self._effect("dedup", request.headers.get("idempotency-key", ""))

        async def raw_effect(request: Request) -> JSONResponse:
            body = json.loads(await request.body())
            return await self._effect("raw", str(body["key"]))

        async def raw_seen(request: Request) -> JSONResponse:
            return JSONResponse({"n": self.executed["raw"][request.query_params["key"]]})

        inner = Starlette(routes=[Route("/effect", dedup_effect, methods=["POST"])])
        self.app = Starlette(
            routes=[
                Mount("/dedup", app=IdempotencyMiddleware(inner, dedup=self.dedup)),
                Route("/raw/effect", raw_effect, methods=["POST"]),
                Route("/raw/seen", raw_seen, methods=["GET"]),
            ]
        )

    async def _effect(self, kind: str, key: str) -> Any:
        from starlette.responses import JSONResponse

        self.in_flight += 1
        self.started += 1
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            self.executed[kind][key] += 1  # the effect: one event loop, no lock needed
            return JSONResponse({"n": self.executed[kind][key]})
        finally:
            self.in_flight -= 1

    def quiet(self, seconds: float = 5.0) -> None:
        """Wait until no request is being handled (requests of killed clients included)."""
        deadline = time.monotonic() + seconds
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve with uvicorn on a random 127.0.0.1 port; yield the base URL."""
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="off", ws="none", http="h11", log_level="critical",
            access_log=False,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.started, "uvicorn did not start"
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
            self.dedup.close()


@dataclass
class Served:
    """A receiver being served, and a plain client for it."""

    receiver: Receiver
    url: str

    def raw(self, key: str) -> int:
        return self.receiver.executed["raw"][key]

    def dedup(self, key: str) -> int:
        return self.receiver.executed["dedup"][key]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A fresh receiver on 127.0.0.1 (import this fixture into a test module)."""
    receiver = Receiver(str(tmp_path / "receiver.db"))
    with receiver.serve() as url:
        yield Served(receiver, url)
