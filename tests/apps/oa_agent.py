"""OpenAI Agents SDK agents run by outlast, in a child process SIGKILLed by
tests/test_openai_agents_crash.py.

``python -m tests.apps.oa_agent DB_URL BASE_URL RUN_ID MODE LOG [hang]``

MODE: ``seq`` (two tool calls in two model turns), ``stream`` (the same through
``Runner.run_streamed``), ``par`` (two tool calls in one turn, run in parallel), ``approval``
(the second tool waits for the event ``approval``), ``subagent`` (the agent calls a helper
agent used as a tool, ``Agent.as_tool``, which does ``seq``; both name their model, which
the run's provider resolves). With ``hang`` the tool ``second`` hangs (to be SIGKILLed) once
the call that asked for it is journaled. Every tool appends ``start NAME`` / ``done NAME`` to
LOG. The result is printed as JSON. :func:`responder` is the fake model the test serves; the
test also runs :func:`clerk` in its own process (:func:`use`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import agents
from agents import Agent, OpenAIProvider, OpenAIResponsesModel, RunConfig, function_tool
from openai import AsyncOpenAI

import outlast
from outlast.integrations.openai_agents import Runner, wait_for
from outlast.testing.llm_wire import LLMRequest, Reply, ToolCall

agents.set_tracing_disabled(True)
app = outlast.App(hibernate_after=0.1)
LOG = Path("oa.log")
HANG = False
RUN_ID = ""
MODE = ""


def log(line: str) -> None:
    with LOG.open("a") as f:
        f.write(line + "\n")


def responder(request: LLMRequest) -> Reply:
    """The fake model: tool calls by scenario (the user's text), then the tools' outputs."""
    results = [m.text for m in request.messages if m.role == "tool"]
    mode = request.last_user_text
    if mode == "subagent":  # the boss; the helper it calls is asked "seq"
        if not results:
            return Reply(tool_calls=[ToolCall("helper", {"input": "seq"}, id="h1")])
        return Reply(text=f"boss: {results[0]}")
    if mode == "par" and not results:
        return Reply(
            tool_calls=[ToolCall("first", {"x": 1}, id="c1"), ToolCall("second", {"x": 2}, id="c2")]
        )
    second = "refund" if mode == "approval" else "second"
    if not results:
        return Reply(tool_calls=[ToolCall("first", {"x": 1}, id="c1")])
    if len(results) == 1 and mode != "par":
        return Reply(tool_calls=[ToolCall(second, {"x": 2}, id="c2")])
    return Reply(text="done: " + " | ".join(results))


@function_tool
async def first(x: int) -> str:
    """The first tool."""
    log("start first")
    log("done first")
    return f"first {x}"


@function_tool
async def second(x: int) -> str:
    """The second tool: hangs in the killed process once the first tool's result is journaled."""
    log("start second")
    if HANG:
        # what asked for this call is journaled (par: the first tool may still be running)
        asked = "agents.model:h1.2" if MODE == "subagent" else "tool:first:c1"
        while asked not in {s.key for s in app.get_run(RUN_ID).steps}:
            time.sleep(0.01)
        log("hang second")
        await asyncio.sleep(600)
    log("done second")
    return f"second {x}"


@function_tool
async def refund(x: int) -> str:
    """Refunds after a human approves: the run hibernates until the event arrives."""
    log("start refund")
    answer = await wait_for("approval")
    log(f"done refund {answer}")
    return f"refund {x} {answer}"


def agent(client: AsyncOpenAI, mode: str) -> tuple[Agent[Any], RunConfig | None]:
    if mode == "subagent":
        helper = Agent(
            name="helper",
            instructions="Use the tools in order.",
            tools=[first, second],
            model="gpt-4o-mini",
        )
        boss = Agent(
            name="boss",
            instructions="Ask the helper.",
            tools=[helper.as_tool("helper", "Does the work.")],
            model="gpt-4o-mini",
        )
        provider = OpenAIProvider(openai_client=client, use_responses=True)
        return boss, RunConfig(model_provider=provider)
    model = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client)
    tools = [first, second, refund]
    return Agent(
        name="clerk", instructions="Use the tools in order.", tools=tools, model=model
    ), None


@app.workflow
async def clerk(ctx: outlast.Context, base_url: str, mode: str) -> dict[str, Any]:
    async with AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
        starting, config = agent(client, mode)
        if mode == "stream":
            streamed = Runner.run_streamed(starting, "seq", context=ctx)
            kinds = [e.type async for e in streamed.stream_events()]
            return {"output": streamed.final_output, "events": len(kinds)}
        result = await Runner.run(starting, mode, context=ctx, run_config=config)
        return {"output": result.final_output}


def use(log: Path, mode: str, run_id: str) -> None:
    """Set the tools' log, the mode and the run id (for a run in the caller's process)."""
    global LOG, MODE, RUN_ID
    LOG, MODE, RUN_ID = log, mode, run_id


if __name__ == "__main__":
    db, base_url, run_id, mode, log_path = sys.argv[1:6]
    use(Path(log_path), mode, run_id)
    HANG = sys.argv[6:] == ["hang"]
    app.use(db)
    print(json.dumps(app.run(clerk, base_url, mode, run_id=RUN_ID)), flush=True)
