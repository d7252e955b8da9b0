"""GenAI semantic-convention attributes of a model call, read from outlast's recording.

Pure functions over the plain data :mod:`outlast.llm.record` journals (the request as a dict,
the response or stream events as JSON-shaped dicts), so they need no SDK and no OpenTelemetry.
Names follow the OpenTelemetry GenAI conventions (Development status): ``gen_ai.*``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["error_type", "request_attributes", "response_attributes"]

#: request parameters reported as ``gen_ai.request.*`` (no content)
_REQUEST = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed",
}


def error_type(exc: BaseException) -> str:
    """``error.type``: the exception's fully-qualified class name (builtins unqualified)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def request_attributes(
    provider: str, model: str, operation: str, request: Mapping[str, Any] | None, content: bool
) -> dict[str, Any]:
    """The attributes known before the call is sent."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    for name, attr in _REQUEST.items():
        value = (request or {}).get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attrs[attr] = value
    if content and request:
        messages = request.get("messages", request.get("input"))
        if messages is not None:
            attrs["gen_ai.input.messages"] = _json(messages)
        system = request.get("system", request.get("instructions"))
        if system is not None:
            attrs["gen_ai.system_instructions"] = _json(system)
    return attrs


def response_attributes(meta: Mapping[str, Any], payload: Any, content: bool) -> dict[str, Any]:
    """The attributes of a completed call: ``meta`` is the journal entry's meta (tokens,
    model), ``payload`` the response dict or the list of stream events (dicts)."""
    attrs: dict[str, Any] = {}
    if meta.get("model"):
        attrs["gen_ai.response.model"] = str(meta["model"])
    if isinstance(meta.get("input_tokens"), int):
        attrs["gen_ai.usage.input_tokens"] = meta["input_tokens"]
    if isinstance(meta.get("output_tokens"), int):
        attrs["gen_ai.usage.output_tokens"] = meta["output_tokens"]
    events = payload if isinstance(payload, list) else [payload]
    ident, reasons = _identity(events)
    # A framework adapter hands these in beside the journaled meta (its response objects
    # are not the SDKs' shapes that _identity reads).
    if isinstance(meta.get("response_id"), str):
        ident = meta["response_id"]
    if isinstance(meta.get("finish_reasons"), list):
        reasons = [str(r) for r in meta["finish_reasons"]]
    if ident:
        attrs["gen_ai.response.id"] = ident
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    if content and not isinstance(payload, list) and isinstance(payload, Mapping):
        output = payload.get("choices", payload.get("output", payload.get("content")))
        if output is not None:
            attrs["gen_ai.output.messages"] = _json(output)
    return attrs


def _identity(events: list[Any]) -> tuple[str | None, list[str]]:
    """The response id and finish reasons, from a response or stream events of any API."""
    ident: str | None = None
    reasons: list[str] = []
    for event in events:
        if not isinstance(event, Mapping):
            continue
        inner = event.get("response") or event.get("message")
        for source in (event, inner if isinstance(inner, Mapping) else {}):
            if ident is None and isinstance(source.get("id"), str):
                ident = source["id"]
        for choice in event.get("choices") or ():
            if isinstance(choice, Mapping) and isinstance(choice.get("finish_reason"), str):
                reasons.append(choice["finish_reason"])
        delta = event.get("delta")
        for source in (event, delta if isinstance(delta, Mapping) else {}):
            if isinstance(source.get("stop_reason"), str):
                reasons.append(source["stop_reason"])
        if isinstance(inner, Mapping) and event.get("type") == "response.completed":
            reasons.append(str(inner.get("status")))
        elif event.get("object") == "response" and isinstance(event.get("status"), str):
            reasons.append(event["status"])
    return ident, reasons


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
