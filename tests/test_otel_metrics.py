"""Every metric the issue lists, read with the SDK's in-memory reader: runs started,
completed and failed by workflow, step duration by step, tokens and cost by model, time
from enqueue to start, suspended runs, recovered runs and the calls a recovery saved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from tests.otelkit import points, reader

import outlast
import outlast.llm
from outlast.testing import FakeLLMServer, Reply, ToolCall

# Metrics count executions: the replay-each-step pass would multiply them.
pytestmark = pytest.mark.counts_executions
__all__ = ["reader"]

ROOT = Path(__file__).resolve().parent.parent


def by(metric: list[Any], *keys: str) -> dict[Any, Any]:
    """``{attribute values: value or sum}`` of a metric's data points."""
    out: dict[Any, Any] = {}
    for p in metric:
        key = tuple(p.attributes.get(k) for k in keys)
        out[key if len(keys) > 1 else key[0]] = p.sum if hasattr(p, "count") else p.value
    return out


def test_runs_completed_and_failed_by_workflow_with_error_type(
    sqlite_url: str, reader: InMemoryMetricReader
) -> None:
    app = outlast.App(sqlite_url)

    @app.workflow
    def fine(ctx: outlast.Context) -> int:
        return 1

    @app.workflow
    def broken(ctx: outlast.Context) -> int:
        raise LookupError("no such order")

    app.run(fine, run_id="ok-1")
    app.run(fine, run_id="ok-2")
    with pytest.raises(LookupError):
        app.run(broken, run_id="bad-1")
    got = points(reader)
    assert by(got["outlast.runs.started"], "gen_ai.workflow.name") == {"fine": 2, "broken": 1}
    assert by(got["outlast.runs.completed"], "gen_ai.workflow.name") == {"fine": 2}
    assert by(got["outlast.runs.failed"], "gen_ai.workflow.name", "error.type") == {
        ("broken", "LookupError"): 1
    }
    queued = {p.attributes["gen_ai.workflow.name"]: p.count for p in got["outlast.run.queue_time"]}
    assert queued == {"fine": 2, "broken": 1}
    app.close()


def test_a_recovery_counts_the_run_and_the_calls_it_saved(
    sqlite_url: str, reader: InMemoryMetricReader
) -> None:
    from tests.apps import traced

    script = [
        Reply(tool_calls=[ToolCall("search", {"query": "acme"}, id="call_9")]),
        Reply(text="Acme is fine."),
    ]
    with FakeLLMServer(script) as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACED_HANG": "2"}
        env.pop("TRACED_SPANS", None)
        cmd = [sys.executable, "-m", "tests.apps.traced", sqlite_url, server.openai_base_url]
        first = subprocess.Popen(
            [*cmd, "rec", "3"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "hanging 2"
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stdout.close()
        traced.app.use(sqlite_url)
        traced.MODEL_URL, traced._client = server.openai_base_url, None
        try:
            assert traced.app.run(traced.research, 3, run_id="rec") == "Acme is fine."
        finally:
            traced.app.close()
    got = points(reader)
    assert by(got["outlast.runs.recovered"], "gen_ai.workflow.name") == {"research": 1}
    # answered from the journal: the first model call, the tool, read 1
    assert by(got["outlast.recovery.saved_steps"], "gen_ai.workflow.name") == {"research": 3}
    assert "outlast.runs.started" not in got  # it started in the killed process
    assert by(got["outlast.runs.completed"], "gen_ai.workflow.name") == {"research": 1}
    steps = {p.attributes["outlast.step.name"]: p.count for p in got["outlast.step.duration"]}
    assert steps == {"read": 2}  # read 2 (interrupted) and read 3: nothing replayed


def test_tokens_and_cost_by_model(sqlite_url: str, reader: InMemoryMetricReader) -> None:
    app = outlast.App(sqlite_url)
    replies = [Reply(text="a", prompt_tokens=1000, completion_tokens=500)] * 2
    with FakeLLMServer(replies) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
        llm = outlast.llm.wrap(client)

        @app.workflow
        def ask(ctx: outlast.Context) -> str:
            for model in ("gpt-4o-mini", "gpt-4o"):
                llm.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "q"}]
                )
            return "done"

        with client:
            app.run(ask, run_id="priced")
    got = points(reader)
    tokens = by(got["gen_ai.client.token.usage"], "gen_ai.request.model", "gen_ai.token.type")
    assert tokens == {
        ("gpt-4o-mini", "input"): 1000,
        ("gpt-4o-mini", "output"): 500,
        ("gpt-4o", "input"): 1000,
        ("gpt-4o", "output"): 500,
    }
    cost = by(got["outlast.llm.cost"], "gen_ai.request.model")
    priced = outlast.llm.pricing.cost_of  # outlast's own price table
    assert cost == {
        "gpt-4o-mini": pytest.approx(priced("gpt-4o-mini", 1000, 500, None)),
        "gpt-4o": pytest.approx(priced("gpt-4o", 1000, 500, None)),
    }
    assert cost["gpt-4o"] > cost["gpt-4o-mini"] > 0
    durations = {
        p.attributes["gen_ai.request.model"]: p.count
        for p in got["gen_ai.client.operation.duration"]
    }
    assert durations == {"gpt-4o-mini": 1, "gpt-4o": 1}
    app.close()


def test_suspended_runs_are_observed_by_status(
    sqlite_url: str, reader: InMemoryMetricReader
) -> None:
    app = outlast.App(sqlite_url, hibernate_after=0.0)

    @app.workflow
    def approval(ctx: outlast.Context) -> str:
        return str(ctx.wait_for("approved"))

    handles = [app.start(approval, run_id=f"wait-{i}") for i in range(2)]
    deadline = time.monotonic() + 30
    while any(app.get_run(h.run_id).status != "suspended" for h in handles):
        assert time.monotonic() < deadline, "the runs did not hibernate"
        time.sleep(0.02)
    current = by(points(reader)["outlast.runs.current"], "outlast.queue", "outlast.run.status")
    assert current[("default", "suspended")] == 2
    assert current[("default", "running")] == 0
    for h in handles:
        app.send(h.run_id, "approved", "yes")
    assert [h.result(timeout=30) for h in handles] == ["yes", "yes"]
    current = by(points(reader)["outlast.runs.current"], "outlast.queue", "outlast.run.status")
    assert current[("default", "suspended")] == 0
    app.close()
