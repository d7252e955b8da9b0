"""Pydantic AI's durable units as outlast durable calls (see :mod:`outlast.integrations.pydantic_ai`).

Pydantic AI hands every durable unit to :class:`OutlastBackend.execute` with its persisted
name and a body that returns the unit's result already reduced to JSON (``JSON_CODEC``).
Each unit becomes one durable call of the run (:meth:`RunState.begin`):

* a model request (streamed or not) is an ``"llm"`` entry, like a call through
  :func:`outlast.llm.wrap`: the request (as the model sees it) and the response, with tokens,
  cost and the request's fingerprint in ``meta``, so ``outlast show``, the run's spending and
  :class:`outlast.Budget` count it. A replay whose request differs raises
  NonDeterminismError naming the difference;
* a tool call (and its argument validation) is a ``"step"`` keyed by the model's tool-call id,
  so parallel calls replay by identity whatever order they ran in, with the arguments'
  fingerprint checked on replay;
* anything else (MCP tool discovery, event-stream handlers, capability operations, message
  compaction) is a ``"step"`` numbered in call order.

Telemetry (:mod:`outlast.telemetry`): a unit that runs, not one answered from the journal,
gets outlast's span: ``chat {model}`` for a model request (with the GenAI attributes and
usage), ``execute_tool {tool}`` for a tool call, ``step {name}`` for the other units. When
Pydantic AI's own instrumentation is on for the agent run (:data:`framework_traces`), its
spans report the same work, kept replay-safe by ``record_durable_unit``, and outlast adds
none per unit (both would report each request's tokens).

A unit's body runs in a step scope: ``outlast.idempotency_key()`` works inside a tool, and
outlast steps or wrapped clients called from it are plain calls. A body that raises is
journaled as failed and raises the same error on replay. Outlast's control flow (a
hibernating wait, a cancel) is never journaled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BoundDurableOperation,
    DurableOperation,
    DurableOperationId,
    JournalCallableOperationBackend,
    ModelRequestId,
    ModelRequestParams,
    RoleBasedOperationConfig,
    ToolsetCallToolId,
    ToolsetValidateToolArgumentsId,
    record_durable_unit,
)
from pydantic_ai.messages import ModelMessage
from pydantic_core import to_jsonable_python

from .. import serde
from ..context import RunState, _step_var, current_run
from ..durable import DurableCall
from ..errors import NonDeterminismError
from ..llm import record
from ..llm.pricing import Price
from ..llm.shapes import API
from ..store.base import entry_meta
from ..telemetry import NOOP
from ._spans import executing, gen_ai_meta

__all__ = ["OutlastBackend", "framework_traces", "request_view"]

#: the parameters of the unit being dispatched (set by the bound operation, read by execute)
_params: ContextVar[object | None] = ContextVar("outlast_pydantic_ai_params", default=None)

#: True while an agent run that Pydantic AI's instrumentation traces is executing (set by
#: the capability's ``wrap_run``): outlast then emits no span per unit
framework_traces: ContextVar[bool] = ContextVar("outlast_pydantic_ai_traced", default=False)

#: message fields that change from one execution to the next without changing what the
#: model is asked (when a part was made, which agent run made it)
_VOLATILE = frozenset({"timestamp", "run_id", "conversation_id"})


class _Bound(BoundDurableOperation[Any, Any, Any]):
    """A bound operation that makes its parameters visible to :meth:`OutlastBackend.execute`."""

    def __init__(self, inner: BoundDurableOperation[Any, Any, Any]) -> None:
        self._inner = inner

    @property
    def operation(self) -> DurableOperation[Any, Any, Any]:
        return self._inner.operation

    async def __call__(self, params: Any, *, config: object | None = None) -> Any:
        token = _params.set(params)
        try:
            return await self._inner(params, config=config)
        finally:
            _params.reset(token)


class OutlastBackend(JournalCallableOperationBackend[None]):
    """Runs each durable unit as one outlast durable call (names: ``JournalOperationNamer``)."""

    def __init__(
        self,
        *,
        agent_name: str,
        default_model_id: str | None,
        prices: Mapping[str, Price] | None = None,
    ) -> None:
        config = RoleBasedOperationConfig[None](
            model=None, event=None, capability=None, tool=None, resolve_tool=_tool_config
        )
        super().__init__(agent_name=agent_name, default_model_id=default_model_id, config=config)
        self.prices = prices

    def bind(
        self, operation: DurableOperation[Any, Any, Any]
    ) -> BoundDurableOperation[Any, Any, Any]:
        return _Bound(super().bind(operation))

    async def execute(
        self,
        *,
        operation_id: DurableOperationId,
        name: str,
        body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...],
        config: None,
    ) -> object:
        state = current_run()
        if state is None or _step_var.get() is not None:
            return await body()  # not in a workflow's own code: nothing to journal
        params = _params.get()
        if isinstance(operation_id, ModelRequestId) and isinstance(params, ModelRequestParams):
            return await _model_request(state, name, operation_id, params, body, self.prices)
        if isinstance(operation_id, ToolsetCallToolId | ToolsetValidateToolArgumentsId):
            tool = isinstance(operation_id, ToolsetCallToolId)
            return await _tool_call(state, name, params, body, tool)
        call = state.begin("step", name)

        def span() -> Any:
            return _telemetry(state).step_span(name, call.key, 1)

        return await _unit(state, call, body, span=span)


def _telemetry(state: RunState) -> Any:
    """This execution's telemetry hooks, or the no-op when the framework traces the run."""
    return NOOP if framework_traces.get() else state.telemetry


def _tool_config(operation_id: DurableOperationId, tool: object | None, tool_name: str) -> None:
    return None


# -- running a unit --------------------------------------------------------------------------


