"""Durable Pydantic AI agents: every model request and tool call is a journaled outlast call.

::

    from pydantic_ai import Agent
    from outlast.integrations.pydantic_ai import OutlastDurability

    agent = Agent(model, name="support", tools=[...], capabilities=[OutlastDurability()])

    @app.workflow
    async def support(ctx: outlast.Context, question: str) -> str:
        return (await agent.run(question)).output

Built on Pydantic AI's public engine API (``pydantic_ai.durable_exec``): the capability
subclasses ``BaseDurabilityCapability``, declares itself with a ``DurabilityEngineSpec``
(JSON journal, units run in the workflow's own process) and hands every durable unit to a
``JournalCallableOperationBackend`` whose ``execute`` is one outlast durable call
(:mod:`._pai_units`). Unit names are Pydantic AI's persisted names
(``{agent}__model.request``, ``{agent}__function_toolset__{id}.call_tool:{tool}``, ...),
so they must stay stable while runs are in flight: they derive from the agent's ``name``,
its toolsets' ``id`` and the model id.

Inside a workflow's own code (not inside a step) the capability also installs

* an ``ExternalEventWaiter`` (:mod:`._pai_events`): ``RequestInput`` and other waits for an
  answer hibernate the run until ``app.send`` / ``outlast send`` / the HTTP endpoint
  answers (:func:`answer`, :func:`refuse`);
* a ``replay_scope``, and each unit reports with ``record_durable_unit`` whether it ran or
  was replayed, so Pydantic AI's spans and metrics of replayed work are not exported again.
  Units that run also get outlast's spans (``chat {model}``, ``execute_tool {tool}``) unless
  Pydantic AI's own instrumentation traces the run (it then reports them itself);
* a replay-stable ``run_id`` (and conversation id) and run start time.

Outside a workflow (or inside a step) it is transparent: the agent runs as usual. Needs
``pip install 'outlast[pydantic-ai]'``. See docs/agents.md.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from opentelemetry.trace import NoOpTracer
from pydantic_ai.capabilities.abstract import WrapRunHandler
from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    DurabilityEngineSpec,
    conversation_id_from_run_id,
    external_event_scope,
    replay_scope,
)
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import AgentDepsT, RunContext

from ..context import RunState, _step_var, current_run
from ..llm.pricing import Price
from ._pai_events import OutlastEventWaiter, answer, parse_token, refuse
from ._pai_units import OutlastBackend, framework_traces

__all__ = ["OutlastDurability", "answer", "parse_token", "refuse"]

#: agent runs started so far in each execution, for replay-stable run ids
_runs: weakref.WeakKeyDictionary[RunState, int] = weakref.WeakKeyDictionary()


class OutlastDurability(BaseDurabilityCapability[AgentDepsT]):
    """Makes an agent durable inside an outlast workflow; transparent elsewhere.

    ``name``: the prefix of the agent's unit names (default: the agent's ``name``, which
    is then required). ``models``: extra models by id, for ``agent.run(model=...)`` inside a
    workflow. ``prices``: per-model prices for the cost of model requests (default: outlast's
    price table, see :mod:`outlast.llm.pricing`). Per tool, ``metadata={"outlast": False}``
    runs that tool outside a durable unit (every time the workflow reaches it).
    """

    engine_spec: ClassVar[DurabilityEngineSpec] = DurabilityEngineSpec(
        engine_name="outlast",
        durable_unit_noun="step",
        durable_container_noun="workflow",
        codec=JSON_CODEC,
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        # Units run in the workflow's process, so an MCP server keeps one session per run.
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
        journal_discovery=True,
        # Tool calls are keyed by the model's tool-call id: parallel calls replay by identity.
        sequential_tools_in_durable_context=False,
        tool_config_key="outlast",
    )

    def __init__(
        self,
        *,
        name: str | None = None,
        models: Mapping[str, Model] | None = None,
        prices: Mapping[str, Price] | None = None,
    ) -> None:
        super().__init__(models=models, name=name)
        self._prices = prices

    @property
    def in_durable_context(self) -> bool:
        """True in a workflow's own code (not inside a step, nor outside any run)."""
        return current_run() is not None and _step_var.get() is None

    def get_durable_operation_backend(self) -> OutlastBackend:
        return OutlastBackend(
            agent_name=self.name, default_model_id=self.default_model_id, prices=self._prices
        )

    async def wrap_run(
        self, ctx: RunContext[AgentDepsT], *, handler: WrapRunHandler
    ) -> AgentRunResult[Any]:
        state = current_run()
        if state is None or not self.in_durable_context:
            return await handler()
        # Pydantic AI's instrumentation reports the units of a traced run itself (outlast then
        # adds no span per unit, see _pai_units); replay_scope keeps it from reporting them again.
        traced = framework_traces.set(not isinstance(ctx.tracer, NoOpTracer))
        try:
            with replay_scope(), external_event_scope(OutlastEventWaiter(state, self.name)):
                return await super().wrap_run(ctx, handler=handler)
        finally:
            framework_traces.reset(traced)

    def get_default_run_id(self) -> str | None:
        state = current_run()
        if state is None or not self.in_durable_context:
            return None
        n = _runs.get(state, 0) + 1
        _runs[state] = n
        return state.identity(f"pydantic-ai:{self.name}:{n}")

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return conversation_id_from_run_id(run_id) if self.in_durable_context else None

    async def get_run_start_time(self, run_id: str) -> datetime | None:
        state = current_run()
        if state is None or not self.in_durable_context:
            return None
        # Journaled, so a resumed run counts its `timeout=` from when it first started.
        call = state.begin("step", f"{self.name}.run_start_time")
        at = call.value(blobs=False) if call.replayed else call.complete(time.time(), large=False)
        return datetime.fromtimestamp(float(at), UTC)
