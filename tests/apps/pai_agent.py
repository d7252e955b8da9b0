"""A Pydantic AI agent made durable by OutlastDurability, run in child processes and SIGKILLed
by tests/test_pydantic_ai_crash.py. The model is the test's local server (``scripted``).

``python -m tests.apps.pai_agent DB_URL BASE_URL RUN_ID MODE``: MODE ``seq`` (the model
calls ``add``, then ``mul``, then answers), ``stream`` (the same through ``run_stream``),
``parallel`` (``add`` and ``mul`` in one response) or ``approve`` (``refund`` needs a human
approval; enqueued, for a worker). Each tool appends ``start <tool>`` and ``done <tool>`` to
$PAI_LOG; the tool named in $PAI_HANG announces ``hang <tool>`` and hangs, to be killed.
The output is printed as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from openai import AsyncOpenAI
from pydantic_ai import Agent, DeferredToolRequests, RunContext
from pydantic_ai.capabilities import RequestInput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import outlast
from outlast.integrations.pydantic_ai import OutlastDurability
from outlast.testing.llm_server import LLMRequest, Reply, ToolCall

app = outlast.App()
LOG = os.environ.get("PAI_LOG")


def scripted(request: LLMRequest) -> Reply:
    """The model's side of every mode, from what the conversation holds so far."""
    results = [m.text for m in request.messages if m.role == "tool"]
    asked = request.last_user_text
    if "refund" in asked:
        if not results:
            return Reply(tool_calls=[ToolCall("refund", {"order": "A7"}, id="call_refund")])
        return Reply(text=f"refund: {results[0]}")
    if "parallel" in asked and not results:
        return Reply(
            tool_calls=[
                ToolCall("add", {"a": 1, "b": 2}, id="call_add"),
                ToolCall("mul", {"a": 3, "b": 4}, id="call_mul"),
            ]
        )
    if not results:
        return Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2}, id="call_add")])
    if len(results) == 1:
        return Reply(tool_calls=[ToolCall("mul", {"a": 3, "b": 4}, id="call_mul")])
    return Reply(text="results: " + ", ".join(results))


def _log(line: str) -> None:
    if LOG is None:
        return
    with open(LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


async def _tool(name: str, value: int) -> int:
    _log(f"start {name}")
    if os.environ.get("PAI_HANG") == name:
        _log(f"hang {name}")
        await asyncio.sleep(60)  # the test kills us here
    _log(f"done {name}")
    return value


def make_agent(client: AsyncOpenAI) -> Agent[None, Any]:
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))

    def ask(ctx: RunContext[None], requests: DeferredToolRequests, token: str) -> None:
        _log(f"token {token}")  # hand the token to whoever answers; the run waits

    agent = Agent(
        model,
        name="shop",
        output_type=[str, DeferredToolRequests],
        capabilities=[OutlastDurability(), RequestInput(ask=ask)],
    )

    @agent.tool_plain
    async def add(a: int, b: int) -> int:
        return await _tool("add", a + b)

    @agent.tool_plain
    async def mul(a: int, b: int) -> int:
        return await _tool("mul", a * b)

    @agent.tool_plain(requires_approval=True)
    async def refund(order: str) -> str:
        return f"refunded {await _tool('refund', 1)} for {order}"

    return agent


@app.workflow
async def shop(ctx: outlast.Context, base_url: str, mode: str) -> str:
    async with AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
        agent = make_agent(client)
        prompt = {"parallel": "parallel please", "approve": "refund order A7"}.get(mode, "compute")
        if mode == "stream":
            async with agent.run_stream(prompt) as streamed:
                return str(await streamed.get_output())
        return str((await agent.run(prompt)).output)


if __name__ == "__main__":
    db, base_url, run_id, mode = sys.argv[1:5]
    app.use(db)
    print(json.dumps(app.run(shop, base_url, mode, run_id=run_id)), flush=True)
