"""Agents for the model-call crash tests, run in a child process and SIGKILLed by the test.

``python -m tests.apps.llm_agent DB_URL BASE_URL RUN_ID MODE``: MODE ``chat`` holds a
six-turn conversation (the history is resent at every call); MODE ``budget`` asks short
questions until its token budget stops it; MODE ``retry_stream`` reads a stream that the
server breaks, retries without streaming as an agent would, then asks once more. The result
is printed as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import openai

import outlast
import outlast.llm

app = outlast.App()
BUDGET_TOKENS = 300


def _client(base_url: str) -> Any:
    return outlast.llm.wrap(openai.OpenAI(base_url=base_url, api_key="test", max_retries=0))


@app.workflow
def chat(ctx: outlast.Context, base_url: str, turns: int) -> list[str]:
    llm = _client(base_url)
    messages: list[Any] = [{"role": "system", "content": "You are terse."}]
    answers = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"question {turn}"})
        reply = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
        messages.append(reply.choices[0].message)
        answers.append(reply.choices[0].message.content or "")
    return answers


@app.workflow(budget=outlast.Budget(tokens=BUDGET_TOKENS))
def frugal(ctx: outlast.Context, base_url: str) -> dict[str, Any]:
    llm = _client(base_url)
    calls = 0
    try:
        for turn in range(10):
            llm.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {turn}"}]
            )
            calls += 1
    except outlast.BudgetExceeded as exc:
        return {"calls": calls, "stopped": True, "spent": exc.spent}
    return {"calls": calls, "stopped": False}


@app.workflow
def retry_stream(ctx: outlast.Context, base_url: str) -> dict[str, Any]:
    llm = _client(base_url)
    messages: list[Any] = [{"role": "user", "content": "tell me a story"}]
    seen, errors, text = 0, [], ""
    for attempt in range(3):
        try:
            if attempt == 0:
                for chunk in llm.chat.completions.create(
                    model="gpt-4o-mini", messages=messages, stream=True
                ):
                    seen += 1
                    text += "".join(c.delta.content or "" for c in chunk.choices)
            else:  # the retry falls back to a plain call
                reply = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
                text = reply.choices[0].message.content or ""
            break
        except Exception as exc:  # noqa: BLE001 - an agent's retry loop
            errors.append(type(exc).__name__)
    messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "more"}]
    after = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
    return {"seen": seen, "errors": errors, "text": text,
            "after": after.choices[0].message.content}


if __name__ == "__main__":
    db, base_url, run_id, mode = sys.argv[1:5]
    app.use(db)
    if mode == "chat":
        result: Any = app.run(chat, base_url, 6, run_id=run_id)
    elif mode == "retry_stream":
        result = app.run(retry_stream, base_url, run_id=run_id)
    else:
        result = app.run(frugal, base_url, run_id=run_id)
    print(json.dumps(result), flush=True)
