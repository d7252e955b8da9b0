"""A Pydantic AI agent with an MCP toolset under OutlastDurability, against a real MCP server.

The server is the ``mcp`` package's ``MCPServer`` over streamable HTTP on 127.0.0.1, in
this process, counting the JSON-RPC requests it receives. The agent calls the server's tool,
then a local tool that crashes the first time (a BaseException standing for the process
dying); the same run id is run again. The MCP units (``get_tools``, ``call_tool``) are
journaled, and the rerun answers them from the journal: the server's tool runs once, and no
listing the first execution made is asked again.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")
pytest.importorskip("fastmcp")

import uvicorn  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.mcp import MCPToolset  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402

import outlast  # noqa: E402
from outlast.integrations.pydantic_ai import OutlastDurability  # noqa: E402
from outlast.testing.llm_server import FakeLLMServer, LLMRequest, Reply, ToolCall  # noqa: E402

pytestmark = pytest.mark.counts_executions  # counts the server's calls per execution


class Crash(BaseException):
    """Stands for the process dying inside a tool (the run is left for the next execution)."""


class CalcServer:
    """An MCP server with one tool, ``multiply``, counting the JSON-RPC methods it is sent."""

    def __init__(self) -> None:
        self.methods: Counter[str] = Counter()
        self.multiplied = 0
        server = MCPServer("calc")

        @server.tool()
        def multiply(a: int, b: int) -> int:
            """Multiply two integers."""
            self.multiplied += 1
            return a * b

        self.app = server.streamable_http_app(json_response=True)
        config = uvicorn.Config(
            self._count, host="127.0.0.1", port=0, log_level="error", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _count(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        for item in (lambda d: d if isinstance(d, list) else [d])(json.loads(body or b"{}")):
            if isinstance(item, dict) and "method" in item:
                self.methods[item["method"]] += 1

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/mcp"

    def __enter__(self) -> CalcServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the MCP server did not start")
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def model(request: LLMRequest) -> Reply:
    done = [m.text for m in request.messages if m.role == "tool"]
    if not done:
        return Reply(tool_calls=[ToolCall("multiply", {"a": 3, "b": 4}, id="call_mul")])
    if len(done) == 1:
        return Reply(tool_calls=[ToolCall("note", {"text": done[0]}, id="call_note")])
    return Reply(text="results: " + ", ".join(done))


@pytest.fixture
def calc() -> Iterator[CalcServer]:
    with CalcServer() as server:
        yield server


def test_mcp_units_are_journaled_and_replayed_without_the_server(
    sqlite_url: str, calc: CalcServer
) -> None:
    app = outlast.App(sqlite_url)
    crash = {"note": True}
    with FakeLLMServer(model) as llm:

        @app.workflow
        async def shop(ctx: outlast.Context) -> str:
            async with AsyncOpenAI(base_url=llm.openai_base_url, api_key="t") as client:
                chat = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
                agent = Agent(
                    chat,
                    name="shop",
                    toolsets=[MCPToolset(calc.url, id="calc")],
                    capabilities=[OutlastDurability()],
                )

                @agent.tool_plain
                def note(text: str) -> str:
                    if crash["note"]:
                        raise Crash
                    return f"noted {text}"

                return (await agent.run("compute")).output

        with pytest.raises(Crash):
            app.run(shop, run_id="mcp")
        first = Counter(calc.methods)
        assert calc.multiplied == 1 and first["tools/call"] == 1
        crash["note"] = False
        assert app.run(shop, run_id="mcp") == "results: 12, noted 12"
        assert llm.count() == 3  # the two requests before the crash were not sent again
    info = app.get_run("mcp")
    app.close()

    mcp = "shop__mcp_server__calc"
    assert [(s.kind, s.key) for s in info.steps] == [  # the persisted names, pinned
        ("step", f"{mcp}.get_tools:1"),
        ("llm", "shop__model.request:1"),
        ("step", f"{mcp}.call_tool:call_mul"),
        ("llm", "shop__model.request:2"),
        ("step", "shop__function_toolset__<agent>.call_tool:note:call_note"),
        ("llm", "shop__model.request:3"),
    ]
    # the rerun answered the listing and the call from the journal: it sent the server nothing
    assert calc.multiplied == 1
    assert calc.methods == first
