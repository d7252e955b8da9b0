"""Graph nodes under OpenTelemetry: a ``step {node}`` span per executed node, none for a node
rebuilt from the journal; an interrupt ends the node's span without an error."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tests.otelkit import by_name, parent_of, spans

import outlast

# Spans are per execution: the replay-each-step pass would multiply them.
pytestmark = pytest.mark.counts_executions
__all__ = ["spans"]


class Crash(BaseException):
    """Stands for the process dying inside a node."""


def test_each_executed_node_has_a_span_and_rebuilt_nodes_have_none(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    app = outlast.App(sqlite_url)
    graph = app.graph("research", reducers={"trail": outlast.append})
    flag = {"crash": True}

    @app.step
    def lookup(topic: str) -> str:
        return f"facts about {topic}"

    @graph.node
    def plan(state: dict) -> dict:
        return {"trail": lookup(state["topic"])}

    @graph.node
    def draft(state: dict) -> dict:
        if flag["crash"]:
            raise Crash
        return {"trail": "draft"}

    @graph.node
    def polish(state: dict) -> dict:
        return {"trail": "polished"}

    graph.edge(outlast.START, "plan")
    graph.edge("plan", "draft")
    graph.edge("draft", "polish")
    graph.edge("polish", outlast.END)

    with pytest.raises(Crash):
        app.run(graph, {"topic": "acme"}, run_id="g-otel")
    first = by_name(spans)
    run = first["invoke_workflow research"][0]
    (node,) = first["step plan"]
    assert node.attributes is not None
    assert node.attributes["outlast.step.kind"] == "node"
    assert node.attributes["outlast.step.key"] == "@1"
    assert parent_of(node) == run.context.span_id
    (inner,) = first["step lookup"]  # a step inside the node is the node span's child
    assert parent_of(inner) == node.context.span_id
    (crashed,) = first["step draft"]  # control flow, not a failure of the node
    assert crashed.status.status_code == StatusCode.UNSET
    assert "error.type" not in (crashed.attributes or {})

    spans.clear()
    flag["crash"] = False
    final = app.run(graph, {"topic": "acme"}, run_id="g-otel")
    assert final["trail"] == ["facts about acme", "draft", "polished"]
    got = by_name(spans)
    # plan was rebuilt from its checkpoint: no span for it, nor for its step
    assert sorted(got) == ["invoke_workflow research", "step draft", "step polish"]
    assert [
        s.attributes["outlast.step.key"]
        for s in got["step draft"] + got["step polish"]
        if s.attributes
    ] == ["@2", "@3"]
    app.close()


def test_a_failing_node_sets_error_type_and_an_interrupt_does_not(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    app = outlast.App(sqlite_url)
    graph = app.graph("approval")

    @graph.node
    def ask(state: dict) -> dict:
        return {"answer": outlast.interrupt("ok?")}

    @graph.node
    def check(state: dict) -> dict:
        if state["answer"] != "yes":
            raise ValueError("refused")
        return {}

    graph.edge(outlast.START, "ask")
    graph.edge("ask", "check")
    graph.edge("check", outlast.END)
    handle = app.start(graph, {}, run_id="g-ask")
    app.send("g-ask", "resume", "no")
    with pytest.raises(ValueError, match="refused"):
        handle.result(timeout=30)
    got = by_name(spans)
    asks = got["step ask"]
    assert all(s.status.status_code == StatusCode.UNSET for s in asks)
    (checked,) = got["step check"]
    assert checked.attributes is not None and checked.attributes["error.type"] == "ValueError"
    assert checked.status.status_code == StatusCode.ERROR
    app.close()
