"""Compound failure: a 17-step agent whose process is SIGKILLed during a step with probability p.

    python bench/compound_failure.py [--quick] [--runs 100] [--p 0.01,0.05]

Two strategies face the same crash schedule:
- scratch: a plain script; after a crash the whole script is started again from step 1;
- outlast: the same steps as a workflow; after a crash the run is started again and resumes
  from its journal (completed steps return their recorded results).

The crash schedule is decided inside the child, deterministically: the k-th step execution of
run r (counted across every process of that run) is killed when
``sha256(seed, r, k) < p``. The parent passes k's starting value to each new process and counts
the executions the child announces, so both strategies draw from the same sequence. A killed
step is SIGKILLed after its sleep, before it returns. Each run gets at most ``MAX_ATTEMPTS``
processes.

Reported per p and strategy: first-try completion, completion within the attempt cap, step
executions beyond the 17 needed (wasted), per crash on average and in the worst run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time

STEPS = 17
MAX_ATTEMPTS = 40
SLEEP = 0.002


def doomed(seed: int, run: int, k: int, p: float) -> bool:
    """Whether the k-th step execution of run ``run`` is killed (the shared crash schedule)."""
    digest = hashlib.sha256(f"{seed}:{run}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < p


class _Schedule:
    """The child's view of the schedule: counts its step executions from the parent's offset."""

    def __init__(self) -> None:
        self.seed = int(os.environ["BENCH_SEED"])
        self.run = int(os.environ["BENCH_RUN"])
        self.k = int(os.environ["BENCH_K"])
        self.p = float(os.environ["BENCH_P"])

    def execute(self, step: int) -> int:
        print(f"exec {step}", flush=True)
        time.sleep(SLEEP)
        self.k += 1
        if doomed(self.seed, self.run, self.k - 1, self.p):
            os.kill(os.getpid(), signal.SIGKILL)
        return step


def child_scratch() -> None:
    schedule = _Schedule()
    for step in range(STEPS):
        schedule.execute(step)
    print("done", flush=True)


def child_outlast() -> None:
    import outlast

    schedule = _Schedule()
    app = outlast.App(os.environ["BENCH_DB_URL"])

    @app.step
    def agent_step(i: int) -> int:
        return schedule.execute(i)

    @app.workflow
    def agent(ctx: outlast.Context) -> int:
        return sum(agent_step(i) for i in range(STEPS))

    app.run(agent, run_id=f"run-{schedule.run}")
    print("done", flush=True)


def run_one(strategy: str, run: int, p: float, seed: int, url: str) -> dict[str, int]:
    """Drive one run to completion (or the attempt cap); counts of attempts and executions."""
    k = 0
    executed: list[int] = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        env = dict(os.environ, BENCH_SEED=str(seed), BENCH_RUN=str(run), BENCH_K=str(k),
                   BENCH_P=str(p), BENCH_DB_URL=url)
        proc = subprocess.run([sys.executable, __file__, "--child", strategy], env=env,
                              capture_output=True, text=True, timeout=120)
        lines = proc.stdout.splitlines()
        steps = [int(line.split()[1]) for line in lines if line.startswith("exec ")]
        k += len(steps)
        executed += steps
        if "done" in lines:
            return _tally(attempt, executed, completed=True)
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"{strategy} child of run {run} failed: {proc.stderr[-2000:]}")
    return _tally(MAX_ATTEMPTS, executed, completed=False)


def _tally(attempts: int, executed: list[int], *, completed: bool) -> dict[str, int]:
    return {"attempts": attempts, "completed": int(completed), "executions": len(executed)}


def experiment(runs: int, probabilities: list[float], seed: int, folder: str) -> list[dict[str, float]]:
    """Both strategies, interleaved run by run, for each probability."""
    rows = []
    for p in probabilities:
        url = f"sqlite:///{folder}/compound-{p}.db"
        results: dict[str, list[dict[str, int]]] = {"scratch": [], "outlast": []}
        for run in range(runs):
            for strategy in ("scratch", "outlast") if run % 2 == 0 else ("outlast", "scratch"):
                results[strategy].append(run_one(strategy, run, p, seed, url))
        for strategy, res in results.items():
            crashes = sum(r["attempts"] - 1 for r in res)
            rows.append({
                "p": p, "strategy": strategy, "runs": runs,
                "first_try": sum(r["attempts"] == 1 and r["completed"] for r in res) / runs,
                "expected_first_try": (1 - p) ** STEPS,
                "completed": sum(r["completed"] for r in res) / runs,
                "crashes": crashes,
                "wasted": sum(r["executions"] - STEPS * r["completed"] for r in res),
                "wasted_per_crash": (sum(r["executions"] - STEPS * r["completed"] for r in res)
                                     / crashes if crashes else 0.0),
                "worst_wasted_per_crash": max(
                    ((r["executions"] - STEPS * r["completed"]) / (r["attempts"] - 1)
                     for r in res if r["attempts"] > 1), default=0.0),
                "mean_attempts": sum(r["attempts"] for r in res) / runs,
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 runs per probability")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--p", default="0.01,0.05")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", choices=["scratch", "outlast"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        (child_scratch if args.child == "scratch" else child_outlast)()
        return
    runs = 30 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as folder:
        for row in experiment(runs, [float(p) for p in args.p.split(",")], args.seed, folder):
            print(f"p={row['p']:.2f} {row['strategy']:>8}: first try {row['first_try']:.0%} "
                  f"(arithmetic {row['expected_first_try']:.0%}), completed {row['completed']:.0%}, "
                  f"crashes {row['crashes']}, wasted step executions {row['wasted']} "
                  f"({row['wasted_per_crash']:.1f} per crash)")


if __name__ == "__main__":
    main()
