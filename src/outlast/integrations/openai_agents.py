"""Durable OpenAI Agents SDK runs: ``Runner``, a drop-in for ``agents.Runner`` in a workflow.

::

    from agents import Agent, function_tool
    from outlast.integrations.openai_agents import Runner

    @app.workflow
    async def support(ctx: outlast.Context, question: str) -> str:
        return (await Runner.run(agent, question, context=ctx)).final_output

Inside a workflow (not inside a step), ``Runner.run`` / ``run_streamed`` / ``run_sync`` run
the SDK's own runner on a durable copy of the agent, through the SDK's public seams only:

* **Model calls**: ``RunConfig.model_provider`` (and any ``Model`` instance on the run
  config or an agent) is wrapped so each ``get_response`` / ``stream_response`` is a
  journaled model call (:mod:`._oa_model`): replayed without contacting the model, checked
  against the recorded request, counted in the run's tokens, cost and budget.
* **Function tools**: each agent is cloned (``Agent.clone``), handoff targets included, and
  each ``FunctionTool.on_invoke_tool`` runs as a durable call named ``tool:<name>`` keyed by
  the model's ``call_id``, so parallel calls replay by identity whatever order they ran in.
  What a tool returned, or the exception it raised, replays as it happened. A tool body is
  a step scope (``outlast.idempotency_key()`` works in it).
* **Agents as tools** (``agent.as_tool``): the sub-agent's run takes the outer run's
  config, so its model calls go through the durable provider too: each is journaled inside
  the tool (keyed by the tool's call id, counted in the run's tokens and budget), and a
  crash inside the sub-agent does not resend its earlier requests.
* **Waits inside a tool**: :func:`wait_for` waits durably for an event (``app.send``),
  keyed by the tool's call id; a long wait hibernates the run and a later process resumes it.

Telemetry (:mod:`outlast.telemetry`): a model call that is sent gets a ``chat {model}``
span, a tool call that runs an ``execute_tool {tool}`` span; replayed ones get none.
Outside a workflow, ``Runner`` is ``agents.Runner``. Needs ``pip install
'outlast[openai-agents]'``. See docs/agents.md.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from datetime import timedelta
from typing import Any

import agents
from agents import Agent, FunctionTool, Handoff, RunConfig, RunResult, RunResultStreaming
from agents.models.interface import Model
from agents.tool_context import ToolContext

from .. import serde, waits
from ..context import RunState, _step_var, current_run
from ..errors import ConfigurationError
from ..store.base import entry_meta
from ._oa_model import DurableModel, DurableProvider, ToolFrame, journaled, tool_frame
from ._spans import executing

__all__ = ["DurableModel", "DurableProvider", "Runner", "durable_agent", "wait_for"]


def _journaled() -> RunState | None:
    """The run whose journal takes this call: in the workflow's own code, or directly in a
    durable tool (a sub-agent's run); None outside a run and inside a step."""
    where = journaled()
    return None if where is None else where[0]


class Runner:
    """``agents.Runner`` whose runs are durable inside an outlast workflow (same signatures)."""

    @classmethod
    async def run(cls, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> RunResult:
        """``agents.Runner.run``; inside a workflow every model call and tool call is durable."""
        state = _journaled()
        if state is not None:
            starting_agent, kwargs = _durable_run(state, starting_agent, kwargs)
        return await agents.Runner.run(starting_agent, input, **kwargs)

    @classmethod
    def run_sync(cls, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> RunResult:
        """``agents.Runner.run_sync``; in a sync workflow it runs on outlast's one event loop."""
        state = _journaled()
        if state is None:
            return agents.Runner.run_sync(starting_agent, input, **kwargs)
        if state.is_async:
            raise ConfigurationError(
                f"run {state.run_id!r}: Runner.run_sync was called inside an async workflow; "
                "use `await Runner.run(...)` there"
            )
        return state.run_coroutine(cls.run(starting_agent, input, **kwargs))

    @classmethod
    def run_streamed(
        cls, starting_agent: Agent[Any], input: Any, **kwargs: Any
    ) -> RunResultStreaming:
        """``agents.Runner.run_streamed``; inside a workflow each model stream is recorded when
        read to the end, and a replay yields the recorded events."""
        state = _journaled()
        if state is not None:
            starting_agent, kwargs = _durable_run(state, starting_agent, kwargs)
        return agents.Runner.run_streamed(starting_agent, input, **kwargs)


def _durable_run(
    state: RunState, agent: Agent[Any], kwargs: dict[str, Any]
) -> tuple[Agent[Any], dict[str, Any]]:
    config = kwargs.get("run_config")
    if config is None:
        config = RunConfig()
    elif isinstance(config, dict):
        config = RunConfig(**config)
    elif not isinstance(config, RunConfig):
        raise ConfigurationError(f"run_config must be a RunConfig or a dict, got {config!r}")
    changes: dict[str, Any] = {}
    if not isinstance(config.model_provider, DurableProvider):
        changes["model_provider"] = DurableProvider(config.model_provider)
    if isinstance(config.model, Model) and not isinstance(config.model, DurableModel):
        changes["model"] = DurableModel(config.model)
    if config.group_id is None:
        # The SDK derives its generated prompt cache key from the group (else from a random
        # id): from the run id, the key and so the recorded request are the same on replay.
        changes["group_id"] = f"outlast:{state.run_id}"
    return durable_agent(agent), {**kwargs, "run_config": dataclasses.replace(config, **changes)}


def durable_agent(agent: Agent[Any], _done: dict[int, Agent[Any]] | None = None) -> Agent[Any]:
    """A clone of ``agent`` whose function tools are durable calls and whose ``Model``
    instance (if it has one) is a :class:`DurableModel`; handoff targets likewise."""
    done = {} if _done is None else _done
    if id(agent) in done:
        return done[id(agent)]
    clone = agent.clone()
    done[id(agent)] = clone  # before the handoffs: agents may hand off in a cycle
    clone.tools = [_durable_tool(t) for t in agent.tools]
    clone.handoffs = [
        durable_agent(h, done) if isinstance(h, Agent) else _durable_handoff(h, done)
        for h in agent.handoffs
    ]
    if isinstance(agent.model, Model) and not isinstance(agent.model, DurableModel):
        clone.model = DurableModel(agent.model)
    return clone


def _durable_handoff(handoff: Handoff[Any, Any], done: dict[int, Agent[Any]]) -> Handoff[Any, Any]:
    invoke = handoff.on_invoke_handoff

    async def on_invoke_handoff(context: Any, input_json: str) -> Any:
        target = await invoke(context, input_json)
        return durable_agent(target, done) if isinstance(target, Agent) else target

    return dataclasses.replace(handoff, on_invoke_handoff=on_invoke_handoff)


# -- tools -------------------------------------------------------------------------------------


def _durable_tool(tool: Any) -> Any:
    if not isinstance(tool, FunctionTool) or getattr(tool.on_invoke_tool, "_outlast", False):
        return tool
    invoke = tool.on_invoke_tool
    tool_name = tool.name

    async def on_invoke_tool(context: ToolContext[Any], input_json: str) -> Any:
        state = _journaled()
        call_id = getattr(context, "tool_call_id", None)
        if state is None or not call_id:
            return await invoke(context, input_json)
        return await _run_tool(state, tool_name, call_id, invoke, context, input_json)

    on_invoke_tool._outlast = True  # type: ignore[attr-defined]
    durable = copy.copy(tool)  # as the SDK copies tools: no __post_init__ again
    durable.on_invoke_tool = on_invoke_tool
    return durable


async def _run_tool(
    state: RunState, tool: str, call_id: str, invoke: Any, context: Any, input_json: str
) -> Any:
    name = f"tool:{tool}"
    outer = tool_frame.get()  # a sub-agent's tool runs inside the outer agent's tool call
    call = state.begin("step", name, serde.fingerprint(input_json.encode()), key=call_id)
    if outer is not None:
        outer.took(call.key)
    if call.replayed:
        entry = call.entry
        assert entry is not None
        # Durable calls the tool made (waits, a sub-agent's calls) are not made again: they
        # keep their positions, and their entries count as replayed.
        meta = entry_meta(entry)
        keys = [str(k) for k in meta.get("keys", ())]
        state.journal.skip(int(meta.get("nested", 0)), keys)
        if outer is not None:
            outer.took(*keys)
        return call.value()
    scope = state.scope(name, call.key, 1)
    frame = ToolFrame(call_id, scope, outer)
    tool_token = tool_frame.set(frame)
    step_token = _step_var.set(scope)
    try:
        with executing(state.telemetry.step_span(name, call.key, 1, tool=tool)):
            value = await invoke(context, input_json)
    except Exception as exc:
        call.fail(exc, meta=_nested(frame))
        raise
    finally:
        _step_var.reset(step_token)
        tool_frame.reset(tool_token)
    return call.complete(value, meta=_nested(frame), what=f"result of tool {name!r}")


def _nested(frame: ToolFrame) -> str | None:
    """The tool entry's meta: the durable calls made inside it (how many, and their keys)."""
    return json.dumps({"nested": len(frame.keys), "keys": frame.keys}) if frame.keys else None


async def wait_for(name: str, timeout: float | timedelta | None = None) -> Any:
    """Inside a tool of a durable run: the payload of the next event ``name`` sent to the run
    (``app.send``, ``outlast send``, the HTTP endpoint), or raise :class:`outlast.Timeout`.

    The wait is keyed by the tool's call id. A long wait (or one without a timeout) hibernates
    the run; when the event arrives the run resumes from its journal, the tool runs again
    from its start and this wait returns the payload. Outside a tool it is ``ctx.wait_for``.
    """
    state = current_run()
    if state is None:
        raise ConfigurationError(
            f"wait_for({name!r}) was called outside an outlast workflow; call it from a tool of "
            "an agent run by outlast.integrations.openai_agents.Runner inside a workflow"
        )
    frame = tool_frame.get()
    key = None
    if frame is not None:
        key = frame.call_id
        if timeout is not None:  # the wait's deadline, then the wait (waits.wait_for's keys)
            frame.took(f"timeout:{name}:{key}")
        frame.took(f"{name}:{key}")
    if state.is_async:
        return await waits.wait_for(state, name, timeout, key=key)
    # A sync workflow's wait blocks: off the event loop, in a thread with this context.
    return await asyncio.to_thread(waits.wait_for, state, name, timeout, key=key)
