"""A traced agent for crash tests and the observability docs: every finished span is written
as one JSON line to $TRACED_SPANS by a tiny SDK exporter, so a SIGKILLed process leaves the
spans it had finished, and a second process appends its own.

Run as a script: ``python -m tests.apps.traced DB_URL MODEL_BASE_URL RUN_ID N`` runs
``research`` with N steps; the step numbered $TRACED_HANG announces itself on stdout
(``hanging N``) and hangs, to be SIGKILLed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import openai
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import outlast


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file as one JSON object per line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as f:
            for s in spans:
                f.write(json.dumps(as_dict(s)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return SpanExportResult.SUCCESS


def as_dict(s: ReadableSpan) -> dict[str, Any]:
    return {
        "name": s.name,
        "trace": f"{s.context.trace_id:032x}",
        "span": f"{s.context.span_id:016x}",
        "parent": f"{s.parent.span_id:016x}" if s.parent else None,
        "links": [
            [f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}"] for link in s.links
        ],
        "start": (s.start_time or 0) / 1e9,
        "end": (s.end_time or 0) / 1e9,
        "status": s.status.status_code.name,
        "attributes": dict(s.attributes or {}),
        "events": [e.name for e in s.events],
        "pid": os.getpid(),
    }


if os.environ.get("TRACED_SPANS"):
    provider = TracerProvider(resource=Resource.create({"service.name": "traced-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["TRACED_SPANS"])))
    trace.set_tracer_provider(provider)

app = outlast.App()
tools = outlast.llm.Tools(app)
MODEL_URL = os.environ.get("TRACED_MODEL_URL", "http://127.0.0.1:1/v1")
_client: Any = None


def llm() -> Any:
    global _client
    if _client is None:
        _client = outlast.llm.wrap(openai.OpenAI(base_url=MODEL_URL, api_key="test", max_retries=0))
    return _client


@tools.tool(effect="read_only")
def search(query: str) -> str:
    """Search the web."""
    time.sleep(0.02)
    return f"3 results for {query}"


@app.step
def read(i: int) -> str:
    if os.environ.get("TRACED_HANG") == str(i):
        print(f"hanging {i}", flush=True)
        time.sleep(60)  # the test kills us here
    time.sleep(0.01)
    return f"notes {i}"


@app.workflow
def research(ctx: outlast.Context, n: int) -> str:
    messages: list[Any] = [{"role": "user", "content": "research acme"}]
    reply = llm().chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=tools.schemas("chat.completions")
    )
    messages.append(reply.choices[0].message)
    messages += tools.run(reply)
    notes = [read(i) for i in range(1, n + 1)]
    messages.append({"role": "user", "content": "; ".join(notes)})
    final = llm().chat.completions.create(model="gpt-4o-mini", messages=messages)
    return final.choices[0].message.content or ""


if __name__ == "__main__":
    app.use(sys.argv[1])
    MODEL_URL = sys.argv[2]
    print(app.run(research, int(sys.argv[4]), run_id=sys.argv[3]), flush=True)
