"""The OpenAI Agents SDK's model calls as durable calls: a ``Model`` and a ``ModelProvider``.

Inside a workflow (not inside a step), each ``get_response`` / ``stream_response`` is one
journal entry of kind ``"llm"`` named ``agents.model``, keyed by its number among the run's
agent model calls (``agents.model:3``), so a durable call made inside a tool (a wait) never
shifts it. Inside a durable tool (an agent used as a tool, ``Agent.as_tool``, whose run
takes the outer run's model provider), the call is keyed by the tool's call id and its
number within that tool (``agents.model:call_abc.2``) and counted in the tool's nested
calls, so a crash inside the sub-agent does not resend its earlier requests, and a replay
that skips the finished tool keeps the later positions. The entry has the shape of :mod:`outlast.llm.record`'s entries, so
spending, budgets and ``outlast show`` read it the same way:

* ``output``: ``{"request": <the request, blob-encoded>, "response": <ModelResponse as
  JSON>}``, or ``"classes"`` and ``"events"`` for a stream (the Responses API stream events
  the model yielded, rebuilt as the same openai types on replay).
* ``meta``: provider ``openai``, api ``agents``, model, tokens, cost, latency, stream and
  ``fp``, the request's fingerprint. A replay whose request differs (instructions, input,
  tools, settings...) raises NonDeterminismError listing the difference.

A call that is sent (not one answered from the journal) gets a ``chat {model}`` span through
:mod:`outlast.telemetry`, with its usage. Outside a workflow the wrapped model is called as
it is.
"""

from __future__ import annotations

import contextvars
import inspect
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agents.items import ModelResponse, TResponseStreamEvent
from agents.models.interface import Model, ModelProvider
from agents.tool import FunctionTool
from agents.usage import Usage
from pydantic import TypeAdapter

from .. import serde, serde_errors
from ..context import RunState, StepScope, current_run, current_step
from ..llm import record
from ..llm.shapes import API, APIS, class_path, dump, plain, rebuild, usage
from ..store.base import entry_meta
from ._spans import gen_ai_meta

__all__ = [
    "DurableModel",
    "DurableProvider",
    "ToolFrame",
    "journaled",
    "model_request",
    "tool_frame",
]

NAME = "agents.model"
_API = API("openai", "agents")
_RESPONSE = TypeAdapter(ModelResponse)
_SIGNATURE = inspect.signature(Model.get_response)
# Named in the request under their own keys, or not part of what the model is asked.
_SHOWN = frozenset(
    {
        "self",
        "system_instructions",
        "input",
        "model_settings",
        "tools",
        "output_schema",
        "handoffs",
        "tracing",
    }
)
_numbers: weakref.WeakKeyDictionary[RunState, int] = weakref.WeakKeyDictionary()


@dataclass(slots=True)
class ToolFrame:
    """The durable tool call running in this task: its id, its step scope, the tool call it
    runs in (a sub-agent's tool), the keys of the durable calls made inside it (its
    sub-tools' included) and how many of them were model calls."""

    call_id: str
    scope: StepScope
    parent: ToolFrame | None = None
    keys: list[str] = field(default_factory=list)
    models: int = 0

    def took(self, *keys: str) -> None:
        """Durable calls ``keys`` were made inside this tool call (and the ones it runs in)."""
        frame: ToolFrame | None = self
        while frame is not None:
            frame.keys.extend(keys)
            frame = frame.parent


tool_frame: contextvars.ContextVar[ToolFrame | None] = contextvars.ContextVar(
    "outlast_agents_tool", default=None
)


def journaled() -> tuple[RunState, ToolFrame | None] | None:
    """The run whose journal takes this model call, with the durable tool it is made in
    (None: in the workflow's own code); None when the call is a plain one (outside a run,
    inside a step, or inside a step called from a tool)."""
    state = current_run()
    if state is None:
        return None
    step = current_step()
    if step is None:
        return state, None
    frame = tool_frame.get()
    return (state, frame) if frame is not None and frame.scope is step else None


def _tool_spec(tool: Any) -> dict[str, Any]:
    if isinstance(tool, FunctionTool):
        return {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.params_json_schema,
        }
    return {"type": type(tool).__name__, "name": getattr(tool, "name", None)}


