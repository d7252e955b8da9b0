"""outlast's metrics, on the meter of the application's global MeterProvider.

Created once per App and meter provider (:class:`~outlast.telemetry.hub.Hub`). Every
instrument counts work this process executed; nothing is counted for replayed calls.

==================================  =========  ===============================================
name                                unit       meaning (attributes)
==================================  =========  ===============================================
``outlast.runs.started``            {run}      runs whose first execution began (workflow)
``outlast.runs.completed``          {run}      runs that completed here (workflow)
``outlast.runs.failed``             {run}      runs that failed here (workflow, error.type)
``outlast.runs.recovered``          {run}      executions that took over a crashed run
``outlast.recovery.saved_steps``    {call}     calls a recovery served from the journal
``outlast.run.queue_time``          s          enqueue to first start (workflow)
``outlast.step.duration``           s          one executed attempt of a step (step, error.type)
``gen_ai.client.token.usage``       {token}    tokens per model call (model, gen_ai.token.type)
``gen_ai.client.operation.duration`` s         one model call attempt (model, error.type)
``outlast.llm.cost``                USD        estimated cost of model calls (model)
``outlast.runs.current``            {run}      runs in the store now, by queue and status
                                               (pending, running, suspended; observed)
==================================  =========  ===============================================
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Instruments"]

log = logging.getLogger("outlast.telemetry")

_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
_TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]


class Instruments:
    """The instruments of one meter."""

    def __init__(self, meter: Meter, app: App) -> None:
        self.runs_started = meter.create_counter(
            "outlast.runs.started", "{run}", "Runs whose first execution began"
        )
        self.runs_completed = meter.create_counter(
            "outlast.runs.completed", "{run}", "Runs that completed"
        )
        self.runs_failed = meter.create_counter("outlast.runs.failed", "{run}", "Runs that failed")
        self.runs_recovered = meter.create_counter(
            "outlast.runs.recovered", "{run}", "Executions that took over a crashed run"
        )
        self.saved_steps = meter.create_counter(
            "outlast.recovery.saved_steps",
            "{call}",
            "Durable calls a recovery answered from the journal instead of executing them",
        )
        self.queue_time = meter.create_histogram(
            "outlast.run.queue_time",
            "s",
            "Time from a run's creation to its first start",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.step_duration = meter.create_histogram(
            "outlast.step.duration",
            "s",
            "Duration of one executed attempt of a step",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used per model call",
            explicit_bucket_boundaries_advisory=_TOKENS,
        )
        self.model_duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            "s",
            "Duration of one model call attempt",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.cost = meter.create_counter(
            "outlast.llm.cost", "USD", "Estimated cost of model calls (outlast's price table)"
        )
        ref = weakref.ref(app)
        seen: set[str] = set()  # queues observed before: 0 once their runs have all ended
        meter.create_observable_up_down_counter(
            "outlast.runs.current",
            [lambda options: _current(ref, seen, options)],
            "{run}",
            "Runs in the store now, by queue and status",
        )


def _current(
    ref: weakref.ref[App], seen: set[str], options: CallbackOptions
) -> Iterable[Observation]:
    """Read at each collection: one query (the store's ``queue_stats``, live runs only); a
    queue seen before and now without live runs is observed as 0, not left out."""
    app = ref()
    if app is None or app._store is None:
        return []
    try:
        stats = app._store.queue_stats()
    except Exception as exc:  # a collection must never fail on a store that is away
        log.debug("outlast.runs.current not observed: %s", exc)
        return []
    counts = {q.name: (q.pending, q.running, q.suspended) for q in stats}
    seen.update(counts)
    out: list[Observation] = []
    for name in sorted(seen):
        for status, value in zip(("pending", "running", "suspended"), counts.get(name, (0, 0, 0)),
                                 strict=True):
            attrs: dict[str, Any] = {"outlast.queue": name, "outlast.run.status": status}
            out.append(Observation(value, attrs))
    return out
