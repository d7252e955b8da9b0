"""A Microsoft Agent Framework workflow checkpointed in outlast's store, resumable after a crash.

    pip install 'outlast[agent-framework]' agent-framework-openai
    python examples/agent_framework_workflow.py          # offline: a local fake model server

Three executors (plan -> research -> write) pass a growing conversation along; the framework
checkpoints after every superstep into ``OutlastCheckpointStorage`` (a SQLite file here; a
``postgresql://`` URL serves a fleet). Each executor asks an agent, whose OpenAI client is
wrapped with ``outlast.llm.wrap``; the whole workflow runs inside an outlast workflow, so the
model calls are journaled too.

Kill the script while it runs (``CRASH_IN=research`` makes it die inside the second executor)
and start it again: outlast runs the workflow again, and every model call made before the
crash comes back from the journal instead of being paid for twice (the model server counts
the calls each process made). The checkpoints are there too, for ``request_info`` and for
resuming without outlast (``workflow.run(checkpoint_id=...)``), but not both at once: see
docs/agent-framework.md, "Checkpoints or journal".
"""

from __future__ import annotations

import os
import sys

import openai
from agent_framework import Agent, Executor, Message, WorkflowBuilder, WorkflowContext, handler
from agent_framework.openai import OpenAIChatCompletionClient

import outlast
import outlast.llm
from outlast.integrations.agent_framework import OutlastCheckpointStorage
from outlast.testing import FakeLLMServer

DB = os.environ.get("OUTLAST_DATABASE_URL", "sqlite:///agent_framework_workflow.db")
app = outlast.App(DB)
MODEL_URL = {"base_url": ""}  # set by main(): the fake server's port changes at every start


class AgentStep(Executor):
    """Asks the agent about the conversation so far, appends its answer, passes it on."""

    def __init__(self, id: str, agent: Agent, last: bool = False) -> None:
        super().__init__(id=id)
        self.agent, self.last = agent, last

    @handler
    async def work(self, conversation: list[Message],
                   ctx: WorkflowContext[list[Message], list[Message]]) -> None:
        if os.environ.get("CRASH_IN") == self.id:
            print(f"dying inside {self.id}", flush=True)
            os._exit(1)  # as a SIGKILL would: no cleanup, the checkpoints stay
        reply = await self.agent.run(f"{self.id}: {conversation[-1].text}")
        print(f"{self.id}: {reply.text}")
        out = [*conversation, Message(role="assistant", contents=[reply.text])]
        await (ctx.yield_output(out) if self.last else ctx.send_message(out))


@app.workflow
async def report(ctx: outlast.Context, topic: str) -> list[str]:
    """Runs the Agent Framework workflow, its model calls journaled."""
    storage = OutlastCheckpointStorage(app)
    async with openai.AsyncOpenAI(base_url=MODEL_URL["base_url"], api_key="offline", max_retries=0) as client:
        chat = OpenAIChatCompletionClient(async_client=outlast.llm.wrap(client), model="gpt-4o")
        agent = Agent(client=chat, name="writer", instructions="Be brief.")
        steps = [AgentStep("plan", agent), AgentStep("research", agent),
                 AgentStep("write", agent, last=True)]
        workflow = WorkflowBuilder(name=f"report-{ctx.run_id}", start_executor=steps[0],
                                   checkpoint_storage=storage).add_chain(steps).build()
        # From the start at every execution: the journal replays the calls already made.
        result = await workflow.run([Message(role="user", contents=[topic])])
    return [m.text for m in result.get_outputs()[0]]


def main() -> None:
    topic = sys.argv[1] if len(sys.argv) > 1 else "tides"
    with FakeLLMServer() as server:  # replace with your model's base URL
        MODEL_URL["base_url"] = server.openai_base_url
        lines = app.run(report, topic, run_id=f"report-{topic}")
        print("\n".join(lines))
        print(f"(model server answered {server.count()} call(s) in this process)")


if __name__ == "__main__":
    main()
