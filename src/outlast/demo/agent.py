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
import outlast.llm

COMPETITORS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli"]
MODEL = "gpt-demo-mini"
# A simulated price, so the journal records what each call cost (and recovery saved).
outlast.llm.set_price(MODEL, input=2.50, output=10.00)

app = outlast.App()
_llm_url = ""
_outbox_url = ""
_label = ["model"]  # the step being sent, for the progress event
_clients: list[Any] = []


def _llm() -> Any:
    if not _clients:
        _clients.append(_model())
    return _clients[0]


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _model() -> Any:
    """The real openai SDK, wrapped so each model call is journaled with its usage and cost.

    An httpx request hook announces every request really sent (a replayed call sends none),
    which is how the parent knows when to SIGKILL the agent mid-call.
    """
    import httpx
    import openai

    http = httpx.Client(event_hooks={"request": [lambda request: emit("exec", name=_label[0])]})
    client = openai.OpenAI(
        base_url=f"{_llm_url}/v1",
        api_key="demo-key-not-used",
        max_retries=0,
        http_client=http,  # type: ignore[arg-type]  # some openai releases type it as httpx2's
    )
    return outlast.llm.wrap(client)


def _ask(label: str, prompt: str) -> str:
    """One model call, made from the workflow itself: a journaled step of kind ``llm``."""
    _label[0] = label
    reply = _llm().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}])
    return reply.choices[0].message.content or ""


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
        analyses.append(done("analyze", _ask("analyze", f"Analyze {company}: " + "; ".join(results))))
    compared = done("compare", _ask("compare", "compare: " + " | ".join(a[:80] for a in analyses)))
    material = [compared, *analyses]
    draft = done("draft", _ask("draft", "draft synthesis: " + " | ".join(m[:80] for m in material)))
    critique = done("critique", _ask("critique", "critique: " + draft[:80]))
    final = done("revise", _ask("revise", f"revise: {draft[:80]} | {critique[:80]}"))
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
