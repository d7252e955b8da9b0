"""OpenTelemetry: the span tree of a run, replay-safety, retries, failures, metrics, logs.

Spans are read with the SDK's in-memory exporter, metrics with its in-memory reader, both on
providers pinned through outlast's internal seam (``outlast.telemetry.hub``), so the
process's global providers stay untouched for the other tests.
"""

from __future__ import annotations

import logging
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.otelkit import by_name, parent_of

import outlast
from outlast.testing import FakeLLMServer, Reply, ToolCall

# Spans are per execution: the replay-each-step pass would multiply them.
pytestmark = pytest.mark.counts_executions


class Crash(BaseException):
    """Stands for the process dying (the run is left for the next execution)."""


def agent_app(url: str, server: FakeLLMServer, flag: dict[str, bool], **options: Any) -> Any:
    app = outlast.App(url, **options)
    tools = outlast.llm.Tools(app)
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
    llm = outlast.llm.wrap(client)

    @tools.tool(effect="read_only")
    def weather(city: str) -> str:
        return f"sunny in {city}"

    @app.step
    def plan(task: str) -> str:
        return f"plan for {task}"

    @app.workflow
    def agent(ctx: outlast.Context, task: str) -> str:
        messages: list[Any] = [{"role": "user", "content": plan(task)}]
        reply = llm.chat.completions.create(
            model="gpt-4o-mini", messages=messages, tools=tools.schemas("chat.completions")
        )
        messages.append(reply.choices[0].message)
        messages += tools.run(reply)
        if flag.get("crash"):
            raise Crash
        final = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
        return final.choices[0].message.content or ""

    return app, agent, client


def script() -> list[Reply]:
    return [
        Reply(
            tool_calls=[ToolCall("weather", {"city": "Oslo"}, id="call_1")],
            prompt_tokens=50,
            completion_tokens=7,
        ),
        Reply(text="Sunny in Oslo.", prompt_tokens=80, completion_tokens=4),
    ]


