"""What opening a 10,000-step run costs the dashboard's process, without HTTP.

    python bench/ui_decode.py [--steps N] [--rounds N]

Times ``outlast.ui.data.run_detail`` for every step of one run plus writing it as JSON (what
``GET /api/runs/{id}?limit=10000`` does), in CPU time of this process (``time.process_time``,
steadier than wall time on a shared machine): with an empty step cache each call (every entry
decoded and viewed) and with the dashboard's cache warm, alternating, median per round.
Run against outlast 0.1.x/the commit before the cache (no ``outlast.ui.steps``), it times that
version's call (``run_detail(store, ...)``, the whole answer through the JSON view).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import outlast
from outlast import jsonview
from outlast.ui import data

try:
    from outlast.ui.steps import StepCache
except ImportError:  # before the cache: time that version's call
    StepCache = None  # type: ignore[assignment,misc]

app = outlast.App()


@app.step
def tick(i: int) -> int:
    return i


@app.workflow
def long(ctx: outlast.Context, n: int) -> int:
    return sum(tick(i) for i in range(n))


def cpu_ms(cache: Any, steps: int) -> float:
    started = time.process_time()
    if StepCache is None:
        found = jsonview.to_json(data.run_detail(app.store, "big", limit=steps))  # type: ignore[arg-type]
    else:
        found = data.run_detail(app, "big", limit=steps, cache=cache)
    json.dumps(found, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (time.process_time() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    app.use(f"sqlite:///{Path(tempfile.mkdtemp(prefix='outlast-ui-decode-')) / 'runs.db'}")
    app.run(long, args.steps, run_id="big")
    warm = StepCache() if StepCache is not None else None
    cpu_ms(warm, args.steps)
    cold, hot = [], []
    for _ in range(args.rounds):
        cold.append(statistics.median(cpu_ms(None, args.steps) for _ in range(5)))
        if warm is not None:
            hot.append(statistics.median(cpu_ms(warm, args.steps) for _ in range(5)))
    print(f"{args.steps:,} steps, CPU ms per call (median of 5, per round):")
    print("nothing cached:", " ".join(f"{t:.0f}" for t in cold))
    if hot:
        print("cache warm:    ", " ".join(f"{t:.0f}" for t in hot))
    app.close()


if __name__ == "__main__":
    main()
