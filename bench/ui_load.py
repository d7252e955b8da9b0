"""The dashboard under load: 100,000 runs in the store and a run of 10,000 steps.

    python bench/ui_load.py [--quick] [--db URL] [--runs N] [--steps N]

Seeds the store through its own API (one run in ten failed), serves ``outlast ui`` with uvicorn
on 127.0.0.1 in this process, and times real HTTP requests with httpx: the runs API and page
(first page, a filter, a page deep in the keyset), and opening the 10,000-step run (its page
shows 200 steps; the API call asks for all of them). Prints median and p95 per request; the
figures are recorded in docs/ui.md. Default store: a SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import outlast
from outlast import serde, serde_errors
from outlast.store.base import NewRun, RunQuery
from outlast.ui import create_app
from outlast.ui.data import encode_cursor

app = outlast.App()


@app.step
def tick(i: int) -> int:
    return i


@app.workflow
def long(ctx: outlast.Context, n: int) -> int:
    return sum(tick(i) for i in range(n))


def seed(runs: int, steps: int) -> None:
    store = app.store
    data = serde.encode_args((), {})
    started = time.perf_counter()
    for i in range(runs):
        rid = f"run-{i:07d}"
        store.create_run(NewRun(rid, "noop" if i % 3 else "research", data, serde.fingerprint(data)))
        if i % 10 == 0:  # one in ten failed, with an error to show
            (claimed,) = store.claim("bench", 60.0, run_id=rid)
            store.finish(rid, claimed.epoch, "failed",
                         error=serde_errors.dump_error(RuntimeError(f"tool call {i} timed out")))
    print(f"seeded {runs:,} runs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    started = time.perf_counter()
    app.run(long, steps, run_id="big")
    print(f"ran a {steps:,}-step run in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def timed(client: httpx.Client, path: str, repeat: int) -> tuple[float, float]:
    """(median, p95) milliseconds of ``repeat`` GETs of ``path`` (after one warm-up)."""
    client.get(path).raise_for_status()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        client.get(path).raise_for_status()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def serve(asgi: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 runs and 1,000 steps")
    parser.add_argument("--db", help="store URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    runs, steps = (10_000, 1_000) if args.quick else (args.runs, args.steps)
    folder = tempfile.mkdtemp(prefix="outlast-ui-bench-")
    url = args.db or f"sqlite:///{Path(folder) / 'runs.db'}"
    app.use(url)
    seed(runs, steps)
    middle = app.store.browse_runs(RunQuery(limit=runs // 2))[-1]
    server, thread, base = serve(create_app(url))
    cases = [
        ("GET /api/runs?limit=50", "/api/runs?limit=50", args.repeat),
        ("GET /runs (runs page, 50 rows)", "/runs", args.repeat),
        ("GET /runs?status=failed", "/runs?status=failed", args.repeat),
        ("GET /runs?workflow=research&q=run-00", "/runs?workflow=research&q=run-00", args.repeat),
        (f"GET /runs?cursor=... (run {runs // 2:,} onwards)", f"/runs?cursor={encode_cursor(middle)}", args.repeat),
        (f"GET /runs/big (page of 200 of {steps:,} steps)", "/runs/big", max(5, args.repeat // 2)),
        (f"GET /api/runs/big?limit={steps} (every step)", f"/api/runs/big?limit={steps}", args.repeat),
        ("GET /api/runs/big/state (live poll)", "/api/runs/big/state", args.repeat),
    ]
    print(f"\n{runs:,} runs, one run of {steps:,} steps, {url.split(':')[0]}\n")
    print("| request | median | p95 |\n| --- | --- | --- |")
    with httpx.Client(base_url=base, timeout=60) as client:
        # The first call decodes every step; later ones find them in the dashboard's cache.
        started = time.perf_counter()
        client.get(f"/api/runs/big?limit={steps}").raise_for_status()
        cold = (time.perf_counter() - started) * 1000
        print(f"| GET /api/runs/big?limit={steps} (first call: nothing cached) | {cold:.0f} ms | - |", flush=True)
        for label, path, repeat in cases:
            median, p95 = timed(client, path, repeat)
            print(f"| {label} | {median:.0f} ms | {p95:.0f} ms |", flush=True)
    server.should_exit = True
    thread.join(10)
    app.close()


if __name__ == "__main__":
    main()
