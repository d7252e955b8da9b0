"""Case 5: the compound-failure experiment (bench/compound_failure.py)."""

from __future__ import annotations

import tempfile
from typing import Any

from . import bench_module, result, unavailable

NAME = "compound"
TITLE = "Compound failure"
PARAMS = {"tiny": 2, "quick": 12, "full": 100}
PROBABILITIES = [0.01, 0.05]


def run(size: str = "full") -> dict[str, Any]:
    """Completion and wasted step executions, retry-from-scratch vs outlast."""
    cf = bench_module("compound_failure")
    if isinstance(cf, str):
        return unavailable(NAME, TITLE, cf)
    runs = PARAMS[size]
    with tempfile.TemporaryDirectory() as folder:
        rows = cf.experiment(runs, PROBABILITIES, seed=7, folder=folder)
    out = result(NAME, TITLE, settings=(
        f"{cf.STEPS} steps of {cf.SLEEP * 1000:.0f} ms sleep; {runs} runs per probability and "
        f"strategy (interleaved), each run retried in a new process until done (at most "
        f"{cf.MAX_ATTEMPTS} processes); crashes are real SIGKILLs decided by a seeded hash of "
        "(run, n-th step execution), so both strategies face the same crash schedule; outlast "
        "on SQLite (WAL, synchronous=normal)."))
    out["tables"].append({
        "title": "Completion and waste",
        "columns": ["p(kill) per step", "strategy", "first-try completion (arithmetic)",
                    "completed", "crashes", "wasted step executions", "wasted per crash (worst run)"],
        "rows": [[f"{r['p']:.0%}", r["strategy"], f"{r['first_try']:.0%} ({r['expected_first_try']:.0%})",
                  f"{r['completed']:.0%}", r["crashes"], r["wasted"],
                  f"{r['wasted_per_crash']:.2f} ({r['worst_wasted_per_crash']:.2f})"] for r in rows]})
    series: dict[str, list[list[Any]]] = {}
    for r in rows:
        series.setdefault(r["strategy"], []).append([f"p={r['p']:.0%}", r["wasted"] / r["runs"]])
        out["headline"][f"{r['strategy']} p={r['p']}"] = {
            "first_try": round(r["first_try"], 3), "completed": round(r["completed"], 3),
            "wasted_per_crash": round(r["wasted_per_crash"], 2)}
    out["plots"].append({"file": "compound_failure.png", "title": "Wasted step executions per run",
                         "kind": "bars", "xlabel": "", "ylabel": "wasted step executions per run",
                         "series": series})
    return out
