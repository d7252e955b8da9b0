"""The demo's research agent: five competitors researched, a synthesis drafted and revised,
a meeting scheduled and the team emailed. 16 journaled steps.

Run by ``outlast demo`` in a child process: ``python -m outlast.demo.agent DB LLM_URL
OUTBOX_URL RUN_ID``. Every line it prints is a JSON progress event for the parent.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any

import outlast

COMPETITORS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"]
MODEL = "gpt-demo-mini"

app = outlast.App()
_llm_url = ""
_outbox_url = ""


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _chat(prompt: str) -> dict[str, Any]:
    """One model call through the real openai SDK when installed, else plain HTTP."""
    try:
        import openai
    except ImportError:
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}]})
        req = urllib.request.Request(
            f"{_llm_url}/v1/chat/completions", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = json.load(resp)
        text, usage = data["choices"][0]["message"]["content"], data["usage"]
        return {"text": text, "tokens": usage["total_tokens"]}
    client = openai.OpenAI(base_url=f"{_llm_url}/v1", api_key="demo-key-not-used", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}])
    client.close()
    assert reply.usage is not None
    return {"text": reply.choices[0].message.content or "", "tokens": reply.usage.total_tokens}


def _post(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{_outbox_url}{path}",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json", "Idempotency-Key": outlast.idempotency_key()},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.load(resp))


def _executing(name: str) -> None:
    emit("exec", name=name, key=outlast.idempotency_key())


@app.step
def search(company: str) -> list[str]:
    _executing("search")
    time.sleep(0.15)  # a web search
    return [f"{company} raised prices", f"{company} launched an agent product"]


@app.step
def analyze(company: str, results: list[str]) -> dict[str, Any]:
    _executing("analyze")
    return _chat(f"Analyze {company}: " + "; ".join(results))


@app.step
def synthesize(task: str, material: list[str]) -> dict[str, Any]:
    _executing(task)
    return _chat(f"{task}: " + " | ".join(m[:80] for m in material))


@app.step
def schedule_meeting(topic: str) -> dict[str, Any]:
    _executing("schedule_meeting")
    return _post("/calendar", {"topic": topic, "attendees": ["team@example.com"]})


@app.step
def email_team(summary: str) -> dict[str, Any]:
    _executing("email_team")
    return _post("/email", {"to": "team@example.com", "body": summary[:200]})


@app.workflow
def research_agent(ctx: outlast.Context, companies: list[str]) -> dict[str, Any]:
    n = 0

    def done(name: str, value: Any) -> Any:
        nonlocal n
        n += 1
        emit("step", n=n, name=name)
        return value

    analyses = []
    for company in companies:
        results = done("search", search(company))
        analyses.append(done("analyze", analyze(company, results))["text"])
    compared = done("compare", synthesize("compare", analyses))["text"]
    draft = done("draft", synthesize("draft synthesis", [compared, *analyses]))["text"]
    critique = done("critique", synthesize("critique", [draft]))["text"]
    final = done("revise", synthesize("revise", [draft, critique]))["text"]
    meeting = done("schedule_meeting", schedule_meeting("competitive landscape"))
    done("email_team", email_team(final))
    return {"synthesis": final, "meeting": meeting["id"]}


def main(argv: list[str]) -> int:
    global _llm_url, _outbox_url
    db, _llm_url, _outbox_url, run_id = argv
    app.use(db)
    result = app.run(research_agent, COMPETITORS, run_id=run_id)
    emit("finished", meeting=result["meeting"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
