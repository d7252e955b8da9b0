"""The telemetry of one observed execution: its run span, step, model and tool spans, events.

Made by :meth:`outlast.telemetry.hub.Hub.start` when the application configured an
OpenTelemetry provider; otherwise :data:`~outlast.telemetry.noop.NOOP` stands in. Spans are
made only for work this execution performs: a call answered from the journal reaches none of
these hooks (it is counted in ``outlast.replayed_calls`` on the run span when it ends).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .genai import error_type, request_attributes, response_attributes

if TYPE_CHECKING:
    from ..context import RunState
    from ..durable import DurableCall
    from ..engine import Outcome
    from .metrics import Instruments

__all__ = ["ModelSpan", "RunTelemetry", "StepSpan", "format_context", "parse_context"]

#: journal kinds reported as span events on the run span when they execute (steps and model
#: calls have spans of their own)
EVENT_KINDS = frozenset({"timer", "deadline", "event", "child", "child_result", "snapshot"})


def format_context(ctx: SpanContext) -> str:
    """A span context as a W3C ``traceparent`` (what the run's record stores)."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_context(text: str | None) -> SpanContext | None:
    """The span context of a stored ``traceparent``, or None when absent or malformed."""
    parts = (text or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def _fail(span: trace.Span, exc: BaseException, content: bool) -> str:
    kind = error_type(exc)
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))
    if content:  # exception messages may carry payloads: only when content is opted in
        span.record_exception(exc)
    return kind


class StepSpan:
    """One executed attempt of a step (or tool): current while the attempt runs."""

    __slots__ = ("_owner", "_span", "_name", "_token", "_started")

    def __init__(self, owner: RunTelemetry, span: trace.Span, name: str) -> None:
        self._owner = owner
        self._span = span
        self._name = name
        self._token: object = None
        self._started = 0.0

    def __enter__(self) -> StepSpan:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        elapsed = time.perf_counter() - self._started
        otel_context.detach(self._token)  # type: ignore[arg-type]
        self.end(exc, elapsed)

    def response(self, meta: dict[str, Any], payload: Any = None) -> None:
        """Steps have no model response (the no-op span's surface)."""

    def end(self, error: BaseException | None = None, elapsed: float | None = None) -> None:
        attrs: dict[str, Any] = {"outlast.step.name": self._name}
        if error is not None:
            attrs["error.type"] = _fail(self._span, error, self._owner.content)
        self._span.end()
        metrics = self._owner.metrics
        if metrics is not None and elapsed is not None:
            metrics.step_duration.record(elapsed, attrs)

    def __repr__(self) -> str:
        return f"<StepSpan {self._name!r}>"


class ModelSpan:
    """One attempt of a model call (a CLIENT span): ended by :meth:`response` with what the
    model answered, or by :meth:`end` with the attempt's error. A stream's span ends when the
    stream has been read to its end (or broke), or by :meth:`abandoned` when it was closed or
    dropped before."""

    __slots__ = ("_owner", "_span", "_model", "_started", "_ended")

    def __init__(self, owner: RunTelemetry, span: trace.Span, model: str) -> None:
        self._owner = owner
        self._span = span
        self._model = model
        self._started = time.perf_counter()
        self._ended = False

    def __enter__(self) -> ModelSpan:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.end(exc)

    def response(self, meta: dict[str, Any], payload: Any = None) -> None:
        """End the span with the recorded call's figures: ``meta`` as journaled (model,
        input/output tokens, cost), ``payload`` the response dict or stream events."""
        if self._ended:
            return
        attrs = response_attributes(meta, payload, self._owner.content)
        self._span.set_attributes(attrs)
        metrics = self._owner.metrics
        if metrics is not None:
            model = {
                "gen_ai.request.model": self._model,
                "gen_ai.response.model": attrs.get("gen_ai.response.model", self._model),
            }
            for kind, key in (
                ("input", "gen_ai.usage.input_tokens"),
                ("output", "gen_ai.usage.output_tokens"),
            ):
                if key in attrs:
                    metrics.tokens.record(attrs[key], {**model, "gen_ai.token.type": kind})
            if isinstance(meta.get("cost"), int | float) and meta["cost"]:
                metrics.cost.add(meta["cost"], model)
        self.end()

    def abandoned(self, meta: dict[str, Any], payload: Any, events: int) -> None:
        """End the span of a stream closed or dropped before its end, with what was seen
        (``meta`` and ``payload`` as for :meth:`response`; ``events`` read). Not an error:
        the caller stopped reading. Its tokens, when the usage was seen, count as spent."""
        if self._ended:
            return
        self._span.set_attributes(
            {"outlast.stream.abandoned": True, "outlast.stream.events": events}
        )
        self.response(meta, payload)

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        attrs: dict[str, Any] = {"gen_ai.request.model": self._model}
        if error is not None:
            attrs["error.type"] = _fail(self._span, error, self._owner.content)
        self._span.end()
        if self._owner.metrics is not None:
            self._owner.metrics.model_duration.record(time.perf_counter() - self._started, attrs)


