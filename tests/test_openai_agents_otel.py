"""Replay-safe telemetry of OpenAI Agents SDK runs under outlast's Runner (in process).

The agent calls a sub-agent used as a tool, then a tool that crashes the first time (a
BaseException standing for the process dying); the same run id is run again. The second
execution replays the model calls, the sub-agent's included, and the first tool from the
journal and must report only the tool and the model call it executes. Spans are read with
the SDK's in-memory exporter pinned on outlast's hub.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

agents = pytest.importorskip("agents")

from agents import Agent, OpenAIProvider, RunConfig, function_tool  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402

import outlast  # noqa: E402
from outlast import aio  # noqa: E402
from outlast.integrations.openai_agents import Runner  # noqa: E402
from outlast.testing.llm_server import FakeLLMServer  # noqa: E402
from outlast.testing.llm_wire import LLMRequest, Reply, ToolCall  # noqa: E402

agents.set_tracing_disabled(True)

# Spans are per execution: the replay-each-step pass would multiply them.
pytestmark = pytest.mark.counts_executions


class Crash(BaseException):
    """Stands for the process dying inside a tool (the run is left for the next execution)."""


def reply(request: LLMRequest) -> Reply:
    done = [m.text for m in request.messages if m.role == "tool"]
    if "lookup" not in request.tool_names:  # the writer, used as a tool
        return Reply(text=f"Summary of {request.last_user_text}", prompt_tokens=30)
    if not done:
        return Reply(tool_calls=[ToolCall("summarize", {"input": "A1"}, id="t1")])
    if len(done) == 1:
        return Reply(tool_calls=[ToolCall("lookup", {"order": "A1"}, id="t2")])
    return Reply(text="orders: " + " | ".join(done), prompt_tokens=70, completion_tokens=5)


def names(spans: list[ReadableSpan]) -> Counter[str]:
    return Counter(s.name for s in spans)


def test_spans_report_only_what_each_execution_runs(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    app = outlast.App(sqlite_url)
    crash = {"lookup": True}

    @function_tool
    def lookup(order: str) -> str:
        """Look an order up."""
        if crash["lookup"]:
            raise Crash
        return f"{order} shipped"

    with FakeLLMServer(reply) as server:
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        writer = Agent(name="writer", instructions="Summarize.", model="gpt-4o-mini")
        orders = Agent(
            name="orders",
            model="gpt-4o-mini",
            tools=[writer.as_tool("summarize", "Summarize a text."), lookup],
        )
        config = RunConfig(model_provider=OpenAIProvider(openai_client=client, use_responses=True))

        @app.workflow
        async def support(ctx: outlast.Context) -> Any:
            return (await Runner.run(orders, "where is A1?", run_config=config)).final_output

        with pytest.raises(Crash):
            app.run(support, run_id="traced")
        first = list(spans.get_finished_spans())
        spans.clear()
        crash["lookup"] = False
        assert app.run(support, run_id="traced") == "orders: Summary of A1 | A1 shipped"
        assert server.count() == 4  # the three requests before the crash were not sent again
        aio.run(client.close())
    second = list(spans.get_finished_spans())
    app.close()

    assert names(first) == {
        "start_workflow support": 1,  # the run's anchor, on its first execution only
        "invoke_workflow support": 1,
        "chat gpt-4o-mini": 3,
        "execute_tool summarize": 1,
        "execute_tool lookup": 1,  # ended plainly by the crash: not a failure of the tool
    }
    # the sub-agent's model call is a child of the tool that runs it
    (tool,) = [s for s in first if s.name == "execute_tool summarize"]
    nested = [s for s in first if s.parent is not None and s.parent.span_id == tool.context.span_id]
    assert names(nested) == {"chat gpt-4o-mini": 1}
    assert names(second) == {
        "invoke_workflow support": 1,
        "execute_tool lookup": 1,
        "chat gpt-4o-mini": 1,
    }
    by_name = {s.name: s for s in second}
    run = by_name["invoke_workflow support"]
    assert run.attributes is not None and run.attributes["outlast.replayed_calls"] == 4
    chat = by_name["chat gpt-4o-mini"]
    assert chat.kind == SpanKind.CLIENT
    assert chat.parent is not None and chat.parent.span_id == run.context.span_id
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] == 70 and attrs["gen_ai.usage.output_tokens"] == 5
    assert str(attrs["gen_ai.response.id"]).startswith("resp")
    lookup_span = dict(by_name["execute_tool lookup"].attributes or {})
    assert lookup_span["gen_ai.tool.name"] == "lookup"
    assert lookup_span["gen_ai.tool.call.id"] == "t2"
    assert "error.type" not in lookup_span


def test_a_streamed_call_reports_its_usage(sqlite_url: str, spans: InMemorySpanExporter) -> None:
    app = outlast.App(sqlite_url)
    script = [Reply(text="streamed answer", prompt_tokens=12, completion_tokens=3)]
    with FakeLLMServer(script) as server:
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        config = RunConfig(model_provider=OpenAIProvider(openai_client=client, use_responses=True))
        agent = Agent(name="a", model="gpt-4o-mini")

        @app.workflow
        async def talk(ctx: outlast.Context) -> Any:
            streamed = Runner.run_streamed(agent, "hi", run_config=config)
            async for _ in streamed.stream_events():
                pass
            return streamed.final_output

        assert app.run(talk, run_id="streamed") == "streamed answer"
        aio.run(client.close())
    app.close()
    (chat,) = [s for s in spans.get_finished_spans() if s.name == "chat gpt-4o-mini"]
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.usage.input_tokens"] == 12 and attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["gen_ai.response.finish_reasons"] == ("completed",)
