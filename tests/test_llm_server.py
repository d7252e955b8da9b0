"""The fake model server, driven through the real `openai` and `anthropic` SDKs."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import ToolParam
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)
from openai.types.responses import FunctionToolParam, Response, ResponseInputParam

import outlast.testing
from outlast.testing import FakeLLMServer, Fault, LLMRequest, Message, Reply, ToolCall, llm_server

MODEL = "fake-model-1"
PARAMETERS: dict[str, object] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
CHAT_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather now", "parameters": PARAMETERS},
}
RESPONSES_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather now",
    "parameters": PARAMETERS,
    "strict": False,
}
ANTHROPIC_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "Weather now",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        yield running


def openai_client(server: FakeLLMServer, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.openai_base_url, api_key="test-key", max_retries=max_retries
    )


def anthropic_client(server: FakeLLMServer, max_retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.anthropic_base_url, api_key="test-key", max_retries=max_retries
    )


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def weather_agent(request: LLMRequest) -> Reply:
    """A scripted model: ask for the weather tool, then answer with its result."""
    last = request.messages[-1]
    if last.role == "tool":
        return Reply(text=f"It is {last.text} (call {last.tool_call_id})")
    assert request.tool_names == ["get_weather"]
    return Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})])


# -- OpenAI chat completions ------------------------------------------------------------------


def test_chat_default_reply_is_derived_from_the_request(server: FakeLLMServer) -> None:
    prompt = "What is the capital of France?"
    with openai_client(server) as client:
        first = client.chat.completions.create(model=MODEL, messages=user(prompt))
        again = client.chat.completions.create(model=MODEL, messages=user(prompt))
        other = client.chat.completions.create(model=MODEL, messages=user("Something else"))
    text = first.choices[0].message.content
    assert text is not None and text.startswith(f"Reply to: {prompt} [")
    assert again.choices[0].message.content == text
    assert other.choices[0].message.content != text
    assert first.id != again.id
    assert first.model == MODEL
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None
    assert first.usage.prompt_tokens == math.ceil(len(prompt) / 4)
    assert first.usage.completion_tokens == math.ceil(len(text) / 4)
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


def test_reply_tokens_sets_the_length_of_default_replies() -> None:
    with FakeLLMServer(reply_tokens=50) as server, openai_client(server) as client:
        reply = client.chat.completions.create(model=MODEL, messages=user("Tell me a story"))
    assert reply.usage is not None and reply.usage.completion_tokens == 50
    assert len(reply.choices[0].message.content or "") == 200


def test_chat_async_matches_sync(server: FakeLLMServer) -> None:
    async def ask() -> str | None:
        async with openai.AsyncOpenAI(
            base_url=server.openai_base_url, api_key="test-key", max_retries=0
        ) as client:
            reply = await client.chat.completions.create(model=MODEL, messages=user("Hi"))
            return reply.choices[0].message.content

    with openai_client(server) as client:
        sync = client.chat.completions.create(model=MODEL, messages=user("Hi"))
    assert asyncio.run(ask()) == sync.choices[0].message.content
    assert server.requests[-1].headers["x-stainless-async"].startswith("async")


def test_chat_stream_joins_to_the_same_text_and_reports_usage(server: FakeLLMServer) -> None:
    with openai_client(server) as client:
        whole = client.chat.completions.create(model=MODEL, messages=user("Stream this"))
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=user("Stream this"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        plain = list(
            client.chat.completions.create(model=MODEL, messages=user("Stream this"), stream=True)
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len(chunks) > 3
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage == whole.usage
    assert all(c.choices and c.usage is None for c in plain)


def test_chat_async_stream(server: FakeLLMServer) -> None:
    async def stream() -> str:
        async with openai.AsyncOpenAI(
            base_url=server.openai_base_url, api_key="test-key", max_retries=0
        ) as client:
            chunks = await client.chat.completions.create(
                model=MODEL, messages=user("Async stream"), stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in chunks])

    assert asyncio.run(stream()).startswith("Reply to: Async stream [")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_chat_tool_calls_round_trip(stream: bool) -> None:
    question = user("Weather in Paris?")
    with FakeLLMServer(weather_agent) as server, openai_client(server) as client:
        first: ChatCompletion
        if stream:
            with client.chat.completions.stream(
                model=MODEL, messages=question, tools=[CHAT_TOOL]
            ) as events:
                first = events.get_final_completion()
        else:
            first = client.chat.completions.create(
                model=MODEL, messages=question, tools=[CHAT_TOOL]
            )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        follow_up: list[ChatCompletionMessageParam] = [
            *question,
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        second = client.chat.completions.create(model=MODEL, messages=follow_up, tools=[CHAT_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == f"It is sunny (call {call.id})"


# -- OpenAI responses -------------------------------------------------------------------------


def test_responses_create_sync_and_async(server: FakeLLMServer) -> None:
    async def ask() -> str:
        async with openai.AsyncOpenAI(
            base_url=server.openai_base_url, api_key="test-key", max_retries=0
        ) as client:
            return (await client.responses.create(model=MODEL, input="Hello")).output_text

    with openai_client(server) as client:
        response = client.responses.create(model=MODEL, input="Hello", instructions="Be brief")
    assert response.id.startswith("resp_") and response.status == "completed"
    assert response.output_text.startswith("Reply to: Hello [")
    assert response.model == MODEL
    assert response.usage is not None
    assert response.usage.input_tokens == math.ceil(len("Be brief" + "Hello") / 4)
    assert response.usage.output_tokens == math.ceil(len(response.output_text) / 4)
    assert asyncio.run(ask()).startswith("Reply to: Hello [")


def test_responses_stream_sends_the_typed_events(server: FakeLLMServer) -> None:
    with openai_client(server) as client:
        whole = client.responses.create(model=MODEL, input="Stream me")
        events = list(client.responses.create(model=MODEL, input="Stream me", stream=True))
        with client.responses.stream(model=MODEL, input="Stream me") as helper:
            helper_text = "".join(e.delta for e in helper if e.type == "response.output_text.delta")
            final = helper.get_final_response()
    types = [e.type for e in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text == helper_text == final.output_text
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage == whole.usage


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_responses_function_calls_round_trip(stream: bool) -> None:
    with FakeLLMServer(weather_agent) as server, openai_client(server) as client:
        first: Response
        if stream:
            with client.responses.stream(
                model=MODEL, input="Weather in Paris?", tools=[RESPONSES_TOOL]
            ) as events:
                first = events.get_final_response()
        else:
            first = client.responses.create(
                model=MODEL, input="Weather in Paris?", tools=[RESPONSES_TOOL]
            )
        calls = [item for item in first.output if item.type == "function_call"]
        assert len(calls) == 1 and len(first.output) == 1
        call = calls[0]
        assert call.name == "get_weather" and call.call_id.startswith("call_")
        assert json.loads(call.arguments) == {"city": "Paris"}
        follow_up: ResponseInputParam = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "rainy"},
        ]
        second = client.responses.create(model=MODEL, input=follow_up, tools=[RESPONSES_TOOL])
    assert second.output_text == f"It is rainy (call {call.call_id})"


# -- Anthropic messages -----------------------------------------------------------------------


def test_anthropic_messages_sync_and_async(server: FakeLLMServer) -> None:
    async def ask() -> anthropic.types.Message:
        async with anthropic.AsyncAnthropic(
            base_url=server.anthropic_base_url, api_key="test-key", max_retries=0
        ) as client:
            return await client.messages.create(
                model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Bonjour"}]
            )

    with anthropic_client(server) as client:
        message = client.messages.create(
            model=MODEL,
            max_tokens=100,
            system="Answer in French",
            messages=[{"role": "user", "content": "Bonjour"}],
        )
    block = message.content[0]
    assert block.type == "text" and block.text.startswith("Reply to: Bonjour [")
    assert message.id.startswith("msg_") and message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == math.ceil(len("Answer in French" + "Bonjour") / 4)
    assert message.usage.output_tokens == math.ceil(len(block.text) / 4)
    answer = asyncio.run(ask())
    assert answer.content[0].type == "text" and answer.content[0].text.startswith("Reply to: Bon")
    headers = server.requests[0].headers
    assert "anthropic-version" in headers
    # Newer SDKs send the key as a bearer token, older ones as x-api-key.
    assert "test-key" in (headers.get("x-api-key"), headers.get("authorization", "")[7:])


def test_anthropic_stream_sync_and_async(server: FakeLLMServer) -> None:
    messages: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Stream it"}]

    async def stream() -> str:
        async with (
            anthropic.AsyncAnthropic(
                base_url=server.anthropic_base_url, api_key="test-key", max_retries=0
            ) as client,
            client.messages.stream(model=MODEL, max_tokens=100, messages=messages) as events,
        ):
            return "".join([text async for text in events.text_stream])

    with anthropic_client(server) as client:
        whole = client.messages.create(model=MODEL, max_tokens=100, messages=messages)
        raw = list(
            client.messages.create(model=MODEL, max_tokens=100, messages=messages, stream=True)
        )
        with client.messages.stream(model=MODEL, max_tokens=100, messages=messages) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
    types = [e.type for e in raw]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "content_block_delta" in types
    assert whole.content[0].type == "text"
    assert text == whole.content[0].text == asyncio.run(stream())
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_tool_use_round_trip(stream: bool) -> None:
    question: anthropic.types.MessageParam = {"role": "user", "content": "Weather in Paris?"}
    with FakeLLMServer(weather_agent) as server, anthropic_client(server) as client:
        first: anthropic.types.Message
        if stream:
            with client.messages.stream(
                model=MODEL, max_tokens=100, messages=[question], tools=[ANTHROPIC_TOOL]
            ) as events:
                first = events.get_final_message()
        else:
            first = client.messages.create(
                model=MODEL, max_tokens=100, messages=[question], tools=[ANTHROPIC_TOOL]
            )
        assert first.stop_reason == "tool_use"
        assert [block.type for block in first.content] == ["tool_use"]
        use = first.content[0]
        assert use.type == "tool_use" and use.id.startswith("toolu_")
        assert use.name == "get_weather" and use.input == {"city": "Paris"}
        second = client.messages.create(
            model=MODEL,
            max_tokens=100,
            tools=[ANTHROPIC_TOOL],
            messages=[
                question,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "windy"}],
                },
            ],
        )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == f"It is windy (call {use.id})"


# -- scripting ------------------------------------------------------------------------------


def test_the_responder_sees_a_parsed_request() -> None:
    seen: list[LLMRequest] = []

    def responder(request: LLMRequest) -> str:
        seen.append(request)
        return "scripted"

    with FakeLLMServer(responder) as server, openai_client(server) as client:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "Be terse"},
                {"role": "user", "content": [{"type": "text", "text": "Hi there"}]},
            ],
            tools=[CHAT_TOOL],
        )
    assert reply.choices[0].message.content == "scripted"
    (request,) = seen
    assert (request.provider, request.api, request.model) == ("openai", "chat.completions", MODEL)
    assert request.messages == (Message("system", "Be terse"), Message("user", "Hi there"))
    assert request.tools[0].name == "get_weather" and request.tools[0].parameters == PARAMETERS
    assert request.body["tools"] == [CHAT_TOOL] and not request.stream


def test_scripted_replies_are_used_in_order_then_fail_loudly() -> None:
    script: list[Reply | str] = [Reply(text="first"), "second"]
    with FakeLLMServer(script) as server, openai_client(server, max_retries=2) as client:
        texts = [
            client.chat.completions.create(model=MODEL, messages=user(str(n)))
            .choices[0]
            .message.content
            for n in range(2)
        ]
        with pytest.raises(openai.InternalServerError, match="ran out"):
            client.chat.completions.create(model=MODEL, messages=user("third"))
    assert texts == ["first", "second"]
    assert server.count() == 3, "a script error must not be retried by the SDK"


def test_a_failing_responder_is_reported_not_retried() -> None:
    def responder(request: LLMRequest) -> Reply:
        raise ValueError("boom in responder")

    with (
        FakeLLMServer(responder) as server,
        anthropic_client(server, max_retries=2) as client,
        pytest.raises(anthropic.InternalServerError, match="boom in responder"),
    ):
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert server.count() == 1


# -- faults -----------------------------------------------------------------------------------


def test_openai_retry_honours_retry_after(server: FakeLLMServer) -> None:
    server.inject(Fault.rate_limit(retry_after=1.0))
    with openai_client(server, max_retries=1) as client:
        reply = client.chat.completions.create(model=MODEL, messages=user("Retry me"))
    assert reply.choices[0].message.content is not None
    first, second = server.requests
    assert first.fault == Fault.rate_limit(retry_after=1.0) and second.fault is None
    assert second.received_at - first.received_at >= 1.0
    assert [r.headers["x-stainless-retry-count"] for r in (first, second)] == ["0", "1"]


def test_anthropic_retry_honours_retry_after(server: FakeLLMServer) -> None:
    server.inject(Fault.rate_limit(retry_after=1.0))
    with anthropic_client(server, max_retries=1) as client:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    first, second = server.requests
    assert second.received_at - first.received_at >= 1.0
    assert first.fault is not None and second.fault is None


def test_rate_limit_is_shaped_like_each_provider(server: FakeLLMServer) -> None:
    server.inject(Fault.rate_limit(retry_after=2), Fault.rate_limit(retry_after=0.25))
    with openai_client(server) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model=MODEL, messages=user("x"))
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.response.headers["retry-after"] == "2"
    assert raised.value.response.headers["retry-after-ms"] == "2000"
    with anthropic_client(server) as claude, pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": Fault.rate_limit().message},
    }
    assert limited.value.response.headers["retry-after-ms"] == "250"


def test_server_errors_are_raised_then_retried(server: FakeLLMServer) -> None:
    server.inject(Fault.server_error(500))
    with openai_client(server) as client:
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(model=MODEL, messages=user("x"))
        assert raised.value.status_code == 500
        client.chat.completions.create(model=MODEL, messages=user("x"))  # the fault is used up
    server.inject(Fault.server_error(529))
    with anthropic_client(server, max_retries=1) as claude:
        claude.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert [r.fault and r.fault.status for r in server.requests] == [500, None, 529, None]


def test_a_client_error_is_not_retried(server: FakeLLMServer) -> None:
    server.inject(Fault.http_error(400, "Your prompt is malformed."))
    with (
        openai_client(server, max_retries=3) as client,
        pytest.raises(openai.BadRequestError, match="Your prompt is malformed"),
    ):
        client.chat.completions.create(model=MODEL, messages=user("x"))
    assert server.count() == 1
    with pytest.raises(ValueError, match="5xx"):
        Fault.server_error(429)


def test_a_fault_waits_for_its_path(server: FakeLLMServer) -> None:
    server.inject(Fault.rate_limit(path="/v1/messages"))
    with openai_client(server) as client:
        client.chat.completions.create(model=MODEL, messages=user("not me"))
    with anthropic_client(server) as claude, pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert [r.fault is not None for r in server.requests] == [False, True]


def test_latency_and_slow_faults_delay_the_answer() -> None:
    with FakeLLMServer(latency=0.2) as server, openai_client(server) as client:
        server.inject(Fault.slow(0.3))
        started = time.monotonic()
        client.chat.completions.create(model=MODEL, messages=user("slow"))
        slow = time.monotonic() - started
        started = time.monotonic()
        client.chat.completions.create(model=MODEL, messages=user("normal"))
        normal = time.monotonic() - started
    assert slow >= 0.5
    assert 0.2 <= normal < slow


def test_chunk_delay_spaces_streamed_events() -> None:
    with FakeLLMServer(chunk_delay=0.05) as server, openai_client(server) as client:
        arrivals = [
            time.monotonic()
            for _ in client.chat.completions.create(
                model=MODEL, messages=user("one two three four"), stream=True
            )
        ]
    assert len(arrivals) >= 6
    # Spaced, not bunched: the client may read the first events of the stream together, so
    # only half the nominal spacing is asserted (without chunk_delay the span is ~0).
    assert arrivals[-1] - arrivals[0] >= 0.05 * (len(arrivals) - 1) / 2


def test_disconnect_before_the_answer(server: FakeLLMServer) -> None:
    server.inject(Fault.disconnect())
    with openai_client(server) as client:
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=MODEL, messages=user("x"))
        client.chat.completions.create(model=MODEL, messages=user("x"))
    assert server.count() == 2


def test_disconnect_in_the_middle_of_a_stream(server: FakeLLMServer) -> None:
    server.inject(Fault.disconnect(after_events=3))
    received = []
    with openai_client(server) as client, pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            model=MODEL, messages=user("a long enough prompt"), stream=True
        ):
            received.append(chunk)
    assert len(received) == 3


# -- the request log, errors, lifecycle ---------------------------------------------------------


def test_the_request_log(server: FakeLLMServer) -> None:
    with openai_client(server) as client:
        client.chat.completions.create(
            model=MODEL, messages=user("logged"), extra_headers={"Idempotency-Key": "key-1"}
        )
        client.responses.create(model=MODEL, input="also logged")
    first, second = server.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.body == {"model": MODEL, "messages": [{"role": "user", "content": "logged"}]}
    assert first.headers["authorization"] == "Bearer test-key"
    assert first.idempotency_key == "key-1" and second.idempotency_key is None
    assert first.received_at <= second.received_at
    assert server.count() == 2
    assert server.count("/v1/responses") == 1 and server.count("/v1/messages") == 0
    server.inject(Fault.server_error())
    server.reset()
    assert server.count() == 0 and server.requests == []
    with openai_client(server) as client:
        client.chat.completions.create(model=MODEL, messages=user("the fault was cleared"))


def test_the_request_log_without_bodies() -> None:
    # A long conversation resends its history every turn; a server in a measured process
    # must be able to leave the bodies out of its log.
    with FakeLLMServer(keep_bodies=False) as server, openai_client(server) as client:
        reply = client.chat.completions.create(model=MODEL, messages=user("not kept"))
        assert reply.choices[0].message.content.startswith("Reply to: not kept")
        (logged,) = server.requests
    assert logged.body is None and logged.path == "/v1/chat/completions"


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_bad_requests_get_provider_shaped_errors(server: FakeLLMServer) -> None:
    status, body = post(f"{server.url}/v1/nowhere", b"{}")
    assert status == 404 and "/v1/chat/completions" in body["error"]["message"]
    status, body = post(f"{server.openai_base_url}/chat/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = post(f"{server.openai_base_url}/chat/completions", b'{"messages": []}')
    assert status == 400 and "model" in body["error"]["message"]
    no_max_tokens = json.dumps({"model": MODEL, "messages": []}).encode()
    status, body = post(f"{server.url}/v1/messages", no_max_tokens)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["type"] == "error" and "max_tokens" in body["error"]["message"]
    assert server.count() == 4


def test_stop_frees_the_port_even_with_an_idle_connection() -> None:
    with FakeLLMServer() as server, openai_client(server) as client:
        port = server.port
        client.chat.completions.create(model=MODEL, messages=user("keep-alive"))
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        server.stop()  # a second stop is harmless
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


def source_root() -> str:
    return str(Path(llm_server.__file__).parents[2])


def test_command_line_server_in_a_subprocess() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([source_root(), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-W",
        "error",
        "-m",
        "outlast.testing.llm_server",
        "--reply-tokens",
        "10",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
            reply = client.chat.completions.create(model=MODEL, messages=user("from afar"))
        assert reply.usage is not None and reply.usage.completion_tokens == 10
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "Warning" not in stderr


def test_importing_the_server_needs_no_sdk() -> None:
    probe = (
        "import sys, outlast.testing.llm_server; "
        "heavy = {'openai', 'anthropic', 'httpx', 'httpx2', 'pydantic'}; "
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))"
    )
    env = {**os.environ, "PYTHONPATH": source_root()}
    found = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_the_public_api_list_is_sorted_and_complete() -> None:
    names = outlast.testing.__all__
    assert names == sorted(names)
    assert all(getattr(outlast.testing, name) is getattr(llm_server, name) for name in names)
    assert set(names) <= set(llm_server.__all__)
    with pytest.raises(AttributeError):
        _ = outlast.testing.NoSuchThing
