"""OutlastDurability with the real pydantic-ai-slim against the local model server, in process.

A run is replayed by making it hibernate after the agent ran (``ctx.wait_for``), then
sending the event: the next execution replays the agent from the journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from openai import AsyncOpenAI  # noqa: E402
from pydantic_ai import Agent, ModelRetry  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402
from tests.apps import pai_agent  # noqa: E402

import outlast  # noqa: E402
from outlast.integrations.pydantic_ai import OutlastDurability, parse_token  # noqa: E402
from outlast.testing.llm_server import FakeLLMServer, LLMRequest, Reply, ToolCall  # noqa: E402
from outlast.worker import Worker  # noqa: E402


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(pai_agent.scripted) as srv:
        yield srv


@pytest.fixture
def app(sqlite_url: str) -> Iterator[outlast.App]:
    a = outlast.App(sqlite_url)
    yield a
    a.close()


def _burst(app: outlast.App) -> None:
    Worker(app, burst=True, poll=0.02).run()


def _twice(app: outlast.App, wf: Any, *args: Any, run_id: str) -> outlast.RunInfo:
    """Run ``wf`` until it waits for "go", send it, and let the run replay to its end."""
    app.enqueue(wf, *args, run_id=run_id)
    _burst(app)
    assert app.get_run(run_id, steps=False).status == "suspended"
    app.send(run_id, "go")
    _burst(app)
    return app.get_run(run_id)


def _agent(client: AsyncOpenAI, *, name: str = "calc", **kwargs: Any) -> Agent[None, str]:
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
    return Agent(model, name=name, capabilities=[OutlastDurability()], **kwargs)


def test_persisted_unit_names_are_pinned(
    sqlite_url: str, server: FakeLLMServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unit names are compatibility data: a run in flight finds its recorded work by them.
    monkeypatch.setattr(pai_agent, "LOG", str(tmp_path / "log"))
    pai_agent.app.use(sqlite_url)
    try:
        keys = {}
        for mode in ("seq", "stream", "parallel"):
            pai_agent.app.run(pai_agent.shop, server.openai_base_url, mode, run_id=mode)
            keys[mode] = [(s.kind, s.key) for s in pai_agent.app.get_run(mode).steps]
        pai_agent.app.enqueue(pai_agent.shop, server.openai_base_url, "approve", run_id="hitl")
        _burst(pai_agent.app)
        keys["approve"] = [(s.kind, s.key) for s in pai_agent.app.get_run("hitl").steps]
    finally:
        pai_agent.app.close()
    tool = "shop__function_toolset__<agent>.call_tool"
    assert keys["seq"] == [
        ("llm", "shop__model.request:1"),
        ("step", f"{tool}:add:call_add"),
        ("llm", "shop__model.request:2"),
        ("step", f"{tool}:mul:call_mul"),
        ("llm", "shop__model.request:3"),
    ]
    assert keys["stream"] == [
        ("llm", "shop__model.request_stream:1"),
        ("step", f"{tool}:add:call_add"),
        ("llm", "shop__model.request_stream:2"),
        ("step", f"{tool}:mul:call_mul"),
        ("llm", "shop__model.request_stream:3"),
    ]
    assert sorted(keys["parallel"]) == [
        ("llm", "shop__model.request:1"),
        ("llm", "shop__model.request:2"),
        ("step", f"{tool}:add:call_add"),
        ("step", f"{tool}:mul:call_mul"),
    ]
    assert keys["approve"] == [
        ("llm", "shop__model.request:1"),
        ("step", "shop__external_event.deferred_tool_calls.ask:1"),
    ]
    assert parse_token("hitl deferred_tool_calls:1") == ("hitl", "deferred_tool_calls:1")


def test_transparent_outside_a_workflow_and_inside_a_step(app: outlast.App) -> None:
    async def main() -> tuple[str, str]:
        async with AsyncOpenAI(base_url=server.openai_base_url, api_key="t") as client:
            agent = _agent(client)
            plain = (await agent.run("hello")).output

            @app.step
            async def ask(question: str) -> str:
                return (await agent.run(question)).output

            @app.workflow
            async def wf(ctx: outlast.Context) -> str:
                return await ask("inside")

            return plain, await app.run_async(wf, run_id="in-step")

    with FakeLLMServer() as server:
        plain, inside = asyncio.run(main())
        count = server.count()
    assert plain.startswith("Reply to: hello") and inside.startswith("Reply to: inside")
    # inside a step the agent is a plain call: the step is the only journal entry
    assert [s.key for s in app.get_run("in-step").steps] == ["ask:1"]
    assert count == 2


def _changed_run(app: outlast.App, server: FakeLLMServer, change: dict[str, Any]) -> str:
    setup: dict[str, Any] = {"prompt": "compute", "mul": True}

    @app.workflow
    async def wf(ctx: outlast.Context) -> str:
        async with AsyncOpenAI(base_url=server.openai_base_url, api_key="t") as client:
            agent = _agent(client)

            @agent.tool_plain
            def add(a: int, b: int) -> int:
                return a + b

            if setup["mul"]:

                @agent.tool_plain
                def mul(a: int, b: int) -> int:
                    return a * b

            out = (await agent.run(setup["prompt"])).output
        await ctx.wait_for("go")
        return out

    app.enqueue(wf, run_id="changed")
    _burst(app)
    setup.update(change)
    app.send("changed", "go")
    _burst(app)
    info = app.get_run("changed")
    assert info.status == "failed", info.status
    assert isinstance(info.error, outlast.NonDeterminismError), info.error
    return str(info.error)


def test_a_changed_prompt_on_replay_shows_the_difference(
    app: outlast.App, server: FakeLLMServer
) -> None:
    error = _changed_run(app, server, {"prompt": "compute twice"})
    assert "calc__model.request:1" in error
    assert "recorded 'compute', now 'compute twice'" in error


def test_a_changed_tool_list_on_replay_shows_the_difference(
    app: outlast.App, server: FakeLLMServer
) -> None:
    error = _changed_run(app, server, {"mul": False})
    assert "tools" in error and "'mul'" in error


def test_a_tool_error_and_model_retry_replay(app: outlast.App) -> None:
    def model(request: LLMRequest) -> Reply:
        results = [m.text for m in request.messages if m.role == "tool"]
        if "break" in request.last_user_text:
            return Reply(tool_calls=[ToolCall("broken", {}, id="b1")])
        if len(results) < 2:
            return Reply(tool_calls=[ToolCall("flaky", {"n": len(results)}, id=f"c{len(results)}")])
        return Reply(text="after " + " | ".join(results))

    ran: list[str] = []
    with FakeLLMServer(model) as srv:

        @app.workflow
        async def wf(ctx: outlast.Context) -> list[str]:
            async with AsyncOpenAI(base_url=srv.openai_base_url, api_key="t") as client:
                agent = _agent(client, retries=3)

                @agent.tool_plain
                def flaky(n: int) -> str:
                    ran.append(f"flaky {n}")
                    if n == 0:
                        raise ModelRetry("try again with n=1")
                    return "fine"

                @agent.tool_plain
                def broken() -> str:
                    ran.append("broken")
                    raise LookupError("no such record")

                out = [(await agent.run("go")).output]
                try:
                    await agent.run("break it")
                except LookupError as exc:
                    out.append(f"LookupError: {exc}")
            await ctx.wait_for("go")
            return out

        info = _twice(app, wf, run_id="errors")
        sent = srv.count()
    assert info.status == "completed", info.error
    first, second = info.result
    assert first == 'after {"error":"try again with n=1"} | fine'
    assert second == "LookupError: no such record"
    # Each tool call ran once; the replay raised the recorded ModelRetry and LookupError again.
    assert ran == ["flaky 0", "flaky 1", "broken"]
    assert sent == 4
    failed = [s.key for s in info.steps if s.status == "failed"]
    assert failed == ["calc__function_toolset__<agent>.call_tool:broken:b1"]


def test_budget_stops_a_model_request_before_it_is_sent(app: outlast.App) -> None:
    with FakeLLMServer(lambda r: Reply(text="ok", prompt_tokens=40, completion_tokens=10)) as srv:

        @app.workflow(budget=outlast.Budget(tokens=60))
        async def wf(ctx: outlast.Context) -> str:
            async with AsyncOpenAI(base_url=srv.openai_base_url, api_key="t") as client:
                agent = _agent(client)
                await agent.run("first question")
                try:
                    await agent.run("second question")
                except outlast.BudgetExceeded as exc:
                    return f"stopped at {exc.spent:.0f}"
            return "not stopped"

        out = app.run(wf, run_id="budget")
        assert srv.count() == 1
    assert out == "stopped at 50"
    stats = app.get_run("budget").stats
    assert stats["llm_calls"] == 1 and stats["tokens"] == 50
