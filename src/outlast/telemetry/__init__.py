"""Observability: OpenTelemetry traces and metrics, replay-safe, and log records that join them.

``pip install 'outlast[otel]'`` adds ``opentelemetry-api``; outlast then reports to the
tracer and meter providers the application configured (it never installs one). Without the
extra, with no provider, or with ``App(..., tracing=False)``, every hook is a no-op chosen
once per execution. See docs/observability.md.

The hook surface, for code that performs work inside a run (framework adapters)::

    from outlast import telemetry

    tel = telemetry.current()                     # this run's execution, or the no-op
    with tel.step_span("plan", key="plan:1", attempt=1):
        ...                                       # one executed attempt
    span = tel.model_span("openai", "gpt-4o", request=request_dict)
    span.response(meta, response_dict)            # or span.end(error)
    with tel.tool_span("get_weather", call_id):
        ...
    tel.event("my.event", {"attr": 1})            # an event on the run span

Call these only for work that executes: a call answered from the journal must emit nothing.

Files: :mod:`.hub` (providers, once per App), :mod:`.tracing` (spans), :mod:`.metrics`
(instruments), :mod:`.genai` (GenAI attributes), :mod:`.logs` (the logging filter),
:mod:`.noop` (the stand-in). Only this module and :mod:`.noop`, :mod:`.logs` load without
the extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .logs import RunContextFilter
from .noop import NOOP, NoopTelemetry

if TYPE_CHECKING:
    from ..app import App
    from ..context import RunState
    from .tracing import RunTelemetry

__all__ = ["NOOP", "RunContextFilter", "current", "executing", "execution"]

#: App._telemetry before the first execution resolved it
_UNRESOLVED = None
#: App._telemetry when nothing is ever observed (tracing off, or the extra missing)
OFF = False


def current() -> RunTelemetry | NoopTelemetry:
    """The telemetry of the run executing in this thread or task, or the no-op."""
    from ..context import current_run

    state = current_run()
    return NOOP if state is None else state.telemetry


@contextmanager
def executing(span: Any) -> Iterator[None]:
    """``span`` (a step span) is current while the body runs. An exception marks it failed
    (``error.type``); outlast's control flow (a hibernating wait, a cancel: BaseExceptions)
    ends it plainly, since the unit did not fail: it runs again when the run resumes."""
    span.__enter__()
    try:
        yield
    except Exception as exc:
        span.__exit__(type(exc), exc, exc.__traceback__)
        raise
    except BaseException:
        span.__exit__(None, None, None)
        raise
    span.__exit__(None, None, None)


def execution(app: App, state: RunState) -> RunTelemetry | NoopTelemetry:
    """Start the telemetry of one execution (the run span), or return the no-op.

    Whether the ``otel`` extra is importable is decided once per App; whether a provider is
    configured, once per execution."""
    hub: Any = app._telemetry
    if hub is OFF:
        return NOOP
    if hub is _UNRESOLVED:
        hub = app._telemetry = _resolve(app)
        if hub is OFF:
            return NOOP
    return hub.start(state)  # type: ignore[no-any-return]


def _resolve(app: App) -> Any:
    if not app.tracing:
        return OFF
    try:
        from .hub import Hub, content_from_env
    except ImportError:  # the otel extra is not installed
        return OFF
    return Hub(app, app.trace_content or content_from_env())