def model_request(model: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a model call asks, as plain JSON: what its fingerprint and a diff are made of."""
    given = _SIGNATURE.bind(None, *args, **kwargs).arguments
    schema = given.get("output_schema")
    rest = {k: v for k, v in given.items() if k not in _SHOWN and v is not None}
    request: dict[str, Any] = plain(
        {
            "model": model,
            "instructions": given.get("system_instructions"),
            "input": given.get("input"),
            "settings": given["model_settings"].to_json_dict(),
            "tools": [_tool_spec(t) for t in given.get("tools") or ()],
            "output_schema": None
            if schema is None or schema.is_plain_text()
            else schema.json_schema(),
            "handoffs": [
                {
                    "name": h.tool_name,
                    "description": h.tool_description,
                    "parameters": h.input_json_schema,
                }
                for h in given.get("handoffs") or ()
            ],
            **rest,
        }
    )
    return request


def _prepare(
    where: tuple[RunState, ToolFrame | None],
    model: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    stream: bool,
) -> record.Prepared:
    state, frame = where
    request = model_request(model, args, kwargs)
    blobs: dict[str, bytes] = {}
    encoded = serde.dumps(request, what=f"request of model call {NAME!r}", blobs=blobs)
    if frame is None:
        number = _numbers.get(state, 0) + 1
        _numbers[state] = number
        key = str(number)
    else:
        frame.models += 1
        key = f"{frame.call_id}.{frame.models}"
    call = state.begin(record.KIND, NAME, key=key)
    if frame is not None:
        frame.took(call.key)
    return record.Prepared(
        state,
        _API,
        NAME,
        call,
        request,
        encoded,
        blobs,
        serde.fingerprint(encoded),
        stream,
        record.Options(),
    )


def _recorded(prep: record.Prepared) -> Any:
    """The recorded payload (dict), a BrokenStream, AGAIN; raises a recorded error or a change."""
    entry = prep.call.entry
    if entry is None or entry.status == "intent":
        return record.AGAIN
    meta = entry_meta(entry)
    fetch = prep.state.store.get_blobs
    if meta.get("fp") != prep.fp:
        raise record.changed(prep, entry, fetch)
    if entry.status == "failed":
        error = serde_errors.load_error(entry.output or b"null", step=prep.name)
        partial = meta.get("partial")
        if prep.stream and isinstance(partial, dict):
            return record.BrokenStream(record._events(partial), error)
        raise error
    what = f"recorded model call {prep.call.key!r} of run {prep.state.run_id!r}"
    return serde.loads(entry.output or b"null", what=what, blobs=fetch)


def _record(
    prep: record.Prepared,
    payload: dict[str, Any],
    tokens: tuple[int, int],
    started: float,
    response_id: str | None = None,
) -> None:
    payload = {"request": prep.encoded.decode("utf-8", "surrogatepass"), **payload}
    events = payload.get("events")
    record.journal_completed(
        prep, payload, model=str(prep.request.get("model") or ""), tokens=tokens,
        started=started, answer=[e for _, e in events] if isinstance(events, list) else None,
        span_meta=lambda meta: gen_ai_meta(meta, response_id),
    )


def _dump_response(response: ModelResponse) -> dict[str, Any]:
    # The output items as the openai types they are, with the fields they were built with
    # only: validated again they would gain defaults, and the next request would differ.
    data: dict[str, Any] = _RESPONSE.dump_python(response, mode="json")
    data["output"] = [[class_path(item), dump(item)] for item in response.output]
    return data


def _load_response(data: dict[str, Any]) -> ModelResponse:
    items = [rebuild(path, item) for path, item in data["output"]]
    response: ModelResponse = _RESPONSE.validate_python({**data, "output": []})
    response.output = items
    return response


class DurableModel(Model):
    """A ``Model`` whose calls are journaled inside a workflow (see the module docstring)."""

    def __init__(self, inner: Model, name: str | None = None) -> None:
        self.inner = inner
        #: the model's name, recorded with each call (for prices and ``outlast show``)
        self.name = name or str(getattr(inner, "model", "") or type(inner).__name__)

    def _supports_default_prompt_cache_key(self) -> bool:
        # The SDK asks the model object; answer for the wrapped one.
        ask = getattr(self.inner, "_supports_default_prompt_cache_key", None)
        return bool(ask()) if callable(ask) else False

    def get_retry_advice(self, request: Any) -> Any:
        """The wrapped model's retry advice."""
        return self.inner.get_retry_advice(request)

    async def close(self) -> None:
        """Close the wrapped model."""
        await self.inner.close()

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.inner._cleanup_on_run_end(owner)

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        """The recorded response on replay; else the wrapped model's, journaled."""
        where = journaled()
        if where is None:
            return await self.inner.get_response(*args, **kwargs)
        prep = _prepare(where, self.name, args, kwargs, stream=False)
        got = _recorded(prep)
        if got is not record.AGAIN:
            return _load_response(got["response"])
        record.check_budget(prep)
        record.start_span(prep)
        started = time.time()
        try:
            response = await self.inner.get_response(*args, **kwargs)
        except Exception as exc:
            record.record_failed(prep, exc, started, 1)
            raise
        dumped = _dump_response(response)
        u: Usage = response.usage
        tokens = (u.input_tokens, u.output_tokens)
        _record(prep, {"response": dumped}, tokens, started, response.response_id)
        return response

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        """The recorded events on replay; else the wrapped model's, journaled once read to
        the end (or once the stream broke: a replay yields the same events, then raises)."""
        where = journaled()
        if where is None:
            async for event in self.inner.stream_response(*args, **kwargs):
                yield event
            return
        prep = _prepare(where, self.name, args, kwargs, stream=True)
        got = _recorded(prep)
        if isinstance(got, record.BrokenStream):
            for event in got.events:
                yield event
            raise got.error
        if got is not record.AGAIN:
            for event in record._events(got):
                yield event
            return
        record.check_budget(prep)
        record.start_span(prep)
        started = time.time()
        events: list[Any] = []
        try:
            async for event in self.inner.stream_response(*args, **kwargs):
                events.append(event)
                yield event
        except Exception as exc:
            record.record_failed(prep, exc, started, 1, partial=events)
            raise
        dumped = record._dump_events(events)
        tokens = usage(APIS["responses"], None, [e for _, e in dumped["events"]])
        _record(prep, dumped, tokens, started)


class DurableProvider(ModelProvider):
    """A ``ModelProvider`` whose models are :class:`DurableModel` around ``inner``'s."""

    def __init__(self, inner: ModelProvider) -> None:
        self.inner = inner

    def get_model(self, model_name: str | None) -> Model:
        """The wrapped provider's model, made durable."""
        return DurableModel(self.inner.get_model(model_name), model_name)

    async def aclose(self) -> None:
        """Close the wrapped provider."""
        await self.inner.aclose()
