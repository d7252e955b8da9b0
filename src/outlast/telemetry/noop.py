"""The telemetry of an execution nobody observes: every hook does nothing, cheaply.

One shared instance (:data:`NOOP`) stands in whenever tracing is off (``App(tracing=False)``),
the ``otel`` extra is not installed, or the application configured no OpenTelemetry provider.
The choice is made once per execution (:func:`outlast.telemetry.execution`), so the per-step
cost is one method call returning a shared context manager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..durable import DurableCall
    from ..engine import Outcome

__all__ = ["NOOP", "NoopSpan", "NoopTelemetry"]


class NoopSpan:
    """A span that records nothing; a context manager, like the real ones."""

    __slots__ = ()

    def __enter__(self) -> NoopSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def response(self, meta: dict[str, Any], payload: Any = None) -> None:
        """What a model answered (see :meth:`outlast.telemetry.tracing.ModelSpan.response`)."""

    def end(self, error: BaseException | None = None) -> None:
        """End the span (with ``error``, the attempt failed)."""

    def abandoned(self, meta: dict[str, Any], payload: Any, events: int) -> None:
        """A stream left before its end (see :meth:`ModelSpan.abandoned`)."""


_SPAN = NoopSpan()


class NoopTelemetry:
    """The hook surface of :class:`~outlast.telemetry.tracing.RunTelemetry`, doing nothing."""

    __slots__ = ()

    #: False: nothing is observed (callers may skip preparing attributes)
    active = False

    def step_span(
        self, name: str, key: str, attempt: int, kind: str = "step", tool: str | None = None
    ) -> NoopSpan:
        return _SPAN

    def model_span(
        self,
        provider: str,
        model: str,
        *,
        operation: str = "chat",
        request: dict[str, Any] | None = None,
    ) -> NoopSpan:
        return _SPAN

    def tool_span(self, name: str, call_id: str | None = None) -> NoopSpan:
        return _SPAN

    def event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        return None

    def recorded(self, call: DurableCall, status: str) -> None:
        return None

    def finish(self, outcome: Outcome | None, error: BaseException | None = None) -> None:
        return None


NOOP = NoopTelemetry()
