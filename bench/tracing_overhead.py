"""Step overhead of outlast's OpenTelemetry hooks: off, unconfigured, and with an SDK provider.

    python bench/tracing_overhead.py [--quick] [--sync normal|off] [--cpu] [--rounds N]

Needs ``pip install -e '.[otel]' opentelemetry-sdk``. Three configurations, measured side by
side in one process and interleaved round by round (medians reported, with the spread):

- off: ``App(tracing=False)``: the hooks are the shared no-op;
- unconfigured: the ``otel`` extra installed, tracing on, no provider configured (the
  API's default proxy providers): what every user of the extra who has not set up
  OpenTelemetry pays;
- SDK: an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter that drops
  everything, and an SDK ``MeterProvider`` with an in-memory reader: span and metric
  creation, without any export I/O. Passed through outlast's provider seam
  (``outlast.telemetry.hub``), since a process's global provider can be set only once.

``--cpu`` times with the process's CPU time (user + system, all threads: the batch
processor's export thread included) instead of the wall clock. With ``synchronous=normal``
nothing waits for the disk but a checkpoint's fsync, so CPU time is the cost without that
luck and without the other processes of a loaded machine taking the CPU away (the wall
clock on the shared 2-core machine varies by 2x between rounds).

Workloads, per step: one workflow of N no-op steps (``1 x N``), and 200 workflows of 10 no-op
steps (``200 x 10``, per-run costs amortized: the run span, and the one write of the run's
trace context on its first traced execution).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import step_overhead  # noqa: E402  (bench/, beside this script)
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

import outlast  # noqa: E402
from outlast.telemetry import hub  # noqa: E402

CONFIGS = ("off", "unconfigured", "sdk")

#: the clock: the wall clock, or process CPU time (--cpu)
clock = time.perf_counter


class DropExporter(SpanExporter):
    """Exports nothing: the cost measured is making the spans."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def make_app(url: str, tracing: bool) -> tuple[outlast.App, Callable[..., object]]:
    return step_overhead.make_app(url, tracing=tracing)


def measure(url: str, config: str, runs: int, steps: int) -> float:
    """Seconds per step of ``runs`` workflows of ``steps`` no-op steps."""
    sdk = config == "sdk"
    if sdk:
        tracer = TracerProvider()
        tracer.add_span_processor(BatchSpanProcessor(DropExporter()))
        meter = MeterProvider(metric_readers=[InMemoryMetricReader()])
        hub.tracer_provider, hub.meter_provider = tracer, meter
    try:
        app, chain = make_app(url, tracing=config != "off")
        app.run(chain, 1)  # open and migrate the store outside the timing
        if sdk:
            tracer.force_flush()  # the warm-up run's spans, exported outside the timing
        start = clock()
        for _ in range(runs):
            app.run(chain, steps)
        if sdk:
            tracer.force_flush()  # the export of this workload's spans counts
        elapsed = clock() - start
        app.close()
    finally:
        if sdk:
            hub.tracer_provider = hub.meter_provider = None
            tracer.shutdown()
            meter.shutdown()
    return elapsed / (runs * steps)


def fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med * 1e6:7.1f} us  (min {min(values) * 1e6:.1f}, max {max(values) * 1e6:.1f})"


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    parser.add_argument("--sync", default="normal", choices=("normal", "off"))
    parser.add_argument("--cpu", action="store_true", help="time with process CPU time")
    parser.add_argument("--rounds", type=int, help="rounds (default 7, 3 with --quick)")
    args = parser.parse_args(argv)
    global clock
    clock = time.process_time if args.cpu else time.perf_counter
    rounds, n, many = (3, 500, 50) if args.quick else (7, 3000, 200)
    rounds = args.rounds or rounds
    shapes = {f"1 x {n}": (1, n), f"{many} x 10": (many, 10)}
    results = {(s, c): [] for s in shapes for c in CONFIGS}  # type: dict[tuple[str, str], list[float]]
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            for shape, (runs, steps) in shapes.items():
                order = CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS))
                for config in order:
                    url = f"sqlite:///{tmp}/{config}-{runs}.db?synchronous={args.sync}"
                    results[shape, config].append(measure(url, config, runs, steps))
    timed = "process CPU time" if args.cpu else "wall clock"
    print(
        f"SQLite, WAL, synchronous={args.sync}, {timed}  "
        f"({rounds} rounds, interleaved, medians per step)"
    )
    out: dict[str, dict[str, float]] = {}
    for shape in shapes:
        print(f"\n  {shape}")
        base = statistics.median(results[shape, "off"])
        out[shape] = {}
        for config in CONFIGS:
            med = statistics.median(results[shape, config])
            out[shape][config] = med
            print(f"    {config:<13} {fmt(results[shape, config])}   {med / base:5.2f}x off")
    return out


if __name__ == "__main__":
    main()
