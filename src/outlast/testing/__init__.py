"""Test helpers for code built on outlast.

`FakeLLMServer` (in `outlast.testing.llm_server`) is a local OpenAI- and Anthropic-compatible
model server with scripted replies, injectable faults and a request log.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from outlast.testing.llm_server import FakeLLMServer, RecordedRequest, Responder
    from outlast.testing.llm_wire import Fault, LLMRequest, Message, Reply, Tool, ToolCall

__all__ = [
    "FakeLLMServer",
    "Fault",
    "LLMRequest",
    "Message",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Tool",
    "ToolCall",
]

_HOMES = {
    "FakeLLMServer": "outlast.testing.llm_server",
    "Fault": "outlast.testing.llm_wire",
    "RecordedRequest": "outlast.testing.llm_server",
    "Responder": "outlast.testing.llm_server",
    "LLMRequest": "outlast.testing.llm_wire",
    "Message": "outlast.testing.llm_wire",
    "Reply": "outlast.testing.llm_wire",
    "Tool": "outlast.testing.llm_wire",
    "ToolCall": "outlast.testing.llm_wire",
}


def __getattr__(name: str) -> Any:
    # Imported lazily: if this package imported llm_server itself, then
    # `python -m outlast.testing.llm_server` would warn that the module was already loaded.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