async def _unit(
    state: RunState,
    call: DurableCall,
    body: Callable[[], Awaitable[object]],
    record_result: Callable[[object, float], None] | None = None,
    record_error: Callable[[Exception, float], None] | None = None,
    *,
    span: Callable[[], Any] | None = None,
) -> object:
    """Replay ``call`` or run ``body`` in a step scope and journal its outcome. ``span``:
    makes the span current while the body runs (model requests end theirs when recorded)."""
    if call.replayed:
        record_durable_unit(executed=False)
        return call.value()
    started = time.time()
    token = _step_var.set(state.scope(call.name, call.key, 1))
    try:
        if span is None:
            value = await body()
        else:
            with executing(span()):
                value = await body()
    except Exception as exc:
        (record_error or (lambda e, s: call.fail(e, started=s)))(exc, started)
        raise
    finally:
        _step_var.reset(token)
    if record_result is None:
        call.complete(value, started=started)
    else:
        record_result(value, started)
    record_durable_unit(executed=True)
    return value


async def _tool_call(
    state: RunState,
    name: str,
    params: object,
    body: Callable[[], Awaitable[object]],
    executes: bool,
) -> object:
    ctx = getattr(params, "ctx", None)
    key = getattr(ctx, "tool_call_id", None)
    args = getattr(params, "tool_args", None)
    args_hash = None
    if args is not None:
        encoded = json.dumps(to_jsonable_python(args, fallback=repr), sort_keys=True)
        args_hash = serde.fingerprint(encoded.encode())
    call = state.begin("step", name, args_hash, key if isinstance(key, str) and key else None)
    tool = getattr(params, "name", None) if executes else None

    def span() -> Any:
        return _telemetry(state).step_span(name, call.key, 1, tool=tool)

    return await _unit(state, call, body, span=span)


# -- model requests --------------------------------------------------------------------------


def request_view(params: ModelRequestParams, model_name: str) -> dict[str, Any]:
    """The request as the model is asked it, as JSON data: what is fingerprinted, diffed on
    replay and shown by ``outlast show`` (timestamps and run ids are left out)."""
    mrp = params.model_request_parameters
    tools = [
        {
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters_json_schema,
            "kind": t.kind,
        }
        for t in [*mrp.function_tools, *mrp.output_tools]
    ]
    settings = to_jsonable_python(dict(params.model_settings or {}), fallback=repr)
    view: dict[str, Any] = {
        "model": model_name,
        "messages": _stable(JSON_CODEC.dump(list[ModelMessage], params.messages)),
        "tools": tools,
        "output_mode": mrp.output_mode,
        "settings": settings,
    }
    if isinstance(settings.get("max_tokens"), int):
        view["max_tokens"] = settings["max_tokens"]  # what outlast.Budget estimates from
    return view


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


async def _model_request(
    state: RunState,
    name: str,
    operation_id: ModelRequestId,
    params: ModelRequestParams,
    body: Callable[[], Awaitable[object]],
    prices: Mapping[str, Price] | None,
) -> object:
    api = API("pydantic-ai", "model.request_stream" if operation_id.streaming else "model.request")
    view = request_view(params, operation_id.model_name)
    prep = record.prepare(state, api, view, record.Options(name=name, prices=prices))
    prep.stream = operation_id.streaming
    if prep.call.replayed:
        entry = prep.call.entry
        assert entry is not None
        if entry_meta(entry).get("fp") != prep.fp:
            raise _changed(prep)
    else:
        record.check_budget(prep)
        model = params.run_context.model
        provider = str(getattr(model, "system", "") or "") or "pydantic-ai"
        prep.span = _telemetry(state).model_span(provider, operation_id.model_name, request=view)

    def ok(value: object, started: float) -> None:
        _record_response(prep, value, started)

    def failed(exc: Exception, started: float) -> None:
        record.record_failed(prep, exc, started, 1)

    value = await _unit(state, prep.call, body, ok, failed)
    if prep.call.replayed:
        return value["response"] if isinstance(value, dict) else value
    return value


def _record_response(prep: record.Prepared, value: object, started: float) -> None:
    """Journal a model response with its tokens and cost, as :func:`record.record_ok` does."""
    usage, model, provider = _usage(value)
    response = _response_of(value)
    record.journal_completed(
        prep,
        {"request": prep.encoded.decode("utf-8", "surrogatepass"), "response": value},
        model=model or str(prep.request.get("model") or ""),
        tokens=usage,
        started=started,
        provider=provider or None,
        span_meta=lambda meta: gen_ai_meta(
            meta, response.get("provider_response_id"), response.get("finish_reason")
        ),
    )


def _response_of(value: object) -> dict[str, Any]:
    """The dumped ModelResponse of a unit's result (a streamed request's holds it under
    ``"response"``), or ``{}``."""
    if isinstance(value, dict) and isinstance(value.get("response"), dict):
        value = value["response"]
    return value if isinstance(value, dict) else {}


def _usage(value: object) -> tuple[tuple[int, int], str, str]:
    """``((input, output) tokens, model name, provider)`` of a dumped ModelResponse (a streamed
    request's result holds it under ``"response"``)."""
    response = _response_of(value)
    if not response:
        return (0, 0), "", ""
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    assert isinstance(usage, dict)
    tokens = (int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
    return tokens, str(response.get("model_name") or ""), str(response.get("provider_name") or "")


def _changed(prep: record.Prepared) -> NonDeterminismError:
    entry = prep.call.entry
    assert entry is not None
    return record.changed(
        prep, entry, prep.state.store.get_blobs, what="Pydantic AI model request",
        advice="The prompt, instructions, tools or settings changed since the run started. "
        "Restore them to finish this run from its journal, or cancel it and start a new one",
    )
