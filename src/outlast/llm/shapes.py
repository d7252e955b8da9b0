"""What differs between the model APIs: usage fields, stream events, and rebuilding SDK objects.

Everything here works on plain JSON-like data (an SDK object dumped with
``model_dump(mode="json", exclude_unset=True)``), so the same code reads a live response
and a recorded one. No SDK is imported here except to rebuild a recorded object, and then
only modules of the ``openai`` and ``anthropic`` packages themselves.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SerializationError

__all__ = ["API", "APIS", "describe_diff", "dump", "estimate_tokens", "plain", "rebuild", "usage"]

# Options that change how a request travels, not what the model is asked: left out of the
# fingerprint, so a new timeout or tracing header does not count as a changed prompt.
TRANSPORT_OPTIONS = frozenset({"timeout", "extra_headers"})


@dataclass(frozen=True, slots=True)
class API:
    """One model API: ``provider`` ("openai", "anthropic") and ``name`` (its method path)."""

    provider: str
    name: str

    @property
    def label(self) -> str:
        """The default journal name of its calls, e.g. ``openai.chat.completions``."""
        return f"{self.provider}.{self.name}"


APIS = {
    "chat.completions": API("openai", "chat.completions"),
    "responses": API("openai", "responses"),
    "messages": API("anthropic", "messages"),
}


def _sentinel(value: Any) -> bool:
    # The SDKs' "argument not given" markers (NotGiven, Omit) are dropped like absent ones.
    return type(value).__name__ in ("NotGiven", "Omit") and type(value).__module__.startswith(
        ("openai", "anthropic")
    )


def plain(value: Any) -> Any:
    """``value`` with SDK objects (pydantic models) turned into the dicts the SDK would send."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not _sentinel(v)}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "model_dump") and hasattr(type(value), "model_fields"):
        return dump(value)
    return value


def dump(obj: Any) -> Any:
    """An SDK object as JSON data, fields it was built with only (so rebuilding gives it back)."""
    return obj.model_dump(mode="json", exclude_unset=True, by_alias=True)


def class_path(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}:{t.__qualname__}"


def rebuild(path: str, data: Any) -> Any:
    """The SDK object of class ``path`` (``module:Qualname``) holding the recorded ``data``."""
    module_name, _, qualname = path.partition(":")
    if not module_name.startswith(("openai.", "anthropic.")):
        raise SerializationError(
            f"a recorded model response names class {path}, which is not an openai or "
            "anthropic SDK type; the journal entry is corrupt"
        )
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    cls: Any = module
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if cls is None or not hasattr(cls, "construct"):
        raise SerializationError(
            f"the installed SDK has no class {path} to rebuild a recorded response; was the "
            "openai/anthropic package downgraded?"
        )
    # construct, not validate: the SDKs build server data leniently, and so do we.
    return cls.construct(**data)


def usage(api: API, response: Any, events: list[Any] | None) -> tuple[int, int]:
    """``(input_tokens, output_tokens)`` of a dumped response, or of its dumped stream events."""
    if events is None:
        return _usage_fields(api, response.get("usage") if isinstance(response, Mapping) else None)
    found = (0, 0)
    for event in events:
        if not isinstance(event, Mapping):
            continue
        kind = event.get("type")
        if api.name == "chat.completions" and event.get("usage"):
            found = _usage_fields(api, event["usage"])
        elif api.name == "responses" and kind == "response.completed":
            found = _usage_fields(api, (event.get("response") or {}).get("usage"))
        elif kind == "message_start":
            found = _usage_fields(api, (event.get("message") or {}).get("usage"))
        elif kind == "message_delta" and event.get("usage"):
            # Anthropic sends cumulative output tokens at the end; input came with message_start.
            out = event["usage"].get("output_tokens") or 0
            found = (found[0], int(out))
    return found


def _usage_fields(api: API, u: Any) -> tuple[int, int]:
    if not isinstance(u, Mapping):
        return 0, 0
    if api.name == "chat.completions":
        return int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
    inputs = int(u.get("input_tokens") or 0)
    if api.provider == "anthropic":
        inputs += int(u.get("cache_creation_input_tokens") or 0)
        inputs += int(u.get("cache_read_input_tokens") or 0)
    return inputs, int(u.get("output_tokens") or 0)


def estimate_tokens(request: Mapping[str, Any]) -> tuple[int, int]:
    """A cheap estimate of a request's ``(input, output)`` tokens before it is sent: the
    characters of its text over 4, and the output limit it asks for (``max_tokens`` and
    friends; 0 when none is given)."""
    chars = 0
    todo: list[Any] = [request.get(k) for k in ("messages", "input", "system", "instructions", "tools")]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, Mapping):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    limit = next(
        (request[k] for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")
         if isinstance(request.get(k), int)),
        0,
    )
    return math.ceil(chars / 4), limit


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_diff(recorded: Any, current: Any, path: str = "", limit: int = 5) -> list[str]:
    """Up to ``limit`` lines naming where two requests differ and how."""
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(out) >= limit or a == b:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                here = f"{where}.{key}" if where else str(key)
                if key not in a:
                    out.append(f"{here}: added, now {_short(b[key])}")
                elif key not in b:
                    out.append(f"{here}: removed, was {_short(a[key])}")
                else:
                    walk(a[key], b[key], here)
                if len(out) >= limit:
                    return
        elif isinstance(a, list) and isinstance(b, list):
            if where == "tools" and _tools_changed(a, b, out):
                return
            for i, (x, y) in enumerate(zip(a, b, strict=False)):
                walk(x, y, f"{where}[{i}]")
            if len(a) != len(b) and len(out) < limit:
                out.append(f"{where}: recorded {len(a)} items, now {len(b)}")
        else:
            out.append(f"{where or 'request'}: recorded {_short(a)}, now {_short(b)}")

    walk(recorded, current, path)
    return out


def _tool_name(tool: Any) -> str | None:
    # chat.completions: {"function": {"name"}}; responses and Anthropic: {"name"}.
    if not isinstance(tool, Mapping):
        return None
    inner = tool.get("function")
    name = inner.get("name") if isinstance(inner, Mapping) else tool.get("name")
    return name if isinstance(name, str) else None


def _tools_changed(recorded: list[Any], current: list[Any], out: list[str]) -> bool:
    """Name the tools added or removed (one line); False when the same tools are listed."""
    before = [_tool_name(t) for t in recorded]
    after = [_tool_name(t) for t in current]
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    if not added and not removed:
        return False
    parts = [f"{label} {', '.join(repr(n) if n else '(unnamed)' for n in names)}"
             for label, names in (("added", added), ("removed", removed)) if names]
    out.append(f"tools: {'; '.join(parts)} (recorded {len(recorded)} tools, now {len(current)})")
    return True
