"""Running a model's tool calls as journaled steps, keyed by tool-call id.

::

    tools = outlast.llm.Tools(app)

    @tools.tool(effect="read_only")
    def get_weather(city: str) -> str: ...

    @tools.tool(effect="at_most_once")
    def send_email(to: str, body: str) -> str: ...

    reply = llm.chat.completions.create(model=..., messages=messages, tools=tools.schemas("openai"))
    messages += [reply.choices[0].message, *tools.run(reply)]

Each tool is a step named ``tool:<name>``; each call of it is journaled under the model's
tool-call id (``step.call(..., key=id)``), so parallel calls replay by identity whatever
order they ran in. ``effect`` says what running a tool again would do:

* ``"read_only"``: nothing (a lookup). Retried on failure (3 attempts by default).
* ``"idempotent"``: the same effect again, harmlessly (an upsert, a keyed API call).
  Retried on failure (3 attempts by default).
* ``"at_most_once"``: an effect that must not happen twice (an email). Never retried; the
  step records a durable intent first (``@app.step(at_most_once=True)``), so a crash
  during it pauses the run for an operator (or calls ``reconcile``) instead of re-running it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..retry import Retry

if TYPE_CHECKING:
    from ..app import App
    from ..step import Step

__all__ = ["EFFECTS", "ToolCall", "Tools"]

EFFECTS = ("read_only", "idempotent", "at_most_once")
_DEFAULT_RETRY = Retry(attempts=3, initial=0.5)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of a model response, the same for every API."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Tool:
    step: Step[Any, Any]
    effect: str
    description: str
    parameters: dict[str, Any]


class Tools:
    """A set of tools whose calls run as journaled steps of ``app``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._tools: dict[str, _Tool] = {}

    def tool(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        effect: str = "idempotent",
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
        retry: Retry | None = None,
        reconcile: Callable[[str], Any] | None = None,
    ) -> Any:
        """Declare a tool: ``@tools.tool`` or ``@tools.tool(effect="read_only", ...)``.

        ``parameters`` is the JSON schema of its arguments (default: one built from the
        function's signature, every parameter a required string unless annotated int, float,
        bool, list or dict). ``reconcile`` is passed to an at-most-once step. The decorated
        function is returned unchanged (a plain call of it is not journaled).
        """
        if effect not in EFFECTS:
            raise ConfigurationError(f"tool effect must be one of {EFFECTS}, got {effect!r}")

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            tool_name = name or f.__name__
            options: dict[str, Any] = {"name": f"tool:{tool_name}"}
            if effect == "at_most_once":
                if "at_most_once" not in inspect.signature(self.app.step).parameters:
                    raise ConfigurationError(
                        f"tool {tool_name!r}: effect='at_most_once' needs at-most-once steps "
                        "(@app.step(at_most_once=True)), which this version of outlast lacks"
                    )
                options.update(at_most_once=True, reconcile=reconcile)
            else:
                options["retry"] = retry or _DEFAULT_RETRY
            step: Step[Any, Any] = self.app.step(**options)(_by_dict(f))
            step.tool = tool_name
            self._tools[tool_name] = _Tool(
                step, effect, description if description is not None else (inspect.getdoc(f) or ""),
                parameters if parameters is not None else _schema(f),
            )
            return f

        return decorate(fn) if fn is not None else decorate

    def effect(self, name: str) -> str:
        """The declared effect of tool ``name``."""
        return self._tools[name].effect

    def schemas(self, api: str = "chat.completions") -> list[dict[str, Any]]:
        """The tool definitions to send: ``api`` is ``"chat.completions"``, ``"responses"``
        or ``"messages"`` (Anthropic)."""
        out: list[dict[str, Any]] = []
        for name, t in self._tools.items():
            if api == "chat.completions":
                out.append({"type": "function", "function": {
                    "name": name, "description": t.description, "parameters": t.parameters}})
            elif api == "responses":
                out.append({"type": "function", "name": name, "description": t.description,
                            "parameters": t.parameters})
            elif api == "messages":
                out.append({"name": name, "description": t.description, "input_schema": t.parameters})
            else:
                raise ConfigurationError(f"unknown api {api!r}: chat.completions, responses or messages")
        return out

    # -- running ----------------------------------------------------------------------------

    def run(self, response: Any) -> list[dict[str, Any]]:
        """Run every tool call of ``response`` (in order) as a journaled step keyed by its
        id; return the messages to append to the conversation for that API."""
        calls = tool_calls(response)
        return _results(response, calls, [self._call(c) for c in calls])

    async def run_async(self, response: Any) -> list[dict[str, Any]]:
        """:meth:`run` for async workflows: the calls run concurrently (``asyncio.gather``)."""
        calls = tool_calls(response)
        pending = [self._call(c) for c in calls]  # identities are taken here, by id
        values = await asyncio.gather(*(_awaited(p) for p in pending))
        return _results(response, calls, list(values))

    def _call(self, call: ToolCall) -> Any:
        tool = self._tools.get(call.name)
        if tool is None:
            known = ", ".join(self._tools) or "none"
            return f"error: unknown tool {call.name!r} (tools: {known})"
        return tool.step.call(call.arguments, key=call.id)