def test_span_tree_of_a_run_with_a_step_a_model_call_and_a_tool(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    with FakeLLMServer(script()) as server:
        app, agent, client = agent_app(sqlite_url, server, {})
        with client:
            assert app.run(agent, "trip", run_id="tree") == "Sunny in Oslo."
    got = by_name(spans)
    run = got["invoke_workflow agent"][0]
    # the run's anchor: a root span ended as the first execution starts, its parent
    (anchor,) = got["start_workflow agent"]
    assert anchor.parent is None and parent_of(run) == anchor.context.span_id
    assert anchor.end_time is not None and run.start_time is not None
    assert anchor.end_time <= run.start_time
    assert anchor.attributes is not None and anchor.attributes["outlast.run.id"] == "tree"
    assert run.kind == SpanKind.INTERNAL
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert run.attributes["gen_ai.workflow.name"] == "agent"
    assert run.attributes["outlast.run.id"] == "tree"
    assert run.attributes["outlast.replayed_calls"] == 0
    assert run.status.status_code == StatusCode.UNSET
    root = run.context.span_id

    (step,) = got["step plan"]
    assert parent_of(step) == root
    assert step.attributes == {
        "outlast.step.key": "plan:1",
        "outlast.step.attempt": 1,
        "outlast.step.kind": "step",
    }

    chats = got["chat gpt-4o-mini"]
    assert len(chats) == 2 and all(parent_of(c) == root for c in chats)
    first = chats[0]
    assert first.kind == SpanKind.CLIENT
    attrs = dict(first.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"]
    assert str(attrs["gen_ai.response.id"]).startswith("chatcmpl")
    assert attrs["gen_ai.usage.input_tokens"] == 50
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    # no content unless opted in
    assert not any(k.endswith(".messages") for k in attrs)

    (tool,) = got["execute_tool weather"]
    assert parent_of(tool) == root
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.call.id"] == "call_1"
    assert tool.attributes["gen_ai.tool.name"] == "weather"
    # the run's trace context is kept with the run, for later executions to link to
    stored = app.store.get_run("tree")
    assert stored is not None
    assert stored.trace_context == f"00-{run.context.trace_id:032x}-{anchor.context.span_id:016x}-03"
    app.close()


def test_replayed_work_emits_no_span_and_the_resumed_execution_links_to_the_first(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    flag = {"crash": True}
    with FakeLLMServer(script()) as server:
        app, agent, client = agent_app(sqlite_url, server, flag)
        with client:
            with pytest.raises(Crash):
                app.run(agent, "trip", run_id="again")
            first = by_name(spans)
            spans.clear()
            flag["crash"] = False
            assert app.run(agent, "trip", run_id="again") == "Sunny in Oslo."
    assert len(first["chat gpt-4o-mini"]) == 1
    (anchor,) = first["start_workflow agent"]
    got = by_name(spans)
    # only the final model call executed again: plan, the first call and the tool replayed
    assert sorted(got) == ["chat gpt-4o-mini", "invoke_workflow agent"]
    assert len(got["chat gpt-4o-mini"]) == 1
    run = got["invoke_workflow agent"][0]
    assert run.attributes is not None and run.attributes["outlast.replayed_calls"] == 3
    (link,) = run.links  # to the run's anchor; no second anchor
    assert link.context.span_id == anchor.context.span_id
    assert link.context.trace_id == anchor.context.trace_id
    assert run.context.trace_id != anchor.context.trace_id  # a new execution, linked
    app.close()


def test_retries_give_one_span_per_attempt_and_failure_sets_error_type(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    app = outlast.App(sqlite_url)
    calls = {"n": 0}

    @app.step(retry=outlast.Retry(attempts=3, initial=0.001))
    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("down")
        return calls["n"]

    @app.step
    def broken() -> None:
        raise KeyError("missing")

    @app.workflow
    def wf(ctx: outlast.Context) -> None:
        flaky()
        broken()

    with pytest.raises(KeyError):
        app.run(wf, run_id="retries")
    got = by_name(spans)
    attempts = got["step flaky"]
    assert [s.attributes["outlast.step.attempt"] for s in attempts if s.attributes] == [1, 2, 3]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert [(s.attributes or {}).get("error.type") for s in attempts] == [
        "ConnectionError",
        "ConnectionError",
        None,
    ]
    (failed,) = got["step broken"]
    assert failed.attributes is not None and failed.attributes["error.type"] == "KeyError"
    run = got["invoke_workflow wf"][0]
    assert run.status.status_code == StatusCode.ERROR
    assert run.attributes is not None
    assert run.attributes["error.type"] == "KeyError"
    assert run.attributes["outlast.run.outcome"] == "failed"
    app.close()


def test_tracing_off_emits_nothing(sqlite_url: str, spans: InMemorySpanExporter) -> None:
    app = outlast.App(sqlite_url, tracing=False)

    @app.step
    def one() -> int:
        assert outlast.telemetry.current() is outlast.telemetry.NOOP
        return 1

    @app.workflow
    def wf(ctx: outlast.Context) -> int:
        return one()

    assert app.run(wf, run_id="quiet") == 1
    assert spans.get_finished_spans() == ()
    stored = app.store.get_run("quiet")
    assert stored is not None and stored.trace_context is None
    app.close()


def test_waits_children_and_intents_are_events_on_the_run_span(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    app = outlast.App(sqlite_url, hibernate_after=0.0)

    @app.step(at_most_once=True)
    def send() -> str:
        return "sent"

    @app.workflow
    def child(ctx: outlast.Context) -> int:
        return 2

    @app.workflow
    def parent(ctx: outlast.Context) -> int:
        send()
        ctx.sleep(0.05)
        return int(ctx.start_child(child, run_id="kid").result())

    assert app.run(parent, run_id="events") == 2
    runs = by_name(spans)["invoke_workflow parent"]
    (anchor,) = by_name(spans)["start_workflow parent"]
    events = [e.name for s in runs for e in s.events]
    assert "outlast.intent" in events
    assert "outlast.hibernate" in events  # the sleep hibernated the run (hibernate_after=0)
    assert "outlast.timer" in events and "outlast.child_result" in events
    assert "outlast.child" in events
    assert len(runs) >= 2  # woken: a new execution each time, linked to the first
    assert parent_of(runs[0]) == anchor.context.span_id
    assert all(s.links[0].context.span_id == anchor.context.span_id for s in runs[1:])
    app.close()


def test_metrics_count_runs_steps_and_tokens(sqlite_url: str, reader: InMemoryMetricReader) -> None:
    with FakeLLMServer(script()) as server:
        app, agent, client = agent_app(sqlite_url, server, {})
        with client:
            app.run(agent, "trip", run_id="m1")
        app.enqueue(agent, "later", run_id="m2")  # live runs are observed by queue and status
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = list(metric.data.data_points)
    assert points["outlast.runs.started"][0].value == 1
    assert points["outlast.runs.completed"][0].value == 1
    steps = {p.attributes["outlast.step.name"]: p.count for p in points["outlast.step.duration"]}
    assert steps == {"plan": 1, "tool:weather": 1}
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": 130, "output": 11}
    assert points["outlast.run.queue_time"][0].count == 1
    current = {
        (p.attributes["outlast.run.status"]): p.value for p in points["outlast.runs.current"]
    }
    assert (current["pending"], current["running"]) == (1, 0)
    app.close()


def test_log_records_inside_a_run_carry_run_step_and_trace(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(outlast.telemetry.RunContextFilter())
    log = logging.getLogger("test_otel.logs")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    app = outlast.App(sqlite_url)

    @app.step
    def work() -> None:
        log.info("in the step")

    @app.workflow
    def wf(ctx: outlast.Context) -> None:
        log.info("in the workflow")
        work()

    try:
        app.run(wf, run_id="logged")
        log.info("outside")
    finally:
        log.removeHandler(handler)
    inside_wf, inside_step, outside = records
    step_span = by_name(spans)["step work"][0]
    assert (inside_step.run_id, inside_step.workflow, inside_step.step) == ("logged", "wf", "work")  # type: ignore[attr-defined]
    assert inside_step.span_id == f"{step_span.context.span_id:016x}"  # type: ignore[attr-defined]
    assert inside_step.trace_id == f"{step_span.context.trace_id:032x}"  # type: ignore[attr-defined]
    assert (inside_wf.run_id, inside_wf.step) == ("logged", "")  # type: ignore[attr-defined]
    assert (outside.run_id, outside.trace_id) == ("", "")  # type: ignore[attr-defined]
    app.close()


def test_async_workflow_gathered_steps_are_children_of_the_run_span(
    sqlite_url: str, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    app = outlast.App(sqlite_url)

    @app.step
    async def fetch(i: int) -> int:
        await asyncio.sleep(0.01)
        return i

    @app.step
    def square(i: int) -> int:
        return i * i

    @app.workflow
    async def wf(ctx: outlast.Context) -> int:
        got = await asyncio.gather(fetch(1), fetch(2))
        return sum(got) + await square(3)

    assert asyncio.run(app.run_async(wf, run_id="async")) == 12
    got = by_name(spans)
    root = got["invoke_workflow wf"][0].context.span_id
    assert len(got["step fetch"]) == 2
    assert all(parent_of(s) == root for s in got["step fetch"] + got["step square"])
    # no "Failed to detach context" from OpenTelemetry: every attach was undone where made
    assert not [r for r in caplog.records if "detach" in r.getMessage()]
    app.close()


def test_async_step_in_a_sync_workflow_is_a_child_of_the_run_span(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    app = outlast.App(sqlite_url)

    @app.step
    async def fetch(i: int) -> int:
        return i

    @app.workflow
    def wf(ctx: outlast.Context) -> int:
        return int(fetch(5))

    assert app.run(wf, run_id="mixed") == 5
    got = by_name(spans)
    root = got["invoke_workflow wf"][0].context
    (step,) = got["step fetch"]
    assert parent_of(step) == root.span_id and step.context.trace_id == root.trace_id
    app.close()
