"""The dashboard's test fixtures: a database with telling runs, and the UI on a real uvicorn
server on 127.0.0.1 (shared by tests/test_ui.py, tests/test_ui_browser.py and bench/ui_load.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import openai

import outlast
import outlast.llm

#: set to make ``charge`` die inside its effect, as a killed process would
CRASH = {"on": False}
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(asgi: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``asgi`` with uvicorn in a thread; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host=host, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def demo_app(url: str) -> outlast.App:
    """An app whose workflows leave the kinds of runs the dashboard must show."""
    app = outlast.App(url, hibernate_after=0.2)
    flaky_calls = {"n": 0}

    @app.step(retry=outlast.Retry(attempts=3, initial=0.01, max_delay=0.02))
    def fetch_sources(topic: str) -> list[str]:
        flaky_calls["n"] += 1
        if flaky_calls["n"] % 3 != 0:
            raise ConnectionError("search API timed out")
        return [f"https://example.com/{topic}/{i}" for i in range(3)]

    @app.step
    def summarize(sources: list[str]) -> dict[str, Any]:
        return {"sources": len(sources), "words": 812}

    @app.step
    def publish(summary: dict[str, Any]) -> None:
        raise PermissionError("the CMS refused the draft: 403 Forbidden")

    @app.workflow
    def research(ctx: outlast.Context, topic: str, base_url: str) -> str:
        client = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)
        try:
            llm = outlast.llm.wrap(client)
            sources = fetch_sources(topic)
            for i in range(2):
                llm.chat.completions.create(model="gpt-4o-mini", messages=[
                    {"role": "user", "content": f"Summarize source {i} about {topic}"}])
            publish(summarize(sources))
        finally:
            client.close()
        return "published"

    @app.step
    def echo(value: str) -> dict[str, str]:
        return {"html": value}

    @app.workflow
    def hostile(ctx: outlast.Context, value: str) -> dict[str, str]:
        return echo(value)

    @app.workflow
    def approval(ctx: outlast.Context, subject: str) -> str:
        return f"{subject}: {ctx.wait_for('approve')}"

    @app.step(at_most_once=True)
    def charge(amount: int) -> str:
        if CRASH["on"]:
            raise KeyboardInterrupt  # the process dies inside the effect: outcome unknown
        return f"charged {amount}"

    @app.workflow
    def payment(ctx: outlast.Context, amount: int) -> str:
        return charge(amount)

    @app.step
    def tick(i: int) -> int:
        return i

    @app.workflow
    def long(ctx: outlast.Context, n: int) -> int:
        return sum(tick(i) for i in range(n))

    return app


def fill(app: outlast.App, base_url: str) -> None:
    """One run of each kind (the model server at ``base_url`` answers the agent's calls)."""
    with suppress(PermissionError):
        app.run("research", "durable agents", base_url, run_id="research-1")
    app.run("hostile", HOSTILE, run_id="hostile-1")
    app.run("long", 300, run_id="long-1")
    app.enqueue("approval", "deploy", run_id="approval-1")
    app.handle("approval-1")  # exists
    for i in range(3):
        app.run("hostile", f"plain {i}", run_id=f"plain-{i}")


def paused_run(app: outlast.App, run_id: str) -> None:
    """A payment run paused because its at-most-once effect's outcome is unknown."""
    CRASH["on"] = True
    try:
        with suppress(KeyboardInterrupt):
            app.run("payment", 5, run_id=run_id)
    finally:
        CRASH["on"] = False
    with suppress(outlast.RunPaused):
        app.run("payment", 5, run_id=run_id)
    assert app.get_run(run_id, steps=False).status == "paused"