def _by_dict(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    """``fn`` taking the model's arguments as one dict, so an argument may be named ``key``."""
    if inspect.iscoroutinefunction(fn):
        async def run_async(arguments: dict[str, Any]) -> Any:
            return await fn(**arguments)

        shim: Callable[[dict[str, Any]], Any] = run_async
    else:
        def run(arguments: dict[str, Any]) -> Any:
            return fn(**arguments)

        shim = run
    shim.__name__ = shim.__qualname__ = fn.__name__
    shim.__doc__ = fn.__doc__
    return shim


async def _awaited(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def tool_calls(response: Any) -> list[ToolCall]:
    """The tool calls of a chat completion, a Responses-API response or an Anthropic message."""
    out: list[ToolCall] = []
    choices = getattr(response, "choices", None)
    if choices is not None:
        for c in (choices[0].message.tool_calls or []) if choices else []:
            out.append(ToolCall(c.id, c.function.name, _args(c.function.arguments)))
        return out
    for item in getattr(response, "output", None) or []:
        if getattr(item, "type", None) == "function_call":
            out.append(ToolCall(item.call_id, item.name, _args(item.arguments)))
    for block in getattr(response, "content", None) or []:
        if getattr(block, "type", None) == "tool_use":
            out.append(ToolCall(block.id, block.name, dict(block.input or {})))
    return out


def _args(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError as exc:
        raise ConfigurationError(f"the model sent tool arguments that are not JSON: {text!r}") from exc
    return value if isinstance(value, dict) else {"value": value}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _results(response: Any, calls: list[ToolCall], values: list[Any]) -> list[dict[str, Any]]:
    if getattr(response, "choices", None) is not None:
        return [{"role": "tool", "tool_call_id": c.id, "content": _text(v)} for c, v in zip(calls, values, strict=True)]
    if getattr(response, "output", None) is not None:
        return [{"type": "function_call_output", "call_id": c.id, "output": _text(v)}
                for c, v in zip(calls, values, strict=True)]
    if not calls:
        return []
    blocks = [{"type": "tool_result", "tool_use_id": c.id, "content": _text(v)} for c, v in zip(calls, values, strict=True)]
    return [{"role": "user", "content": blocks}]


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _schema(fn: Callable[..., Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    try:
        signature = inspect.signature(fn, eval_str=True)
    except (NameError, TypeError):  # an annotation that cannot be resolved: strings then
        signature = inspect.signature(fn)
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        props[p.name] = {"type": _JSON_TYPES.get(p.annotation, "string")}
        if p.default is p.empty:
            required.append(p.name)
    return {"type": "object", "properties": props, "required": required}
