"""SDK methods that are not journaled: refused inside a workflow unless the user opts out.

A wrapped client journals ``create`` (and Anthropic's ``messages.stream``). Every other SDK
method that sends a request (``chat.completions.stream``, ``parse``, ``with_raw_response``,
``embeddings.create``, ``client.post`` ...) would be sent again after a crash, with no
fingerprint, cost or budget check. So inside a workflow (and not inside a step) such a call
raises :class:`~outlast.ConfigurationError` naming the method and the journaled alternative;
outside a workflow, or inside a step (whose result is journaled), it is a plain call.
:func:`unrecorded` is the explicit way to send one anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ..context import current_run, current_step
from ..errors import ConfigurationError

__all__ = ["unrecorded"]

C = TypeVar("C")

# Client methods that send nothing: always passed through.
HARMLESS = frozenset({"close", "is_closed", "platform_headers", "get_api_list"})

# What to use instead, by the method's last names.
_ADVICE = {
    "chat.completions.stream": "chat.completions.create(..., stream=True), which is journaled",
    "chat.completions.parse": "chat.completions.create(..., response_format={...}) and parse "
    "the JSON of the reply yourself",
    "responses.stream": "responses.create(..., stream=True), which is journaled",
    "responses.parse": "responses.create(..., text={'format': {...}}) and parse the JSON of "
    "the reply yourself",
    "messages.parse": "messages.create(...) and parse the reply yourself",
}


def unrecorded(client: C) -> C:
    """The SDK client behind ``client`` (a :func:`~outlast.llm.wrap` result), whose calls are
    never journaled, even inside a workflow: the explicit way to send a request outlast does
    not record (``outlast.llm.unrecorded(llm).embeddings.create(...)``). Such a call is sent
    again when a run resumes, and its cost is not counted."""
    inner = getattr(type(client), "unwrapped", None)
    return client.unwrapped if inner is not None else client  # type: ignore[attr-defined]


def is_resource(value: Any) -> bool:
    """Whether ``value`` is an SDK resource (``client.chat``, ``client.with_raw_response``...)
    whose methods must be looked at one by one."""
    t = type(value)
    module = t.__module__
    if not module.startswith(("openai", "anthropic")) or isinstance(value, type):
        return False
    return module.startswith(("openai.resources", "anthropic.resources")) or t.__qualname__.endswith(
        ("WithRawResponse", "WithStreamingResponse")
    )


def guard(method: Callable[..., Any], path: str) -> Callable[..., Any]:
    """``method`` (not journaled), refusing to run inside a workflow outside a step."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        state = current_run()
        if state is not None and current_step() is None:
            raise refusal(path, state.run_id)
        return method(*args, **kwargs)

    return call


def refusal(path: str, run_id: str) -> ConfigurationError:
    """The error for a call of ``path`` that would escape the journal of run ``run_id``."""
    plain = path.replace("with_raw_response.", "").replace("with_streaming_response.", "")
    advice = next((a for name, a in _ADVICE.items() if plain.endswith(name)), None)
    if "with_raw_response" in path or "with_streaming_response" in path:
        advice = (f"{plain}(...) on the wrapped client (the HTTP headers of a response are "
                  "not journaled)")
    instead = f"Use {advice}; or call" if advice else "Call"
    return ConfigurationError(
        f"run {run_id!r}: {path}(...) is not journaled by outlast.llm, so it would be sent "
        f"again after a crash with no fingerprint, cost or budget check. {instead} it inside "
        "a step (@app.step; the step's result is journaled), or send it unrecorded on "
        "purpose with outlast.llm.unrecorded(client)."
    )
