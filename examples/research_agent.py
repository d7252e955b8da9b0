"""A research agent whose model calls are journaled: kill it at any moment, run it again.

    python examples/research_agent.py             # against a local fake model server
    OPENAI_API_KEY=... python examples/research_agent.py --real

Run it, press Ctrl-C (or kill -9 it) half-way, and run it again with the same run id: the
calls already made come back from the journal; `outlast show research-1` lists them with
their tokens and cost.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import openai

import outlast
import outlast.llm

app = outlast.App("sqlite:///research.db")
TOPICS = ["durable execution", "agent memory", "tool use", "evaluation"]


@app.step
def search(topic: str) -> list[str]:
    """A stand-in for a web search (a step: its result is journaled)."""
    return [f"{topic}: finding {i}" for i in range(3)]


@app.workflow(budget=outlast.Budget(tokens=50_000))
def research(ctx: outlast.Context, question: str, model: str) -> str:
    llm = _client()
    notes = []
    for topic in TOPICS:
        found = search(topic)
        reply = llm.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"{question}\nSummarize: {found}"}],
        )
        notes.append(reply.choices[0].message.content or "")
    final = llm.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Synthesize:\n" + "\n".join(notes)}]
    )
    return final.choices[0].message.content or ""


_base_url: list[str | None] = [None]


def _client() -> Any:
    client = openai.OpenAI(base_url=_base_url[0], api_key="local" if _base_url[0] else None,
                           max_retries=0)
    return outlast.llm.wrap(client, retry=outlast.Retry(attempts=4))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", action="store_true", help="use api.openai.com")
    parser.add_argument("--run-id", default="research-1")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        model = "gpt-4o-mini"
        if not args.real:
            from outlast.testing import FakeLLMServer

            server = stack.enter_context(FakeLLMServer(latency=0.5, reply_tokens=150))
            _base_url[0] = server.openai_base_url
        print(app.run(research, "What makes agents reliable?", model, run_id=args.run_id)[:200])
    info = app.get_run(args.run_id)
    print(f"spent {int(info.stats.get('tokens', 0))} tokens, ${info.stats.get('cost', 0):.4f}")


if __name__ == "__main__":
    main()
