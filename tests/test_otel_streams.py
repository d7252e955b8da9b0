"""A model stream left before its end: its ``chat`` span still ends (closed, or collected),
with what was seen, marked ``outlast.stream.abandoned``; nothing is journaled."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from tests.otelkit import by_name, spans

import outlast
import outlast.llm
from outlast.testing import FakeLLMServer, Reply

# Spans are per execution: the replay-each-step pass would multiply them.
pytestmark = pytest.mark.counts_executions
__all__ = ["spans"]

TEXT = "one two three four five six seven eight nine ten"


def check_abandoned(exporter: InMemorySpanExporter, read: int) -> None:
    got = by_name(exporter)
    (chat,) = got["chat gpt-4o-mini"]
    attrs = chat.attributes or {}
    assert attrs["outlast.stream.abandoned"] is True
    assert attrs["outlast.stream.events"] == read
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert "gen_ai.response.id" in attrs
    assert "gen_ai.usage.output_tokens" not in attrs  # the usage chunk was never read
    assert chat.status.status_code == StatusCode.UNSET
    run = got["invoke_workflow reader"][0]
    assert chat.parent is not None and chat.parent.span_id == run.context.span_id


@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_stream_closed_or_dropped_before_its_end_ends_its_span(
    sqlite_url: str, spans: InMemorySpanExporter, how: str
) -> None:
    app = outlast.App(sqlite_url)
    with FakeLLMServer([Reply(text=TEXT)] * 2) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
        llm = outlast.llm.wrap(client)

        @app.workflow
        def reader(ctx: outlast.Context) -> int:
            stream: Any = llm.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            for _, _chunk in zip(range(2), stream, strict=False):
                pass
            if how == "close":
                stream.close()
            else:
                stream.response.close()  # release the connection, drop the stream unclosed
                del stream
                gc.collect()
            return 2

        with client:
            assert app.run(reader, run_id=f"left-{how}") == 2
            check_abandoned(spans, 2)
            # not journaled: a second run of the same id replays nothing of it
            assert [e.kind for e in app.store.load_journal(f"left-{how}")] == []
    app.close()


def test_an_async_stream_left_inside_a_context_manager_ends_its_span(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    app = outlast.App(sqlite_url)
    with FakeLLMServer([Reply(text=TEXT)]) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
        llm = outlast.llm.wrap(client)

        @app.workflow
        async def reader(ctx: outlast.Context) -> int:
            stream: Any = await llm.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async with stream:
                async for _chunk in stream:
                    break
            return 1

        assert asyncio.run(app.run_async(reader, run_id="left-async")) == 1
        asyncio.run(client.close())
    check_abandoned(spans, 1)
    app.close()


def test_a_stream_read_to_its_end_is_not_marked_abandoned(
    sqlite_url: str, spans: InMemorySpanExporter
) -> None:
    app = outlast.App(sqlite_url)
    with FakeLLMServer([Reply(text=TEXT)]) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
        llm = outlast.llm.wrap(client)

        @app.workflow
        def reader(ctx: outlast.Context) -> int:
            with llm.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            ) as stream:
                return sum(1 for _ in stream)

        with client:
            app.run(reader, run_id="whole")
    (chat,) = by_name(spans)["chat gpt-4o-mini"]
    attrs = chat.attributes or {}
    assert "outlast.stream.abandoned" not in attrs
    assert attrs["gen_ai.usage.output_tokens"] > 0
    app.close()
