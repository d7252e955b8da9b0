"""What a test scripts for the fake model server (replies, faults) and how requests are parsed.

Plain data and pure functions, no I/O. `outlast.testing.llm_server` reads an HTTP request,
calls `parse_request`, asks the responder for a `Reply` (or makes the `default_reply`), and
hands both to `outlast.testing.llm_render`. Three APIs are spoken:

- OpenAI Chat Completions (`POST /v1/chat/completions`)
- OpenAI Responses (`POST /v1/responses`)
- Anthropic Messages (`POST /v1/messages`)

Token counts are estimates, one token per four characters (rounded up), so tests can predict them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Provider = Literal["openai", "anthropic"]
Api = Literal["chat.completions", "responses", "messages"]

#: The endpoints the server answers, by path.
ROUTES: Mapping[str, tuple[Provider, Api]] = {
    "/v1/chat/completions": ("openai", "chat.completions"),
    "/v1/responses": ("openai", "responses"),
    "/v1/messages": ("anthropic", "messages"),
}

_FILLER = ("durable", "steps", "replay", "journal", "agent", "tool", "record", "resume")


class RequestError(ValueError):
    """The request body is not one the real API would accept; the server answers 400."""


@dataclass(frozen=True)
class ToolCall:
    """A tool call the fake model makes.

    `arguments` is the decoded JSON object. Without an `id` the server makes a
    provider-style one (`call_...` for OpenAI, `toolu_...` for Anthropic).
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """What the fake model answers: text, tool calls, or both.

    With tool calls the finish reason is `tool_calls` (chat), the output holds
    `function_call` items (responses), or the stop reason is `tool_use` (Anthropic).
    `prompt_tokens` and `completion_tokens` override the estimated usage figures.
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Message:
    """One message of a request, flattened to text the same way for every provider.

    `role` is `system`, `developer`, `user`, `assistant` or `tool`. A tool result
    (an OpenAI `tool` message or `function_call_output` item, an Anthropic `tool_result`
    block) is a `tool` message carrying the `tool_call_id` it answers.
    """

    role: str
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class Tool:
    """A function tool offered in a request, with its JSON schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LLMRequest:
    """A parsed model request, as a responder sees it.

    `body` and `headers` (lower-case names) are the raw request; `digest` is a short
    hash of the body that ignores the streaming options, so a prompt gets the same
    default answer streamed or not.
    """

    provider: Provider
    api: Api
    path: str
    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...]
    stream: bool
    body: Mapping[str, Any]
    headers: Mapping[str, str]
    digest: str

    @property
    def last_user_text(self) -> str:
        """The text of the last `user` message, or "" when there is none."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools the request offers."""
        return [tool.name for tool in self.tools]

    @property
    def prompt_tokens(self) -> int:
        """Estimated prompt tokens: the characters of every message, tool call included, over 4."""
        chars = 0
        for message in self.messages:
            chars += len(message.text)
            for call in message.tool_calls:
                chars += len(call.name) + len(compact_json(call.arguments))
        return math.ceil(chars / 4)