class RunTelemetry:
    """The telemetry of one execution of a run (see :mod:`outlast.telemetry` for the hook
    surface). The run span is current while the workflow body runs."""

    active = True

    def __init__(
        self,
        state: RunState,
        tracer: trace.Tracer | None,
        metrics: Instruments | None,
        content: bool,
    ) -> None:
        self.state = state
        self.tracer = tracer or trace.NoOpTracer()
        self.metrics = metrics
        self.content = content
        self._workflow = state.run.workflow
        self._token: object = None
        self._done = False
        run = state.run
        links = []
        parent: otel_context.Context | None = None
        #: the traceparent to store with the run (its first traced execution), else None
        self.first_context: str | None = None
        first = parse_context(run.trace_context)
        if first is not None:
            links.append(Link(first, {"outlast.link": "first_execution"}))
        else:
            parent = self._anchor()
        self.span = self.tracer.start_span(
            f"invoke_workflow {self._workflow}",
            context=parent,
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={
                "gen_ai.operation.name": "invoke_workflow",
                "gen_ai.workflow.name": self._workflow,
                "outlast.run.id": run.run_id,
                "outlast.run.recoveries": run.recoveries,
                "outlast.run.epoch": run.epoch,
            },
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        self._recovering = run.recoveries > _seen(run.stats)
        if metrics is not None:
            self._count_start(metrics)

    def _anchor(self) -> otel_context.Context | None:
        """The run's anchor, on its first traced execution: a ``start_workflow {workflow}``
        span from the run's creation (its first claim; else now) to now, ended at once so
        the exporter gets it while the run executes. The execution's span is its child, and
        later executions link to it: a link target that exists even if this process is
        SIGKILLed before its run span ends. None when the tracer does not record."""
        run = self.state.run
        start = int(run.created_at * 1e9) if run.epoch == 1 else None
        anchor = self.tracer.start_span(
            f"start_workflow {self._workflow}",
            kind=SpanKind.INTERNAL,
            start_time=start,
            attributes={"gen_ai.workflow.name": self._workflow, "outlast.run.id": run.run_id},
        )
        if not anchor.is_recording():
            return None
        anchor.end()
        self.first_context = format_context(anchor.get_span_context())
        return trace.set_span_in_context(anchor)

    def _count_start(self, metrics: Instruments) -> None:
        run, attrs = self.state.run, {"gen_ai.workflow.name": self._workflow}
        if run.epoch == 1:  # its first claim: created claimed, or claimed from pending
            metrics.runs_started.add(1, attrs)
            if run.started_at is not None:
                metrics.queue_time.record(max(0.0, run.started_at - run.created_at), attrs)
        if self._recovering:
            metrics.runs_recovered.add(1, attrs)

    # -- the hook surface ------------------------------------------------------------------------

    def step_span(
        self, name: str, key: str, attempt: int, kind: str = "step", tool: str | None = None
    ) -> StepSpan:
        """A span for one executed attempt of step ``name`` (use it as a context manager:
        it is current while the attempt runs, and records ``error.type`` if it raises).
        ``tool``: the step runs a model's tool call: the span is ``execute_tool {tool}``."""
        attrs: dict[str, Any] = {
            "outlast.step.key": key,
            "outlast.step.attempt": attempt,
            "outlast.step.kind": kind,
        }
        if tool is not None:
            attrs.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool})
            call_id = key[len(name) + 1 :] if key.startswith(name + ":") else key
            attrs["gen_ai.tool.call.id"] = call_id
            span_name = f"execute_tool {tool}"
        else:
            span_name = f"step {name}"
        return StepSpan(self, self.tracer.start_span(span_name, attributes=attrs), name)

    def tool_span(self, name: str, call_id: str | None = None) -> StepSpan:
        """An ``execute_tool {name}`` span for a tool run outside outlast's Tools helper."""
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        if call_id is not None:
            attrs["gen_ai.tool.call.id"] = call_id
        return StepSpan(
            self, self.tracer.start_span(f"execute_tool {name}", attributes=attrs), name
        )

    def model_span(
        self,
        provider: str,
        model: str,
        *,
        operation: str = "chat",
        request: dict[str, Any] | None = None,
    ) -> ModelSpan:
        """A CLIENT span for one attempt of a model call, started now (not made current)."""
        attrs = request_attributes(provider, model, operation, request, self.content)
        span = self.tracer.start_span(
            f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attrs
        )
        return ModelSpan(self, span, model)

    def event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        """A span event on the run span."""
        self.span.add_event(name, attributes or {})

    def recorded(self, call: DurableCall, status: str) -> None:
        """A durable call executed here was journaled: timers, event waits, children,
        snapshots and at-most-once intents become events on the run span."""
        if status == "intent":
            self.span.add_event(
                "outlast.intent", {"outlast.step.name": call.name, "outlast.step.key": call.key}
            )
        elif call.kind in EVENT_KINDS:
            self.span.add_event(
                f"outlast.{call.kind}",
                {
                    "outlast.call.name": call.name,
                    "outlast.call.key": call.key,
                    "outlast.call.status": status,
                },
            )

    def finish(self, outcome: Outcome | None, error: BaseException | None = None) -> None:
        """End the run span with the execution's outcome (once; None: an error escaped)."""
        if self._done:
            return
        self._done = True
        state, span = self.state, self.span
        replayed = len(state.journal.replayed)
        status = outcome.status if outcome is not None else "interrupted"
        span.set_attributes({"outlast.replayed_calls": replayed, "outlast.run.outcome": status})
        if status == "suspended":
            span.add_event("outlast.hibernate", _suspension(error))
        elif status == "paused":
            span.add_event("outlast.pause", {"outlast.step.name": str(getattr(error, "step", ""))})
        failure = outcome.error if outcome is not None and status == "failed" else None
        if status == "interrupted" and error is not None:
            failure = error
        if failure is not None:
            _fail(span, failure, self.content)
        try:
            span.end()
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        self._count_end(status, failure, replayed)

    def _count_end(self, status: str, failure: BaseException | None, replayed: int) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        attrs: dict[str, Any] = {"gen_ai.workflow.name": self._workflow}
        if status == "completed":
            metrics.runs_completed.add(1, attrs)
        elif status == "failed" and failure is not None:
            metrics.runs_failed.add(1, {**attrs, "error.type": error_type(failure)})
        if self._recovering and replayed:
            metrics.saved_steps.add(replayed, attrs)


def _suspension(error: BaseException | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    wake_at = getattr(error, "wake_at", None)
    if isinstance(wake_at, int | float):
        attrs["outlast.wake_at"] = float(wake_at)
    event = getattr(error, "wait_event", None)
    if isinstance(event, str):
        attrs["outlast.wait_event"] = event
    return attrs


def _seen(stats: str | None) -> int:
    import json

    return int(json.loads(stats).get("recoveries_seen", 0)) if stats else 0
