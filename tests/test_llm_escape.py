"""No SDK method that sends a request escapes the journal silently (issue 22, item 2).

Inside a workflow every method of a wrapped client that is not journaled raises
ConfigurationError naming it, before anything is sent; inside a step, outside a workflow, or
through ``outlast.llm.unrecorded(client)`` it is a plain call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import openai
import pytest
import tests.llmkit as base

import outlast
import outlast.llm
from outlast.errors import ConfigurationError
from outlast.testing import FakeLLMServer

MSG = [{"role": "user", "content": "hi"}]


oai = base.oai
claude = base.claude


def _consume(stream_manager: Any) -> Any:
    with stream_manager as stream:
        if hasattr(stream, "read"):
            stream.read()
        else:
            for _ in stream:
                pass
    return True


# (method named in the error, client maker, the call)
CALLS: list[tuple[str, Callable[[FakeLLMServer], Any], Callable[[Any], Any]]] = [
    ("chat.completions.stream", oai,
     lambda c: _consume(c.chat.completions.stream(model="gpt-4o", messages=MSG))),
    ("chat.completions.parse", oai, lambda c: c.chat.completions.parse(model="gpt-4o", messages=MSG)),
    ("responses.stream", oai, lambda c: _consume(c.responses.stream(model="gpt-4o", input="hi"))),
    ("responses.parse", oai, lambda c: c.responses.parse(model="gpt-4o", input="hi")),
    ("chat.completions.with_raw_response.create", oai,
     lambda c: c.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG).parse()),
    ("responses.with_streaming_response.create", oai,
     lambda c: _consume(c.responses.with_streaming_response.create(model="gpt-4o", input="hi"))),
    ("with_raw_response.chat.completions.create", oai,
     lambda c: c.with_raw_response.chat.completions.create(model="gpt-4o", messages=MSG)),
    ("embeddings.create", oai, lambda c: c.embeddings.create(model="e", input="hi")),
    ("post", oai, lambda c: c.post("/chat/completions", cast_to=object,
                                   body={"model": "gpt-4o", "messages": MSG})),
    ("messages.parse", claude,
     lambda c: c.messages.parse(model="claude-sonnet-4", max_tokens=16, messages=MSG)),
    ("messages.count_tokens", claude,
     lambda c: c.messages.count_tokens(model="claude-sonnet-4", messages=MSG)),
    ("messages.with_raw_response.create", claude,
     lambda c: c.messages.with_raw_response.create(model="claude-sonnet-4", max_tokens=16, messages=MSG)),
]


@pytest.mark.parametrize(("method", "make", "call"), CALLS, ids=[c[0] for c in CALLS])
def test_unjournaled_method_is_refused_inside_a_workflow(
    sqlite_url: str, server: FakeLLMServer, method: str, make: Any, call: Any
) -> None:
    app = outlast.App(sqlite_url)
    llm = make(server)

    @app.step
    def in_step() -> str:
        try:
            call(llm)
        except Exception as exc:  # noqa: BLE001 - the fake server need not serve every route
            return type(exc).__name__
        return "sent"

    @app.workflow
    def wf(ctx: outlast.Context) -> str:
        call(llm)
        return "sent"

    with pytest.raises(ConfigurationError) as err:
        app.run(wf, run_id="escape")
    message = str(err.value)
    assert f"{method}(...)" in message and "'escape'" in message
    assert "outlast.llm.unrecorded(client)" in message and "@app.step" in message
    assert server.count() == 0  # refused before anything was sent

    @app.workflow
    def stepped(ctx: outlast.Context) -> str:
        return in_step()

    @app.workflow
    def opted_out(ctx: outlast.Context) -> str:
        # The fake server need not serve every route: that the request went out is the point.
        with contextlib.suppress(Exception):
            call(outlast.llm.unrecorded(llm))
        return "sent"

    app.run(stepped, run_id="stepped")
    assert server.count() == 1
    app.run(opted_out, run_id="opted-out")
    assert server.count() == 2


def test_async_chat_stream_is_refused_inside_a_workflow(sqlite_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(sqlite_url)

    @app.workflow
    async def wf(ctx: outlast.Context) -> str:
        async with openai.AsyncOpenAI(
            base_url=server.openai_base_url, api_key="test", max_retries=0
        ) as client:
            llm = outlast.llm.wrap(client)
            async with llm.chat.completions.stream(model="gpt-4o", messages=MSG) as stream:
                async for _ in stream:
                    pass
        return "sent"

    with pytest.raises(ConfigurationError, match=r"chat\.completions\.stream\(\.\.\.\)"):
        app.run(wf, run_id="async-escape")
    assert server.count() == 0


def test_outside_a_workflow_every_method_is_plain(server: FakeLLMServer) -> None:
    llm = oai(server)
    with llm.chat.completions.stream(model="gpt-4o", messages=MSG) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content.startswith("Reply to: hi")
    raw = llm.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSG)
    assert raw.parse().choices[0].message.content.startswith("Reply to: hi")
    copied = llm.copy(timeout=5)
    assert isinstance(copied, outlast.llm.Wrapped)
    assert outlast.llm.unrecorded(llm) is llm.unwrapped
    assert llm.api_key == "test" and not llm.is_closed()
    assert server.count() == 2
