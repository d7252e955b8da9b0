"""Where an App's telemetry comes from: the application's global OpenTelemetry providers.

One :class:`Hub` per App, made the first time the App executes a run with the ``otel`` extra
installed and tracing on. Per execution it checks whether a tracer or meter provider has
been configured (a type check each, no span made) and hands out either a
:class:`~outlast.telemetry.tracing.RunTelemetry` or the shared no-op. outlast never installs
a provider itself.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from .noop import NOOP, NoopTelemetry
from .tracing import RunTelemetry

if TYPE_CHECKING:
    from ..app import App
    from ..context import RunState
    from .metrics import Instruments

__all__ = ["Hub", "content_from_env"]

log = logging.getLogger("outlast.telemetry")

#: the GenAI conventions' opt-in for message content on spans
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

try:  # the API's default provider before one is set (not exported by name)
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _ProxyMeter
except ImportError:  # pragma: no cover - a future API that moved it
    _ProxyMeter = metrics.NoOpMeterProvider  # type: ignore[assignment,misc]

_UNSET_TRACING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_UNSET_METRICS = (_ProxyMeter, metrics.NoOpMeterProvider)

#: providers used instead of the global ones when set (an internal seam: the tests pin an
#: SDK provider here, since a process's global provider can be set only once)
tracer_provider: Any = None
meter_provider: Any = None


def content_from_env() -> bool:
    """True when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` opts in."""
    return os.environ.get(CONTENT_ENV, "").strip().lower() in ("true", "1", "yes")


class Hub:
    """The App's tracer and instruments, made once per configured provider."""

    def __init__(self, app: App, content: bool) -> None:
        import weakref

        from .. import __version__

        self._app = weakref.ref(app)
        self._version = __version__
        self.content = content
        self._tracer_provider: Any = None
        self._tracer: trace.Tracer | None = None
        self._meter_provider: Any = None
        self._instruments: Instruments | None = None

    def tracer(self) -> trace.Tracer | None:
        provider = tracer_provider or trace.get_tracer_provider()
        if isinstance(provider, _UNSET_TRACING):
            return None
        if provider is not self._tracer_provider:
            self._tracer = provider.get_tracer("outlast", self._version)
            self._tracer_provider = provider
        return self._tracer

    def instruments(self) -> Instruments | None:
        provider = meter_provider or metrics.get_meter_provider()
        app = self._app()
        if isinstance(provider, _UNSET_METRICS) or app is None:
            return None
        if provider is not self._meter_provider:
            from .metrics import Instruments

            self._instruments = Instruments(provider.get_meter("outlast", self._version), app)
            self._meter_provider = provider
        return self._instruments

    def start(self, state: RunState) -> RunTelemetry | NoopTelemetry:
        """The telemetry of one execution of ``state``'s run (its run span started)."""
        tracer, instruments = self.tracer(), self.instruments()
        if tracer is None and instruments is None:
            return NOOP
        telemetry = RunTelemetry(state, tracer, instruments, self.content)
        if telemetry.first_context is not None:
            _store_context(state, telemetry.first_context)
        return telemetry


def _store_context(state: RunState, context: str) -> None:
    """Keep the trace context of the run's first traced execution with the run, so later
    executions (other processes, days later) link to it. Best effort: tracing never stops
    a run."""
    from ..errors import LeaseLost, StoreError

    try:
        state.store.set_trace_context(state.run_id, state.epoch, context)
    except (StoreError, LeaseLost) as exc:
        log.debug("run %s: trace context not stored (%s)", state.run_id, exc)
