"""Streams that break mid-way replay as the failure they were (issue 22, item 1).

Real openai SDK against the local model server, which cuts the stream after N events.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
import tests.llmkit as base

import outlast
import outlast.llm
from outlast.testing import FakeLLMServer, Fault


def test_stream_broken_then_retried_resumes_on_the_same_path_after_sigkill(store_url: str) -> None:
    with FakeLLMServer(latency=0.3) as server:
        server.inject(Fault.disconnect(after_events=3))
        proc = base.spawn(store_url, server.openai_base_url, "broken", "retry_stream")
        base.kill_when(proc, server, 3)  # the call after the retry is in flight
        result = base.finish(base.spawn(store_url, server.openai_base_url, "broken", "retry_stream"))
        sent = server.requests
    # The broken stream and the retry are not sent again: only the interrupted third call is.
    assert len(sent) == 4
    assert [r.body.get("stream", False) for r in sent] == [True, False, False, False]
    assert sent[2].body == sent[3].body
    assert result["seen"] == 3  # the replay yields the 3 events read before the break
    assert len(result["errors"]) == 1
    assert result["text"].startswith("Reply to: tell me a story")
    steps = outlast.App(store_url).get_run("broken").steps
    assert [s.status for s in steps] == ["failed", "completed", "completed"]
    assert steps[0].meta["stream"] is True


def test_async_stream_broken_replays_its_events_then_the_error(
    sqlite_url: str, server: FakeLLMServer
) -> None:
    flag = {"crash": False}
    seen: list[list[str]] = []

    def build(app: outlast.App) -> Any:
        @app.workflow
        async def reader(ctx: outlast.Context) -> str:
            async with openai.AsyncOpenAI(
                base_url=server.openai_base_url, api_key="test", max_retries=0
            ) as client:
                llm = outlast.llm.wrap(client)
                events: list[str] = []
                try:
                    stream = await llm.responses.create(model="gpt-4o", input="go", stream=True)
                    async for event in stream:
                        events.append(event.type)
                    outcome = "read"
                except Exception as exc:  # noqa: BLE001 - the workflow's retry
                    outcome = f"broke: {exc}"
                    await llm.responses.create(model="gpt-4o", input="go again")
            seen.append(events)
            if flag["crash"]:
                raise base.Crash
            return outcome

        return reader

    server.inject(Fault.disconnect(after_events=2))
    first = outlast.App(sqlite_url)
    flag["crash"] = True
    with pytest.raises(base.Crash):
        first.run(build(first), run_id="async-broken")
    first.close()
    flag["crash"] = False
    second = outlast.App(sqlite_url)  # a second App replays the same run id
    outcome = second.run(build(second), run_id="async-broken")
    assert outcome.startswith("broke: ")
    assert server.count() == 2  # nothing sent again
    assert seen[0] == seen[1] and len(seen[0]) == 2
    second.close()


def test_anthropic_stream_helper_broken_replays_the_same_failure(
    sqlite_url: str, server: FakeLLMServer
) -> None:
    app = outlast.App(sqlite_url)
    client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
    base._clients.append(client)
    claude = outlast.llm.wrap(client)
    flag = {"crash": False}
    seen: list[list[str]] = []

    @app.workflow
    def helper(ctx: outlast.Context) -> str:
        kinds: list[str] = []
        try:
            with claude.messages.stream(
                model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": "x"}]
            ) as stream:
                kinds.extend(event.type for event in stream)
            outcome = "read"
        except Exception:  # noqa: BLE001 - the workflow's retry
            reply = claude.messages.create(
                model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": "x"}]
            )
            outcome = reply.content[0].text
        seen.append(kinds)
        if flag["crash"]:
            raise base.Crash
        return outcome

    server.inject(Fault.disconnect(after_events=3))
    assert base.run_twice(app, helper, run_id="helper-broken", flag=flag).startswith("Reply to: x")
    assert server.count() == 2
    assert seen[0] == seen[1] and seen[0]
