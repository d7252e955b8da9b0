"""An OpenAI Agents SDK agent whose model calls and tool calls are durable.

    pip install 'outlast[openai-agents]'
    python examples/openai_agents_agent.py            # against a local fake model server

Run it, kill it with Ctrl-C while "charging" is printed, and run it again: the model
requests already answered are not sent again and `lookup` does not run again; the run
finishes from its journal. ``outlast show order-42 --db sqlite:///agents-example.db``
shows each model call (tokens, cost) and each tool call keyed by the model's call id.
"""

from __future__ import annotations

import time

import agents
from agents import Agent, OpenAIResponsesModel, function_tool
from openai import AsyncOpenAI

import outlast
from outlast.integrations.openai_agents import Runner
from outlast.testing.llm_server import FakeLLMServer
from outlast.testing.llm_wire import LLMRequest, Reply, ToolCall

agents.set_tracing_disabled(True)  # nothing leaves this machine
app = outlast.App("sqlite:///agents-example.db")
BASE_URL = ""  # the model server's; not a workflow argument, so a rerun may use another port


@function_tool
def lookup(order: str) -> str:
    """Look an order up."""
    print(f"looking up {order}")
    return f"{order}: 2 items, $30"


@function_tool
def charge(order: str, amount: int) -> str:
    """Charge the customer."""
    print(f"charging ${amount} for {order}")
    time.sleep(2)  # kill the process here to see the resume
    return f"charged ${amount}"


def fake_model(request: LLMRequest) -> Reply:
    """What the local server answers: a lookup, a charge, then a summary."""
    done = [m.text for m in request.messages if m.role == "tool"]
    if not done:
        return Reply(tool_calls=[ToolCall("lookup", {"order": "order-42"})])
    if len(done) == 1:
        return Reply(tool_calls=[ToolCall("charge", {"order": "order-42", "amount": 30})])
    return Reply(text=f"Done: {'; '.join(done)}")


@app.workflow
async def checkout(ctx: outlast.Context) -> str:
    client = AsyncOpenAI(base_url=BASE_URL, api_key="test", max_retries=0)
    model = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client)
    agent = Agent(name="clerk", instructions="Look up, then charge.", tools=[lookup, charge],
                  model=model)
    result = await Runner.run(agent, "check out order-42", context=ctx)
    return str(result.final_output)


if __name__ == "__main__":
    with FakeLLMServer(fake_model) as server:
        BASE_URL = server.openai_base_url
        print(app.run(checkout, run_id="order-42"))
        print(f"model requests sent by this process: {server.count()}")
