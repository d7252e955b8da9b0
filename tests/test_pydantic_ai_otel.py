"""Replay-safe telemetry of Pydantic AI agents under OutlastDurability (in process).

An agent run crashes inside its second tool call (a BaseException standing for the process
dying), and the same run id is run again: the second execution replays the first model
requests and the first tool from the journal and must report only what it executes. Once
with outlast's own spans (``chat {model}``, ``execute_tool {tool}``), once with Pydantic AI's
instrumentation on (its spans, kept replay-safe by ``record_durable_unit``; outlast then adds
none per unit). Spans are read with the SDK's in-memory exporter pinned on outlast's hub.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("pydantic_ai")

from openai import AsyncOpenAI  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind  # noqa: E402
from pydantic_ai import Agent, InstrumentationSettings  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402
from tests.apps.pai_agent import scripted  # noqa: E402

import outlast  # noqa: E402
from outlast.integrations.pydantic_ai import OutlastDurability  # noqa: E402
from outlast.telemetry import hub  # noqa: E402
from outlast.testing.llm_server import FakeLLMServer  # noqa: E402

# Spans are per execution: the replay-each-step pass would multiply them.
pytestmark = pytest.mark.counts_executions


class Crash(BaseException):
    """Stands for the process dying inside a tool (the run is left for the next execution)."""


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    hub.tracer_provider = tracer_provider
    yield tracer_provider, exporter
    hub.tracer_provider = None
    tracer_provider.shutdown()


def names(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], scope: str) -> Counter[str]:
    return Counter(
        s.name for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == scope
    )


def crash_and_rerun(
    sqlite_url: str, exporter: InMemorySpanExporter, instrument: Any
) -> tuple[list[ReadableSpan], list[ReadableSpan]]:
    """The spans of the crashed execution and of the one that finished the run."""
    app = outlast.App(sqlite_url)
    crash = {"mul": True}
    with FakeLLMServer(scripted) as server:

        @app.workflow
        async def shop(ctx: outlast.Context) -> str:
            async with AsyncOpenAI(base_url=server.openai_base_url, api_key="t") as client:
                model = OpenAIChatModel(
                    "gpt-4o-mini", provider=OpenAIProvider(openai_client=client)
                )
                agent = Agent(model, name="shop", capabilities=[OutlastDurability()])
                agent.instrument = instrument

                @agent.tool_plain
                def add(a: int, b: int) -> int:
                    return a + b

                @agent.tool_plain
                def mul(a: int, b: int) -> int:
                    if crash["mul"]:
                        raise Crash
                    return a * b

                return (await agent.run("compute")).output

        with pytest.raises(Crash):
            app.run(shop, run_id="traced")
        first = list(exporter.get_finished_spans())
        exporter.clear()
        crash["mul"] = False
        assert app.run(shop, run_id="traced") == "results: 3, 12"
        assert server.count() == 3  # the two requests before the crash were not sent again
    app.close()
    return first, list(exporter.get_finished_spans())


def test_outlast_spans_report_only_the_work_each_execution_does(
    sqlite_url: str, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    first, second = crash_and_rerun(sqlite_url, provider[1], instrument=False)
    assert names(first, "outlast") == {
        "start_workflow shop": 1,  # the run's anchor, on its first execution only
        "invoke_workflow shop": 1,
        "chat gpt-4o-mini": 2,
        "execute_tool add": 1,
        "execute_tool mul": 1,  # ended plainly by the crash: not a failure of the tool
    }
    assert names(second, "outlast") == {
        "invoke_workflow shop": 1,
        "execute_tool mul": 1,
        "chat gpt-4o-mini": 1,
    }
    by_name = {s.name: s for s in second}
    run = by_name["invoke_workflow shop"]
    assert run.attributes is not None and run.attributes["outlast.replayed_calls"] == 3
    chat = by_name["chat gpt-4o-mini"]
    assert chat.kind == SpanKind.CLIENT and chat.parent is not None
    assert chat.parent.span_id == run.context.span_id
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"]
    assert str(attrs["gen_ai.response.id"]).startswith("chatcmpl")
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert not any(k.endswith(".messages") for k in attrs)  # no content unless opted in
    tool = dict(by_name["execute_tool mul"].attributes or {})
    assert tool["gen_ai.tool.name"] == "mul" and tool["gen_ai.tool.call.id"] == "call_mul"
    assert "error.type" not in tool
    crashed = [s for s in first if s.name == "execute_tool mul"][0]
    assert "error.type" not in dict(crashed.attributes or {})


def test_pydantic_ai_instrumentation_reports_replayed_units_once(
    sqlite_url: str, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = provider
    settings = InstrumentationSettings(tracer_provider=tracer_provider)
    first, second = crash_and_rerun(sqlite_url, exporter, instrument=settings)
    framework = "pydantic-ai"
    # outlast adds no span per unit: the framework's report the same work
    assert names(first, "outlast") == {"start_workflow shop": 1, "invoke_workflow shop": 1}
    assert names(second, "outlast") == {"invoke_workflow shop": 1}
    assert names(first, framework) == {
        "invoke_agent shop": 1,
        "chat gpt-4o-mini": 2,
        "execute_tool add": 1,
        "execute_tool mul": 1,
    }
    # the replayed requests and the replayed tool are not exported again
    assert names(second, framework) == {
        "invoke_agent shop": 1,
        "chat gpt-4o-mini": 1,
        "execute_tool mul": 1,
    }
    (run,) = [s for s in second if s.name == "invoke_workflow shop"]
    (agent,) = [s for s in second if s.name == "invoke_agent shop"]
    assert agent.parent is not None and agent.parent.span_id == run.context.span_id