@dataclass(frozen=True)
class Fault:
    """A failure the server plays instead of (or before) one answer; build one with a classmethod.

    With `path` set, the fault waits for a request to that path (`/v1/messages`, ...);
    otherwise the next request of any path takes it.
    """

    kind: Literal["error", "slow", "disconnect"]
    status: int = 0
    message: str = ""
    retry_after: float | None = None
    seconds: float = 0.0
    after_events: int = 0
    path: str | None = None

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1.0, *, path: str | None = None) -> Fault:
        """429 with `Retry-After` (seconds) and `retry-after-ms` headers when `retry_after` is set."""
        message = "Rate limit reached (injected by FakeLLMServer)."
        return cls("error", 429, message, retry_after=retry_after, path=path)

    @classmethod
    def server_error(
        cls, status: int = 500, *, retry_after: float | None = None, path: str | None = None
    ) -> Fault:
        """A 5xx error (500, 502, 503, Anthropic's 529 ...), which the SDKs retry."""
        if not 500 <= status <= 599:
            raise ValueError(f"server_error needs a 5xx status, not {status}; use Fault.http_error")
        message = f"The server had an error (status {status}, injected by FakeLLMServer)."
        return cls("error", status, message, retry_after=retry_after, path=path)

    @classmethod
    def http_error(
        cls,
        status: int,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        path: str | None = None,
    ) -> Fault:
        """Any error status with a provider-shaped body, e.g. 400 (which the SDKs do not retry)."""
        if not 400 <= status <= 599:
            raise ValueError(f"http_error needs a 4xx or 5xx status, not {status}")
        text = message or f"Error {status} (injected by FakeLLMServer)."
        return cls("error", status, text, retry_after=retry_after, path=path)

    @classmethod
    def slow(cls, seconds: float, *, path: str | None = None) -> Fault:
        """Wait `seconds` before answering normally (on top of the server's `latency`)."""
        return cls("slow", seconds=seconds, path=path)

    @classmethod
    def disconnect(cls, *, after_events: int = 0, path: str | None = None) -> Fault:
        """Close the connection without an answer.

        A streaming request gets `after_events` server-sent events first (0: nothing, not even
        the status line); any other request is dropped before the status line.
        """
        return cls("disconnect", after_events=after_events, path=path)

    def matches(self, path: str) -> bool:
        """Whether a request to `path` takes this fault."""
        return self.path is None or self.path.rstrip("/") == path


def estimate_tokens(text: str) -> int:
    """The server's token estimate for `text`: its length over 4, rounded up."""
    return math.ceil(len(text) / 4)


def completion_tokens(reply: Reply) -> int:
    """Tokens of a reply: its text and each tool call's name and JSON arguments."""
    if reply.completion_tokens is not None:
        return reply.completion_tokens
    calls = sum(
        estimate_tokens(c.name) + estimate_tokens(compact_json(c.arguments))
        for c in reply.tool_calls
    )
    return estimate_tokens(reply.text) + calls


