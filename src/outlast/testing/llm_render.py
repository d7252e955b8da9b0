"""How the fake model server writes answers: JSON bodies, server-sent events and errors.

Pure functions, no I/O: each API's shapes follow what the official `openai` and
`anthropic` SDKs parse (ids, finish and stop reasons, usage, typed stream events).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from outlast.testing.llm_wire import LLMRequest, Provider, Reply, compact_json, completion_tokens

#: One server-sent event: the `event:` name (None for OpenAI chat chunks) and the `data:` text.
SSEEvent = tuple[str | None, str]


_ID_PREFIXES = {"chat.completions": "chatcmpl-", "responses": "resp_", "messages": "msg_"}


def response_id(request: LLMRequest, seq: int) -> str:
    """An id in the provider's style, unique per request the server answers."""
    return f"{_ID_PREFIXES[request.api]}{request.digest}{seq:04d}"


def render_body(request: LLMRequest, reply: Reply, *, rid: str, created: int) -> dict[str, Any]:
    """The JSON body of a non-streaming answer."""
    if request.api == "chat.completions":
        return _chat_body(request, reply, rid, created)
    if request.api == "responses":
        return _responses_object(
            request, reply, rid, created, "completed", _responses_output(reply, rid)
        )
    return _anthropic_message(
        request, reply, rid, _anthropic_content(reply, rid), _stop_reason(reply)
    )


def render_stream(
    request: LLMRequest, reply: Reply, *, rid: str, created: int
) -> Iterator[SSEEvent]:
    """The server-sent events of a streaming answer, in order."""
    if request.api == "chat.completions":
        events = _chat_stream(request, reply, rid, created)
        yield from ((None, compact_json(data)) for data in events)
        yield None, "[DONE]"
    elif request.api == "responses":
        for seq, data in enumerate(_responses_stream(request, reply, rid, created)):
            yield data["type"], compact_json({**data, "sequence_number": seq})
    else:
        yield from (
            (data["type"], compact_json(data)) for data in _anthropic_stream(request, reply, rid)
        )


def error_body(provider: Provider, status: int, message: str) -> dict[str, Any]:
    """An error body shaped like the provider's, for an HTTP `status`."""
    if provider == "anthropic":
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        kind = kinds.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", None
    else:
        kind, code = "invalid_request_error", None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _pieces(text: str) -> list[str]:
    """Split text into word-sized stream deltas that join back to exactly `text`."""
    return re.findall(r"\s*\S+|\s+$", text)


def _slices(text: str, size: int = 16) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _suffix(rid: str) -> str:
    """The unique part of a response id, reused in the ids of its items and tool calls."""
    return re.split(r"[-_]", rid, maxsplit=1)[-1]


def _call_ids(reply: Reply, rid: str, prefix: str) -> list[str]:
    suffix = _suffix(rid)
    return [call.id or f"{prefix}{suffix}_{i}" for i, call in enumerate(reply.tool_calls)]


def _prompt_tokens(request: LLMRequest, reply: Reply) -> int:
    return request.prompt_tokens if reply.prompt_tokens is None else reply.prompt_tokens


def _chat_usage(request: LLMRequest, reply: Reply) -> dict[str, Any]:
    prompt, completion = _prompt_tokens(request, reply), completion_tokens(reply)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def _chat_body(request: LLMRequest, reply: Reply, rid: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text if reply.text or not reply.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": cid,
                "type": "function",
                "function": {"name": c.name, "arguments": compact_json(c.arguments)},
            }
            for cid, c in zip(_call_ids(reply, rid, "call_"), reply.tool_calls, strict=True)
        ]
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
        ],
        "usage": _chat_usage(request, reply),
        "system_fingerprint": "fp_outlast",
    }


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def _chat_stream(
    request: LLMRequest, reply: Reply, rid: str, created: int
) -> Iterator[dict[str, Any]]:
    head = {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": request.model,
        "system_fingerprint": "fp_outlast",
    }
    options = request.body.get("stream_options")
    with_usage = isinstance(options, Mapping) and options.get("include_usage") is True
    tail = {"usage": None} if with_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice], **tail}

    opening = "" if reply.text or not reply.tool_calls else None
    yield chunk({"role": "assistant", "content": opening, "refusal": None})
    for piece in _pieces(reply.text):
        yield chunk({"content": piece})
    for i, (cid, call) in enumerate(
        zip(_call_ids(reply, rid, "call_"), reply.tool_calls, strict=True)
    ):
        function = {"name": call.name, "arguments": ""}
        yield chunk(
            {"tool_calls": [{"index": i, "id": cid, "type": "function", "function": function}]}
        )
        for piece in _slices(compact_json(call.arguments)):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    yield chunk({}, _finish_reason(reply))
    if with_usage:
        yield {**head, "choices": [], "usage": _chat_usage(request, reply)}


