"""Case 4 comes from another engineer's script (bench/hibernation.py).

It runs as a child process (it starts its own worker) and their printed report is
kept verbatim; known figures are picked out of it for the tables and headline.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

from . import BENCH, result, unavailable


def run_script(script: str, args: list[str], timeout: float) -> tuple[str | None, str]:
    """(stdout, "") when the script ran, else (None, why)."""
    path = BENCH / script
    if not path.exists():
        return None, f"bench/{script} does not exist yet (its capability is not built)"
    try:
        proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                              timeout=timeout, cwd=str(BENCH.parent))
    except subprocess.TimeoutExpired:
        return None, f"bench/{script} {' '.join(args)} did not finish within {timeout:.0f} s"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"bench/{script} {' '.join(args)} failed: {tail}"
    return proc.stdout, ""


def _numbers(pattern: str, text: str) -> list[float]:
    m = re.search(pattern, text)
    return [float(g.replace(",", "")) for g in m.groups()] if m else []


HIBERNATION_RUNS = {"tiny": 20, "quick": 1000, "full": 10000}


def hibernation(size: str = "full") -> dict[str, Any]:
    """Case 4: memory and threads of one worker holding N suspended runs; time to wake them."""
    name, title = "hibernation", "Hibernation"
    n = HIBERNATION_RUNS[size]
    text, why = run_script("hibernation.py", ["--runs", str(n)], timeout=900)
    if text is None:
        return unavailable(name, title, why)
    out = result(name, title, settings=f"bench/hibernation.py --runs {n}: a real worker process "
                 "(concurrency 8) on a SQLite file; runs wait on an event (hibernate_after=1 s).",
                 verbatim=text)
    idle = _numbers(r"idle worker:\s+RSS\s+([\d.]+) MB, (\d+) threads", text)
    held = _numbers(r"runs suspended: RSS\s+([\d.]+) MB, (\d+) threads", text)
    wake = _numbers(r"send \d+ events: ([\d.]+) s; all completed ([\d.]+) s", text)
    if idle and held:
        out["tables"].append({"title": f"{n:,} suspended runs", "columns": [
            "", "RSS MB", "threads"], "rows": [["idle worker", idle[0], int(idle[1])],
                                               [f"{n:,} runs suspended", held[0], int(held[1])]]})
        out["headline"]["MB over idle"] = round(held[0] - idle[0], 1)
        out["headline"]["threads over idle"] = int(held[1] - idle[1])
    if wake:
        out["headline"]["wake all s (send + complete)"] = round(sum(wake), 1)
    return out


