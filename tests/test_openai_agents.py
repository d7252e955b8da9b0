"""outlast.integrations.openai_agents in one process: the real ``openai-agents`` package against
the local model server. Replays are forced after every recorded call
(``OUTLAST_REPLAY_EACH_STEP=1``), so each test proves that a resumed run reaches the same
calls without sending a model request or running a tool twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

agents = pytest.importorskip("agents")

from agents import (  # noqa: E402
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIProvider,
    OpenAIResponsesModel,
    RunConfig,
    RunContextWrapper,
    function_tool,
)
from openai import AsyncOpenAI  # noqa: E402

import outlast  # noqa: E402
from outlast import aio  # noqa: E402
from outlast.context import REPLAY_EACH_STEP  # noqa: E402
from outlast.integrations.openai_agents import Runner, durable_agent  # noqa: E402
from outlast.testing.llm_server import FakeLLMServer  # noqa: E402
from outlast.testing.llm_wire import LLMRequest, Reply, ToolCall  # noqa: E402

agents.set_tracing_disabled(True)


CLIENTS: list[AsyncOpenAI] = []


@pytest.fixture
def app(sqlite_url: str) -> Iterator[outlast.App]:
    yield outlast.App(sqlite_url)
    while CLIENTS:  # closed on the loop they ran on: outlast's one event loop
        aio.run(CLIENTS.pop().close())


def model(server: FakeLLMServer, chat: bool = False) -> Any:
    client = AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
    CLIENTS.append(client)
    kind = OpenAIChatCompletionsModel if chat else OpenAIResponsesModel
    return kind(model="gpt-4o-mini", openai_client=client)


def distinct_requests(server: FakeLLMServer) -> bool:
    bodies = [str(r.body) for r in server.requests]
    return len(bodies) == len(set(bodies))


def test_a_handoff_and_an_agent_as_tool_replay_from_the_journal(
    app: outlast.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: Counter[str] = Counter()

    @function_tool
    def lookup(order: str) -> str:
        """Look an order up."""
        ran["lookup"] += 1
        return f"{order} shipped"

    def reply(request: LLMRequest) -> Reply:
        tools = request.tool_names
        done = [m.text for m in request.messages if m.role == "tool"]
        if "transfer_to_orders" in tools:  # the triage agent hands off
            return Reply(tool_calls=[ToolCall("transfer_to_orders", {}, id="h1")])
        if "lookup" in tools:  # the orders agent, once handed off to
            if not any("shipped" in d for d in done):
                return Reply(tool_calls=[ToolCall("lookup", {"order": "A1"}, id="t1")])
            if not any("Summary" in d for d in done):
                return Reply(tool_calls=[ToolCall("summarize", {"input": "A1"}, id="t2")])
            return Reply(text=f"orders: {done[-1]}")
        return Reply(text=f"Summary of {request.last_user_text}")  # the agent used as a tool

    with FakeLLMServer(reply) as server:
        writer = Agent(name="writer", instructions="Summarize.", model=model(server, chat=True))
        orders = Agent(
            name="orders",
            instructions="Handle orders.",
            model=model(server),
            tools=[lookup, writer.as_tool("summarize", "Summarize a text.")],
        )
        triage = Agent(name="triage", instructions="Route.", handoffs=[orders], model=model(server))

        @app.workflow
        async def support(ctx: outlast.Context) -> Any:
            result = await Runner.run(triage, "where is A1?")
            return [result.final_output, result.last_agent.name]

        monkeypatch.setenv(REPLAY_EACH_STEP, "1")
        assert app.run(support, run_id="s") == ["orders: Summary of A1", "orders"]
        assert server.count() == 5 and distinct_requests(server)
    assert ran == {"lookup": 1}
    keys = [s.key for s in app.get_run("s").steps]
    assert keys == [
        "agents.model:1",
        "agents.model:2",
        "tool:lookup:t1",
        "agents.model:3",
        "tool:summarize:t2",
        "agents.model:4",
    ]
    # the writer has a Model instance of its own (not durable_agent(writer)): a plain call
    assert app.get_run("s").stats["llm_calls"] == 4


@pytest.mark.parametrize("sub", ["as_tool", "durable_agent"])
def test_an_agent_as_tool_journals_its_model_calls_one_by_one(
    app: outlast.App, monkeypatch: pytest.MonkeyPatch, sub: str
) -> None:
    # The sub-agent's run takes the outer run's config, so its model (a name the run's
    # provider resolves) is durable: each of its requests is journaled inside the tool and a
    # replay inside the tool (forced after every recorded call) sends none of them again.
    # durable_agent(writer) also makes its tools durable and its Model instance.
    ran: Counter[str] = Counter()

    @function_tool
    def count_words(text: str) -> int:
        """Count the words of a text."""
        ran["count_words"] += 1
        return len(text.split())

    def reply(request: LLMRequest) -> Reply:
        done = [m.text for m in request.messages if m.role == "tool"]
        if "count_words" in request.tool_names:  # the writer, used as a tool
            if not done:
                return Reply(tool_calls=[ToolCall("count_words", {"text": "a b c"}, id="w1")])
            return Reply(text=f"Summary ({done[0]} words)")
        if not done:
            return Reply(tool_calls=[ToolCall("summarize", {"input": "the order"}, id="t1")])
        return Reply(text=f"orders: {done[0]}")

    with FakeLLMServer(reply) as server:
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        CLIENTS.append(client)
        writer: Agent[Any] = Agent(name="writer", instructions="Summarize.", tools=[count_words])
        if sub == "durable_agent":
            writer.model = model(server)  # a Model instance: wrapped by durable_agent
            writer = durable_agent(writer)
        else:
            writer.model = "gpt-4o-mini"  # resolved by the run's (durable) provider
        orders = Agent(
            name="orders",
            model="gpt-4o-mini",
            tools=[writer.as_tool("summarize", "Summarize a text.")],
        )
        config = RunConfig(model_provider=OpenAIProvider(openai_client=client, use_responses=True))

        @app.workflow
        async def support(ctx: outlast.Context) -> Any:
            return (await Runner.run(orders, "sum up", run_config=config)).final_output

        monkeypatch.setenv(REPLAY_EACH_STEP, "1")
        assert app.run(support, run_id="s") == "orders: Summary (3 words)"
        assert server.count() == 4 and distinct_requests(server)
    info = app.get_run("s")
    nested = ["tool:count_words:w1"] if sub == "durable_agent" else []
    assert [s.key for s in info.steps] == [  # in position order: a tool's calls follow it
        "agents.model:1",
        "tool:summarize:t1",
        "agents.model:t1.1",
        *nested,
        "agents.model:t1.2",
        "agents.model:2",
    ]
    assert info.stats["llm_calls"] == 4 and info.stats["tokens"] > 0
    # the writer's own tool: durable with durable_agent; else it runs again each time the
    # unfinished sub-agent is replayed (twice here: once per forced replay after w1)
    assert ran == {"count_words": 1 if sub == "durable_agent" else 2}


def test_tool_errors_replay_as_they_happened(
    app: outlast.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: Counter[str] = Counter()

    @function_tool(failure_error_function=None)
    def charge(amount: int) -> str:
        """Charge a card."""
        ran["charge"] += 1
        raise ValueError(f"card declined for {amount}")

    script = [Reply(tool_calls=[ToolCall("charge", {"amount": 5}, id="c1")])]
    with FakeLLMServer(script) as server:
        agent = Agent(name="a", tools=[charge], model=model(server))

        @app.workflow
        async def pay(ctx: outlast.Context) -> str:
            try:
                await Runner.run(agent, "pay")
            except agents.UserError as exc:  # the SDK wraps what the tool raised
                ctx.now()  # a durable call after the failure: the run replays past it
                return f"failed: {type(exc.__cause__).__name__}: {exc.__cause__}"
            return "paid"

        monkeypatch.setenv(REPLAY_EACH_STEP, "1")
        assert app.run(pay, run_id="p") == "failed: ValueError: card declined for 5"
        assert server.count() == 1
    assert ran == {"charge": 1}
    tool = next(s for s in app.get_run("p").steps if s.key == "tool:charge:c1")
    assert tool.status == "failed"


def test_usage_is_counted_and_a_budget_stops_the_run(app: outlast.App) -> None:
    @function_tool
    def again() -> str:
        """Call me again."""
        return "more"

    def reply(request: LLMRequest) -> Reply:
        n = sum(1 for m in request.messages if m.role == "tool")
        return Reply(
            tool_calls=[ToolCall("again", {}, id=f"c{n}")], prompt_tokens=100, completion_tokens=20
        )

    with FakeLLMServer(reply) as server:
        agent = Agent(name="loop", tools=[again], model=model(server))

        @app.workflow(budget=outlast.Budget(tokens=300))
        async def spend(ctx: outlast.Context) -> str:
            try:
                await Runner.run(agent, "go", max_turns=50)
            except outlast.BudgetExceeded as exc:
                return f"stopped after {exc.spent:.0f}"
            return "not stopped"

        # 120 tokens a call: the 4th request (estimated from its text) would pass 300
        assert app.run(spend, run_id="b") == "stopped after 360"
        assert server.count() == 3  # the 4th request was never sent
    stats = app.get_run("b").stats
    assert stats["tokens"] == 360 and stats["llm_calls"] == 3


def test_a_changed_tool_list_raises_nondeterminism(
    app: outlast.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    @function_tool
    def search(q: str) -> str:
        """Search."""
        return q

    @function_tool
    def send_email(to: str) -> str:
        """Send."""
        return to

    executions: list[int] = []
    with FakeLLMServer(lambda r: "hi") as server:

        @app.workflow
        async def w(ctx: outlast.Context) -> Any:
            executions.append(1)
            tools = [search] if len(executions) == 1 else [search, send_email]
            await Runner.run(Agent(name="a", tools=tools, model=model(server)), "q")
            return "done"

        monkeypatch.setenv(REPLAY_EACH_STEP, "1")
        with pytest.raises(outlast.NonDeterminismError) as err:
            app.run(w, run_id="nd")
    assert "tools: added 'send_email' (recorded 1 tools, now 2)" in str(err.value)
    assert "agents.model:1" in str(err.value)


def test_run_sync_in_a_sync_workflow_and_plain_runs_outside(app: outlast.App) -> None:
    @function_tool
    def echo(ctx: RunContextWrapper[Any], text: str) -> str:
        """Echo."""
        return text

    script = [
        Reply(tool_calls=[ToolCall("echo", {"text": "x"}, id="e1")]),
        Reply(text="ok"),
        Reply(text="outside"),
    ]
    with FakeLLMServer(script) as server:
        agent = Agent(name="a", tools=[echo], model=model(server))

        @app.workflow
        def w(ctx: outlast.Context) -> str:
            return str(Runner.run_sync(agent, "go").final_output)

        assert app.run(w, run_id="sync") == "ok"

        async def outside() -> Any:  # its own client, on this loop: not journaled
            async with AsyncOpenAI(base_url=server.openai_base_url, api_key="test") as client:
                plain = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client)
                return (await Runner.run(Agent(name="a", model=plain), "plain")).final_output

        assert asyncio.run(outside()) == "outside"
    assert [s.key for s in app.get_run("sync").steps] == [
        "agents.model:1",
        "tool:echo:e1",
        "agents.model:2",
    ]


def test_a_wait_inside_a_finished_tool_counts_as_replayed(
    app: outlast.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replay (forced after every recorded call) skips the finished tool: the wait it made is
    # listed in the tool's entry, so the run does not end "without calling" it.
    from outlast.integrations.openai_agents import wait_for
    from outlast.worker import Worker

    @function_tool
    async def refund(order: str) -> str:
        """Refund once a human approves."""
        return f"refunded {order}: {await wait_for('approval', timeout=60)}"

    script = [Reply(tool_calls=[ToolCall("refund", {"order": "A1"}, id="r1")]), Reply(text="ok")]
    with FakeLLMServer(script) as server:
        agent = Agent(name="a", tools=[refund], model=model(server))

        @app.workflow
        async def w(ctx: outlast.Context) -> Any:
            return (await Runner.run(agent, "refund A1")).final_output

        monkeypatch.setenv(REPLAY_EACH_STEP, "1")
        app.enqueue(w, run_id="wt")
        Worker(app, burst=True, poll=0.02).run()
        assert app.get_run("wt", steps=False).status == "suspended"
        app.send("wt", "approval", "yes")
        Worker(app, burst=True, poll=0.02).run()
        info = app.get_run("wt")
        assert server.count() == 2
    assert info.status == "completed", info.error
    assert info.result == "ok"
    tool = next(s for s in info.steps if s.key == "tool:refund:r1")
    assert tool.status == "completed"
