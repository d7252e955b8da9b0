"""Case 3: time from process start to the first new step, by journal length (bench/resume_cost.py)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from typing import Any

from . import bench_module, result, unavailable

NAME = "resume"
TITLE = "Resume cost"
PARAMS = {"tiny": ([20], 1), "quick": ([1000, 10000], 3), "full": ([1000, 10000, 100000], 5)}
TARGET = 0.3  # seconds for 10,000 journaled steps


def _bare_interpreter(repeats: int) -> float:
    """Median seconds for ``python -c pass``: the floor under every figure here."""
    times = []
    for _ in range(repeats):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - t)
    return sorted(times)[len(times) // 2]


def run(size: str = "full") -> dict[str, Any]:
    """Median/min/max seconds to the first new step, with the interpreter+import share."""
    rc = bench_module("resume_cost")
    if isinstance(rc, str):
        return unavailable(NAME, TITLE, rc)
    sizes, repeats = PARAMS[size]
    with tempfile.TemporaryDirectory() as folder:
        rows = rc.measure(sizes, repeats, folder)
    bare = _bare_interpreter(repeats)
    out = result(NAME, TITLE, settings=(
        f"SQLite (WAL, synchronous=normal); a run of N tiny steps killed (SIGKILL) at step N+1; "
        f"a fresh `python` process resumes it, {repeats} times per N; times from just before "
        f"the parent spawns the child to the start of step N+1 (CLOCK_MONOTONIC). A bare "
        f"`python -c pass` takes {bare * 1000:.0f} ms here."))
    out["tables"].append({
        "title": "Process start to first new step",
        "columns": ["journaled steps", "ms, median (min-max)", "of which interpreter + import outlast",
                    "replay + takeover", "journal built in"],
        "rows": [[f"{r['steps']:,}", f"{r['median_s'] * 1000:,.0f} ({r['min_s'] * 1000:,.0f}-"
                  f"{r['max_s'] * 1000:,.0f})", f"{r['import_s'] * 1000:,.0f} ms",
                  f"{(r['median_s'] - r['import_s']) * 1000:,.0f} ms", f"{r['build_s']:.1f} s"]
                 for r in rows]})
    out["plots"].append({"file": "resume_cost.png", "title": "Process start to first new step",
                         "kind": "lines", "xlabel": "journaled steps (log)", "ylabel": "seconds",
                         "logx": True, "series": {
                             "total": [[r["steps"], r["median_s"]] for r in rows],
                             "replay + takeover": [[r["steps"], r["median_s"] - r["import_s"]] for r in rows],
                         }})
    for r in rows:
        out["headline"][f"resume s at {r['steps']} steps"] = round(r["median_s"], 3)
    out["headline"]["bare interpreter s"] = round(bare, 3)
    return out