def _responses_output(reply: Reply, rid: str) -> list[dict[str, Any]]:
    """Output items, finished: a message when there is text, then one item per tool call."""
    suffix = _suffix(rid)
    output: list[dict[str, Any]] = []
    if reply.text or not reply.tool_calls:
        part = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
        output.append(
            {
                "id": f"msg_{suffix}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
    for i, (cid, call) in enumerate(
        zip(_call_ids(reply, rid, "call_"), reply.tool_calls, strict=True)
    ):
        output.append(
            {
                "id": f"fc_{suffix}_{i}",
                "type": "function_call",
                "status": "completed",
                "call_id": cid,
                "name": call.name,
                "arguments": compact_json(call.arguments),
            }
        )
    return output


def _responses_object(
    request: LLMRequest,
    reply: Reply,
    rid: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
) -> dict[str, Any]:
    body = request.body
    usage = None
    if status == "completed":
        prompt, completion = _prompt_tokens(request, reply), completion_tokens(reply)
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "completed_at": created if status == "completed" else None,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": request.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
    }


def _responses_stream(
    request: LLMRequest, reply: Reply, rid: str, created: int
) -> Iterator[dict[str, Any]]:
    """Typed Responses events without sequence numbers (the caller numbers them)."""
    pending = _responses_object(request, reply, rid, created, "in_progress", [])
    yield {"type": "response.created", "response": pending}
    yield {"type": "response.in_progress", "response": pending}
    output = _responses_output(reply, rid)
    for index, item in enumerate(output):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            started = {**item, "status": "in_progress", "content": []}
            yield {"type": "response.output_item.added", "output_index": index, "item": started}
            empty = {**part, "text": ""}
            yield {"type": "response.content_part.added", **at, "content_index": 0, "part": empty}
            for piece in _pieces(part["text"]):
                yield {
                    "type": "response.output_text.delta",
                    **at,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                }
            yield {
                "type": "response.output_text.done",
                **at,
                "content_index": 0,
                "text": part["text"],
                "logprobs": [],
            }
            yield {"type": "response.content_part.done", **at, "content_index": 0, "part": part}
        else:
            started = {**item, "status": "in_progress", "arguments": ""}
            yield {"type": "response.output_item.added", "output_index": index, "item": started}
            for piece in _slices(item["arguments"]):
                yield {"type": "response.function_call_arguments.delta", **at, "delta": piece}
            yield {
                "type": "response.function_call_arguments.done",
                **at,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    done = _responses_object(request, reply, rid, created, "completed", output)
    yield {"type": "response.completed", "response": done}


def _stop_reason(reply: Reply) -> str:
    return "tool_use" if reply.tool_calls else "end_turn"


def _anthropic_content(reply: Reply, rid: str) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if reply.text or not reply.tool_calls:
        content.append({"type": "text", "text": reply.text})
    for cid, call in zip(_call_ids(reply, rid, "toolu_"), reply.tool_calls, strict=True):
        content.append(
            {"type": "tool_use", "id": cid, "name": call.name, "input": dict(call.arguments)}
        )
    return content


def _anthropic_message(
    request: LLMRequest, reply: Reply, rid: str, content: list[dict[str, Any]], stop: str | None
) -> dict[str, Any]:
    output = completion_tokens(reply) if stop else 1
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": _prompt_tokens(request, reply),
            "output_tokens": output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    }


def _anthropic_stream(request: LLMRequest, reply: Reply, rid: str) -> Iterator[dict[str, Any]]:
    # message_start carries a placeholder output count; message_delta has the final one.
    yield {"type": "message_start", "message": _anthropic_message(request, reply, rid, [], None)}
    yield {"type": "ping"}
    for index, block in enumerate(_anthropic_content(reply, rid)):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {**block, "text": ""},
            }
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {**block, "input": {}},
            }
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in _slices(compact_json(block["input"]))
            ]
        for delta in deltas:
            yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    usage = {
        "input_tokens": _prompt_tokens(request, reply),
        "output_tokens": completion_tokens(reply),
    }
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
        "usage": usage,
    }
    yield {"type": "message_stop"}
