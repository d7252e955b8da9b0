"""Recorded model calls: the agent layer of outlast.

* :func:`wrap` an ``openai`` or ``anthropic`` client (sync or async): inside a workflow each
  model call (``chat.completions.create``, ``responses.create``, ``messages.create``,
  ``messages.stream``, streaming or not) is a journaled call; on replay the recorded
  response comes back, and a changed request raises :class:`~outlast.NonDeterminismError`
  showing the difference (or goes to the model again with ``on_change="call"``).
* Requests are stored with content-addressed blobs: a conversation resent at every call
  costs O(N) bytes for N turns.
* Every call records tokens, latency and cost (:mod:`outlast.llm.pricing`); runs add up
  what they spent and what recovery saved; ``@app.workflow(budget=outlast.Budget(...))``
  stops a run before a call that would exceed its budget.
* Other SDK methods that send a request (``chat.completions.stream``, ``parse``,
  ``with_raw_response``, ``embeddings.create``...) raise ``ConfigurationError`` inside a
  workflow; :func:`unrecorded` sends one anyway, on purpose.
* :class:`Tools` runs a response's tool calls as journaled steps keyed by tool-call id.

Imported on first use (``import outlast.llm``); ``import outlast`` does not load it. The SDKs
themselves are never imported here: the client you pass in brings its own.
"""

from __future__ import annotations

from .escape import unrecorded
from .pricing import PRICES, Price, cost_of, price_for, set_price
from .tools import ToolCall, Tools, tool_calls
from .wrap import Wrapped, wrap

__all__ = [
    "PRICES",
    "Price",
    "ToolCall",
    "Tools",
    "Wrapped",
    "cost_of",
    "price_for",
    "set_price",
    "tool_calls",
    "unrecorded",
    "wrap",
]
