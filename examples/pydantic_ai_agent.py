"""A durable Pydantic AI agent: model requests and tool calls journaled, a refund approved by a human.

    pip install 'outlast[pydantic-ai]'
    python examples/pydantic_ai_agent.py        # local fake model server, no key needed

The agent looks an order up, then asks to refund it. ``refund`` needs approval, so the run
hibernates (``RequestInput`` -> ``ctx.wait_for``) until someone answers; this script answers
itself from another thread after a moment, as your approval endpoint would, with
``outlast.integrations.pydantic_ai.answer(app, token, ...)`` (or ``outlast send RUN EVENT
PAYLOAD``). Kill it at any point and run it again: finished model requests and tool calls
are replayed from the journal, the order is not looked up twice, and ``outlast show
refund-1 --db sqlite:///pydantic_ai_agent.db`` lists every unit with its tokens and cost.
"""

from __future__ import annotations

import threading
import time

from openai import AsyncOpenAI
from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults, RunContext
from pydantic_ai.capabilities import RequestInput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import outlast
from outlast.integrations.pydantic_ai import OutlastDurability, answer
from outlast.testing import FakeLLMServer, LLMRequest, Reply, ToolCall

app = outlast.App("sqlite:///pydantic_ai_agent.db", hibernate_after=1.0)
_base_url = ["http://127.0.0.1:8000/v1"]


def scripted_model(request: LLMRequest) -> Reply:
    """The fake model: look the order up, refund it, then report."""
    results = [m.text for m in request.messages if m.role == "tool"]
    if not results:
        return Reply(tool_calls=[ToolCall("lookup_order", {"order": "A7"}, id="call_lookup")])
    if len(results) == 1:
        return Reply(tool_calls=[ToolCall("refund", {"order": "A7"}, id="call_refund")])
    return Reply(text=f"Order A7: {results[0]}; {results[1]}.")


def approve_later(token: str) -> None:
    """Your approval UI: here, a thread that approves after half a second."""

    def later() -> None:
        time.sleep(0.5)
        answer(app, token, DeferredToolResults(approvals={"call_refund": True}))

    threading.Thread(target=later, daemon=True).start()


def ask(ctx: RunContext[None], requests: DeferredToolRequests, token: str) -> None:
    print(f"waiting for approval of {[c.tool_name for c in requests.approvals]} ({token!r})")
    approve_later(token)  # e.g. post to Slack with the token; the run hibernates meanwhile


@app.workflow
async def support(ctx: outlast.Context, question: str) -> str:
    # The URL is not an argument: the local server's port changes between runs.
    async with AsyncOpenAI(base_url=_base_url[0], api_key="local", max_retries=0) as client:
        model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
        agent = Agent(
            model, name="support", capabilities=[OutlastDurability(), RequestInput(ask=ask)]
        )

        @agent.tool_plain
        def lookup_order(order: str) -> str:
            print(f"looking up {order}")
            return "shipped, 42 EUR"

        @agent.tool_plain(requires_approval=True)
        def refund(order: str) -> str:
            print(f"refunding {order}")
            return "refunded 42 EUR"

        return (await agent.run(question)).output


def main() -> None:
    with FakeLLMServer(scripted_model) as server:
        _base_url[0] = server.openai_base_url
        print(app.run(support, "Please refund order A7.", run_id="refund-1"))
        info = app.get_run("refund-1")
        print(f"{info.stats.get('llm_calls')} model requests, {info.stats.get('tokens')} tokens")
        for step in info.steps:
            print(f"  {step.kind:5} {step.key}")


if __name__ == "__main__":
    main()
