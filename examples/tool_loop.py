"""A long tool-using loop: the model calls tools for 30 rounds, each call a journaled step.

    python examples/tool_loop.py            # local fake model server scripted to use tools

Every tool call is a step keyed by the model's tool-call id; the conversation (resent at
every call) is stored once thanks to content-addressed blobs. Kill it and run it again: it
resumes at the round it had reached.
"""

from __future__ import annotations

import sys
from typing import Any

import openai

import outlast
import outlast.llm
from outlast.testing import FakeLLMServer, LLMRequest, Reply, ToolCall

app = outlast.App("sqlite:///tool_loop.db")
tools = outlast.llm.Tools(app)
ROUNDS = 30
STORE: dict[str, int] = {}
_base_url = ["http://127.0.0.1:8000/v1"]


@tools.tool(effect="read_only")
def lookup(key: str) -> int:
    """Read a counter."""
    return STORE.get(key, 0)


@tools.tool(effect="idempotent")
def put(key: str, value: int) -> str:
    """Set a counter (setting it twice to the same value is harmless)."""
    STORE[key] = value
    return "ok"


def scripted_model(request: LLMRequest) -> Reply:
    """The fake model: look a counter up, then set it one higher, ROUNDS times; then stop."""
    done = sum(1 for m in request.messages if m.role == "tool")
    if done >= 2 * ROUNDS:
        return Reply(text=f"Done after {done} tool calls.")
    if done % 2 == 0:
        return Reply(tool_calls=[ToolCall("lookup", {"key": "n"})])
    last = int(request.messages[-1].text or 0)
    return Reply(tool_calls=[ToolCall("put", {"key": "n", "value": last + 1})])


@app.workflow(budget=outlast.Budget(tokens=2_000_000))
def loop(ctx: outlast.Context) -> str:
    # The URL is not an argument: the local server's port changes between runs.
    client = openai.OpenAI(base_url=_base_url[0], api_key="local", max_retries=0)
    llm = outlast.llm.wrap(client)
    messages: list[Any] = [{"role": "user", "content": "Count to thirty with the tools."}]
    while True:
        reply = llm.chat.completions.create(
            model="gpt-4o-mini", messages=messages, tools=tools.schemas("chat.completions")
        )
        message = reply.choices[0].message
        messages.append(message)
        if not message.tool_calls:
            return message.content or ""
        messages += tools.run(reply)


def main() -> int:
    run_id = sys.argv[1] if len(sys.argv) > 1 else "tool-loop-1"
    with FakeLLMServer(scripted_model) as server:
        _base_url[0] = server.openai_base_url
        print(app.run(loop, run_id=run_id))
    info = app.get_run(run_id)
    print(f"{len(info.steps)} journal entries, {int(info.stats.get('tokens', 0))} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
