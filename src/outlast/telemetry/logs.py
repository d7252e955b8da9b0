"""A logging filter that puts the executing run on every record, so logs join traces.

::

    handler = logging.StreamHandler()
    handler.addFilter(outlast.telemetry.RunContextFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(run_id)s %(workflow)s %(step)s %(trace_id)s] %(message)s"))

Attributes set on each record (empty strings outside a run, so format strings never fail):
``run_id``, ``workflow``, ``step`` (the step executing, else empty), ``step_attempt``, and,
when the ``otel`` extra is installed and a span is recording, ``trace_id`` and ``span_id``
(hex, as OpenTelemetry's own logging instrumentation names them: ``otelTraceID`` and
``otelSpanID`` are set too). The filter never drops a record.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["RunContextFilter"]


def _span_reader() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_current_span


class RunContextFilter(logging.Filter):
    """Adds ``run_id``, ``workflow``, ``step``, ``step_attempt``, ``trace_id`` and ``span_id``
    to log records emitted inside a run (see the module docstring)."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._current_span = _span_reader()

    def filter(self, record: logging.LogRecord) -> bool:
        from ..context import current_run, current_step

        state, step = current_run(), current_step()
        record.run_id = step.run_id if step is not None else state.run_id if state else ""
        record.workflow = state.run.workflow if state is not None else ""
        record.step = step.name if step is not None else ""
        record.step_attempt = step.attempt if step is not None else ""
        trace_id = span_id = ""
        if self._current_span is not None:
            ctx = self._current_span().get_span_context()
            if ctx.is_valid:
                trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
        record.trace_id = record.otelTraceID = trace_id
        record.span_id = record.otelSpanID = span_id
        return True
