"""Case 6: worker fleet on PostgreSQL, from bench/fleet.py's functions (issue 3).

Throughput of 1, 2 and 4 worker processes (no-op steps, and 50 ms steps), and the time from a
worker's SIGKILL mid-step to another worker starting that step again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from . import PG, bench_module, result, unavailable

NAME, TITLE = "fleet", "Fleet"
PARAMS = {  # runs, worker counts, step lengths, lease, takeover kinds (other host?)
    "tiny": (6, [1], [0.0], 1.0, [False]),
    "quick": (150, [1, 2, 4], [0.0, 0.05], 2.0, [True, False]),
    "full": (1000, [1, 2, 4], [0.0, 0.05], 10.0, [True, False]),
}


def run(size: str = "full") -> dict[str, Any]:
    """Runs/s per worker count and step length; takeover seconds."""
    fl = bench_module("fleet")
    if isinstance(fl, str):
        return unavailable(NAME, TITLE, fl)
    runs, counts, lengths, lease, kinds = PARAMS[size]
    out = result(NAME, TITLE, settings=(
        f"{runs} runs of 3 steps per measurement, workers of concurrency 4 started idle first "
        f"(start-up not timed), a fresh schema each; takeover with lease {lease:g} s "
        "(bench/fleet.py)."))
    rows, series = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for step in lengths:
            label = "no-op steps" if step == 0 else f"{step * 1000:.0f} ms steps"
            for w in counts:
                rate = fl.throughput(PG, w, runs, step, Path(tmp))
                rows.append([label, w, f"{rate:,.1f}", f"{3 * rate:,.1f}"])
                series.setdefault(label, []).append([w, rate])
                out["headline"][f"runs/s, {w} worker(s), {label}"] = round(rate, 1)
        takeovers = []
        for other in kinds:
            seconds = fl.takeover(PG, lease, other, Path(tmp))
            where = "another host (lease expiry)" if other else "this host (dead pid detected)"
            takeovers.append([where, f"{seconds:.2f}", f"{lease + 1:g}" if other else ""])
            out["headline"][f"takeover s, {where}"] = round(seconds, 2)
    out["tables"].append({"title": "Throughput", "columns": ["steps", "workers", "runs/s", "steps/s"],
                          "rows": rows})
    out["tables"].append({"title": "Takeover after SIGKILL mid-step", "columns": [
        "killed worker on", "seconds to the step restarting elsewhere", "target (lease + 1 s)"],
        "rows": takeovers})
    out["plots"].append({"file": "fleet_throughput.png", "title": "Fleet throughput (PostgreSQL)",
                         "kind": "lines", "xlabel": "worker processes", "ylabel": "runs per second",
                         "series": series})
    return out