def parse_request(path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> LLMRequest:
    """Parse the JSON body of a request to one of `ROUTES`; raise `RequestError` if malformed."""
    provider, api = ROUTES[path]
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("model: a non-empty string is required")
    if api == "chat.completions":
        messages = _chat_messages(body)
        tools = _openai_tools(body, nested=True)
    elif api == "responses":
        messages = _responses_messages(body)
        tools = _openai_tools(body, nested=False)
    else:
        if not isinstance(body.get("max_tokens"), int):
            raise RequestError("max_tokens: an integer is required")
        messages = _anthropic_messages(body)
        tools = _anthropic_tools(body)
    unstreamed = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    digest = hashlib.sha256(
        f"{api}\n{compact_json(unstreamed, sort_keys=True)}".encode()
    ).hexdigest()[:8]
    return LLMRequest(
        provider=provider,
        api=api,
        path=path,
        model=model,
        messages=tuple(messages),
        tools=tuple(tools),
        stream=body.get("stream") is True,
        body=body,
        headers=headers,
        digest=digest,
    )


def default_reply(request: LLMRequest, reply_tokens: int | None = None) -> Reply:
    """The answer when nothing is scripted: `Reply to: <last user text> [<digest>]`.

    With `reply_tokens`, the text is padded with filler words (or cut) to exactly
    `4 * reply_tokens` characters, which the server counts as `reply_tokens` tokens.
    """
    asked = " ".join(request.last_user_text.split())[:60]
    text = f"Reply to: {asked} [{request.digest}]"
    if reply_tokens is None:
        return Reply(text=text)
    size = 4 * reply_tokens
    start = int(request.digest, 16)
    words = [text]
    length = len(text)
    while length < size:
        word = _FILLER[(start + len(words)) % len(_FILLER)]
        words.append(word)
        length += len(word) + 1
    return Reply(text=" ".join(words)[:size])


# -- parsing ---------------------------------------------------------------------------------


def compact_json(value: Any, *, sort_keys: bool = False) -> str:
    """JSON without spaces, as the APIs send it (and as tool-call arguments are counted)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)


def _text_of(content: Any) -> str:
    """Flatten a string or a list of content parts (any provider) to its text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "".join(texts)


def _json_object(arguments: Any) -> dict[str, Any]:
    """Decode tool-call arguments sent back to the model; keep undecodable ones as a string."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    try:
        decoded = json.loads(arguments)
    except (TypeError, ValueError):
        return {"_raw": arguments}
    return decoded if isinstance(decoded, dict) else {"_raw": decoded}


def _list_field(body: Mapping[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list):
        raise RequestError(f"{name}: a list is required")
    return value


def _chat_messages(body: Mapping[str, Any]) -> list[Message]:
    messages = []
    for item in _list_field(body, "messages"):
        if not isinstance(item, Mapping) or not isinstance(item.get("role"), str):
            raise RequestError("messages: each message needs a role")
        calls = tuple(
            ToolCall(
                c["function"]["name"], _json_object(c["function"].get("arguments")), c.get("id")
            )
            for c in item.get("tool_calls") or ()
            if isinstance(c, Mapping) and isinstance(c.get("function"), Mapping)
        )
        messages.append(
            Message(item["role"], _text_of(item.get("content")), calls, item.get("tool_call_id"))
        )
    return messages


def _responses_messages(body: Mapping[str, Any]) -> list[Message]:
    messages = []
    if isinstance(body.get("instructions"), str):
        messages.append(Message("system", body["instructions"]))
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, Message("user", items)]
    if items is None and messages:
        return messages
    if not isinstance(items, list):
        raise RequestError("input: a string or a list of items is required")
    for item in items:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type", "message")
        if kind == "message" and isinstance(item.get("role"), str):
            messages.append(Message(item["role"], _text_of(item.get("content"))))
        elif kind == "function_call":
            call = ToolCall(
                item.get("name", ""), _json_object(item.get("arguments")), item.get("call_id")
            )
            messages.append(Message("assistant", "", (call,)))
        elif kind == "function_call_output":
            messages.append(
                Message("tool", _text_of(item.get("output")), tool_call_id=item.get("call_id"))
            )
    return messages


def _anthropic_messages(body: Mapping[str, Any]) -> list[Message]:
    messages = []
    if body.get("system"):
        messages.append(Message("system", _text_of(body["system"])))
    for item in _list_field(body, "messages"):
        if not isinstance(item, Mapping) or item.get("role") not in ("user", "assistant"):
            raise RequestError("messages: each message needs a role of user or assistant")
        content = item.get("content")
        blocks = (
            content if isinstance(content, list) else [{"type": "text", "text": _text_of(content)}]
        )
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in blocks:
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "tool_result":
                result = _text_of(block.get("content"))
                messages.append(Message("tool", result, tool_call_id=block.get("tool_use_id")))
            elif block.get("type") == "tool_use":
                calls.append(
                    ToolCall(
                        block.get("name", ""), _json_object(block.get("input")), block.get("id")
                    )
                )
            elif isinstance(block.get("text"), str):
                texts.append(block["text"])
        if texts or calls or not blocks:
            messages.append(Message(item["role"], "".join(texts), tuple(calls)))
    return messages


def _openai_tools(body: Mapping[str, Any], *, nested: bool) -> list[Tool]:
    tools = []
    for tool in body.get("tools") or ():
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            continue
        spec = tool.get("function") if nested else tool
        if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            tools.append(
                Tool(spec["name"], spec.get("description") or "", spec.get("parameters") or {})
            )
    return tools


def _anthropic_tools(body: Mapping[str, Any]) -> list[Tool]:
    return [
        Tool(tool["name"], tool.get("description") or "", tool.get("input_schema") or {})
        for tool in body.get("tools") or ()
        if isinstance(tool, Mapping) and isinstance(tool.get("name"), str)
    ]
