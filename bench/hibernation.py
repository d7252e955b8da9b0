"""Hibernation: what 10,000 suspended runs cost a worker, and how long waking them takes.

    python bench/hibernation.py [--quick] [--db URL] [--runs N]

Starts a real worker process, measures its RSS and thread count idle, then with N runs
suspended on ``ctx.wait_for`` (target: no thread per run, under 50 MB over idle), then sends
every run its event and times until all completed. Default store: a SQLite file in a temporary
folder.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import outlast
from outlast.worker import Worker

app = outlast.App(hibernate_after=1.0)


@app.workflow
def waiter(ctx: outlast.Context) -> object:
    return ctx.wait_for("go")


def _proc(pid: int) -> tuple[float, int]:
    """(RSS in MB, threads) of a process."""
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


def _wait(predicate: object, what: str, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - start


def _unfinished() -> int:
    # queue_stats is one aggregate query: cheap enough to poll without slowing the worker.
    return sum(q.pending + q.running + q.suspended for q in app.store.queue_stats())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 runs instead of 10,000")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--db", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.worker:
        faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: dump the worker's stacks
        app.use(args.worker)
        Worker(app, concurrency=8, poll=0.1).run()
        return
    n = args.runs or (1000 if args.quick else 10_000)
    url = args.db or f"sqlite:///{tempfile.mkdtemp()}/hibernation.db"
    app.use(url)
    app.store  # noqa: B018 - create the schema before the worker starts
    worker = subprocess.Popen([sys.executable, __file__, "--worker", url])
    try:
        time.sleep(2.0)
        idle_rss, idle_threads = _proc(worker.pid)
        t0 = time.monotonic()
        for i in range(n):
            app.enqueue(waiter, run_id=f"h{i}")
        enqueue_s = time.monotonic() - t0
        suspend_s = _wait(lambda: app.store.queue_stats()[0].suspended == n, "all suspended", 900)
        time.sleep(1.0)
        rss, threads = _proc(worker.pid)
        t1 = time.monotonic()
        for i in range(n):
            app.send(f"h{i}", "go", i)
        send_s = time.monotonic() - t1
        wake_s = _wait(lambda: _unfinished() == 0, "all completed", 900)
    finally:
        worker.kill()
        worker.wait()
    print(f"store: {app.store.dialect}, runs: {n}")
    print("(the worker pool starts its threads on first use: at most --concurrency 8, plus the heartbeat)")
    print(f"idle worker:          RSS {idle_rss:7.1f} MB, {idle_threads} threads")
    print(f"{n} runs suspended: RSS {rss:7.1f} MB, {threads} threads "
          f"(+{rss - idle_rss:.1f} MB, +{threads - idle_threads} threads)")
    print(f"enqueue: {enqueue_s:.1f} s; all suspended {suspend_s:.1f} s after")
    print(f"send {n} events: {send_s:.1f} s; all completed {wake_s:.1f} s after the last send "
          f"({n / (send_s + wake_s):.0f} wake-ups/s)")
    os.environ.pop("OUTLAST_DATABASE_URL", None)


if __name__ == "__main__":
    main()
