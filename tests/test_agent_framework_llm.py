"""Durable model calls inside Agent Framework agents: the framework's OpenAI chat client takes
an ``outlast.llm.wrap``-ped ``AsyncOpenAI`` as it is (no adapter), so an agent run inside an
outlast workflow has its model calls journaled, and a second execution after a crash replays
them instead of calling the model again; and a workflow of two AgentExecutors checkpointed in
outlast's store resumes after the first agent. Against the local model server: no network, no
key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("agent_framework_openai")

import openai  # noqa: E402
from agent_framework import Agent  # noqa: E402
from agent_framework.openai import OpenAIChatCompletionClient  # noqa: E402

import outlast  # noqa: E402
import outlast.llm  # noqa: E402
from outlast.testing import FakeLLMServer  # noqa: E402


class Crash(BaseException):
    """Stands for the process dying after the agent's model calls were recorded."""


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        yield running


def test_agent_model_calls_replay_after_a_crash(store_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(store_url)
    flag = {"crash": True}

    @app.workflow
    async def research(ctx: outlast.Context, topic: str) -> list[str]:
        # One client per execution: its connections belong to this execution's event loop.
        async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test",
                                      max_retries=0) as client:
            chat = OpenAIChatCompletionClient(async_client=outlast.llm.wrap(client), model="gpt-4o")
            agent = Agent(client=chat, name="researcher", instructions="Be brief.")
            outline = await agent.run(f"Outline {topic}")
            draft = await agent.run(f"Expand: {outline.text}")
        if flag["crash"]:
            raise Crash
        return [outline.text, draft.text]

    try:
        with pytest.raises(Crash):
            app.run(research, "tides", run_id="r1")
        assert server.count() == 2
        flag["crash"] = False
        outline, draft = app.run(research, "tides", run_id="r1")
        assert server.count() == 2  # both calls came back from the journal
        assert outline.startswith("Reply to: Outline tides")
        assert draft.startswith(f"Reply to: Expand: {outline}")
        calls = [e for e in app.store.load_journal("r1") if e.name.startswith("openai.")]
        assert len(calls) == 2
    finally:
        app.close()


def test_agent_executor_state_round_trips_and_resumes(store_url: str, server: FakeLLMServer) -> None:
    """The framework's agent types in a checkpoint (AgentExecutor's conversation, session,
    AgentExecutorResponse messages in flight) are stored without pickle and read back: a
    workflow built anew resumes after the writer and ends as the first run did."""
    from agent_framework import AgentExecutor, WorkflowBuilder

    from outlast.integrations.agent_framework import OutlastCheckpointStorage

    async def scenario() -> tuple[list[str], list[str], int]:
        async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test",
                                      max_retries=0) as client:
            chat = OpenAIChatCompletionClient(async_client=client, model="gpt-4o")

            def build(storage: OutlastCheckpointStorage) -> Any:
                writer = AgentExecutor(Agent(client=chat, name="writer"), id="writer")
                reviewer = AgentExecutor(Agent(client=chat, name="reviewer"), id="reviewer")
                return WorkflowBuilder(name="agents", start_executor=writer,
                                       checkpoint_storage=storage).add_edge(writer, reviewer).build()

            with OutlastCheckpointStorage(store_url) as storage:
                first = await build(storage).run("write about tides")
                ids = await storage.list_checkpoint_ids(workflow_name="agents")
                after_writer = await storage.load(ids[1])
                state = after_writer.state["_executor_state"]["writer"]
                assert [m.role for m in state["full_conversation"]] == ["user", "assistant"]
                calls = server.count()
                resumed = await build(storage).run(checkpoint_id=ids[1])
            return ([r.text for r in first.get_outputs()], [r.text for r in resumed.get_outputs()],
                    server.count() - calls)

    first, resumed, calls = asyncio.run(scenario())
    assert resumed == first[-1:]  # the reviewer's answer, again
    assert calls == 1  # only the reviewer ran: the writer's work came from the checkpoint
