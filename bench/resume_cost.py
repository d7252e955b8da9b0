"""Resume cost: time from process start to the first new step of a run with N journaled steps.

    python bench/resume_cost.py [--quick] [--sizes 1000,10000]

For each N, a child process runs a workflow of N tiny steps and SIGKILLs itself when step N+1
starts, leaving N steps journaled. Then, several times, the parent notes the time, starts a
fresh child (a real ``python`` process) that resumes the run, and the child reports the
moment step N+1 starts (CLOCK_MONOTONIC is shared by every process on the machine) before
SIGKILLing itself again, so the same journal is resumed each time. The child also reports
when ``import outlast`` finished, splitting interpreter start from replay.
Target: N = 10,000 under 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

START = time.monotonic()

import outlast  # noqa: E402

IMPORTED = time.monotonic()
app = outlast.App(os.environ.get("BENCH_DB_URL"))


@app.step
def tiny(i: int) -> int:
    if i == int(os.environ["BENCH_CRASH_AT"]):
        print(f"first-new-step {time.monotonic()!r} {IMPORTED!r}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return i


@app.workflow
def journaled(ctx: outlast.Context, n: int) -> int:
    for i in range(n + 1):
        tiny(i)
    return n


def _child(url: str, n: int) -> tuple[float, float, float]:
    """Start a resuming child; (process start, import done, first new step) monotonic times."""
    env = dict(os.environ, BENCH_DB_URL=url, BENCH_CRASH_AT=str(n))
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(n)], env=env, capture_output=True, text=True,
        timeout=600,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("first-new-step "):
            _, first, imported = line.split()
            return t0, float(imported), float(first)
    raise RuntimeError(f"resume child for N={n} did not reach step N+1: {proc.stderr[-2000:]}")


def measure(sizes: list[int], repeats: int, folder: str) -> list[dict[str, float]]:
    """Per size: build time and the median/min/max seconds from process start to step N+1."""
    rows = []
    for n in sizes:
        url = f"sqlite:///{folder}/resume-{n}.db"
        t = time.monotonic()
        _child(url, n)  # builds the journal: N steps, killed at step N+1
        build = time.monotonic() - t
        totals, imports = [], []
        for _ in range(repeats):
            t0, imported, first = _child(url, n)
            totals.append(first - t0)
            imports.append(imported - t0)
        rows.append({
            "steps": n, "build_s": build, "median_s": statistics.median(totals),
            "min_s": min(totals), "max_s": max(totals), "import_s": statistics.median(imports),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 steps")
    parser.add_argument("--sizes", default=None, help="comma-separated step counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        app.run(journaled, args.child, run_id="resume")
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [1000, 10000] if args.quick else [1000, 10000, 100000])
    with tempfile.TemporaryDirectory() as folder:
        for row in measure(sizes, args.repeats, folder):
            print(f"N={row['steps']:>7}: {row['median_s'] * 1000:8.1f} ms to the first new step "
                  f"(min {row['min_s'] * 1000:.1f}, max {row['max_s'] * 1000:.1f}; interpreter + "
                  f"import {row['import_s'] * 1000:.1f} ms; journal built in {row['build_s']:.1f} s)")


if __name__ == "__main__":
    main()
