"""Millions of finished runs on PostgreSQL: claim, list and get_run latency, prune throughput,
and what a running prune does to enqueue-to-start latency.

    python bench/scale.py [--runs 1000000] [--url postgresql://postgres@127.0.0.1:5432/test]

Method. A fresh schema (dropped afterwards) is migrated by the store, then ``--runs`` finished
runs are generated server-side, one ``INSERT ... SELECT generate_series`` per million (one in
ten cancelled, one in 10,000 failed, the rest completed; one workflow in ten is ``other``; two journal
entries per run, one run in ten referring to a blob of its own), and ANALYZEd. Then, each
operation repeated and timed from the client (p50 / p95, milliseconds):

- ``get_run`` of random ids;
- ``outlast runs`` pages (``App.list_runs``, 50 runs): no filter, ``--status failed``,
  ``--workflow other``, both, and a page a third of the way down through ``--after``;
- the same pages again without the list indexes of migration 8 (dropped: as before it);
- ``claim`` with nothing runnable (what an idle worker's poll costs) and with one pending run
  among the millions (create, claim, finish; the claim timed).

Prune: one ``outlast worker`` process (concurrency 4) is started; a run of one no-op step is
enqueued every 50 ms and its enqueue-to-start time taken from the step's own log line (same
clock): first for 10 s without a prune (the baseline), then while ``Store.prune`` deletes every
generated run in batches of ``--batch`` (what ``outlast prune --batch`` does), timed for its
runs/s. A slow benchmark: about 3 minutes per million runs on two cores.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from fleet import Schema  # noqa: E402
from tests.apps import fleet_app  # noqa: E402
from tests.fleetkit import lines, spawn_worker, stop_all, wait_until  # noqa: E402

import outlast  # noqa: E402
from outlast.store.base import NewRun  # noqa: E402

CHUNK = 1_000_000

# Finished runs i in [lo, hi): created an hour or more ago, one per millisecond.
RUNS = """INSERT INTO {s}.runs (run_id, workflow, status, input, input_hash, output, queue,
        epoch, created_at, started_at, ended_at)
    SELECT 'gen-' || lpad(i::text, 9, '0'),
        CASE WHEN i %% 10 = 0 THEN 'other' ELSE 'triple' END,
        CASE WHEN i %% 10000 = 0 THEN 'failed' WHEN i %% 10 = 5 THEN 'cancelled'
             ELSE 'completed' END,
        '\\x80'::bytea, 'h', '\\x80'::bytea, 'default', 1,
        %(t0)s + i * 0.001, %(t0)s + i * 0.001, %(t0)s + i * 0.001 + 0.5
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS i"""
JOURNAL = """INSERT INTO {s}.journal (run_id, key, position, kind, name, status, output,
        started_at, ended_at)
    SELECT 'gen-' || lpad(i::text, 9, '0'), 'unit:' || j, j, 'step', 'unit', 'completed',
        '\\x80'::bytea, %(t0)s + i * 0.001, %(t0)s + i * 0.001 + 0.1
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS i, generate_series(0, 1) AS j"""
BLOBS = """WITH b AS (
        SELECT 'gen-' || lpad(i::text, 9, '0') AS run_id, md5(i::text) AS hash
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS i WHERE i %% 10 = 3
    ), blobs AS (INSERT INTO {s}.blobs (hash, data) SELECT hash, '\\x80'::bytea FROM b)
    INSERT INTO {s}.blob_refs (run_id, hash) SELECT run_id, hash FROM b"""


def generate(url: str, schema: str, n: int) -> float:
    """Insert ``n`` finished runs; returns the seconds it took."""
    started = time.perf_counter()
    t0 = time.time() - 3600 - n * 0.001
    with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
        for lo in range(0, n, CHUNK):
            params = {"t0": t0, "lo": lo, "hi": min(n, lo + CHUNK)}
            for sql in (RUNS, JOURNAL, BLOBS):
                conn.execute(sql.replace("{s}", schema), params)  # type: ignore[arg-type]
            print(
                f"  generated {params['hi']:,} runs ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        for table in ("runs", "journal", "blobs", "blob_refs"):
            conn.execute(f"ANALYZE {schema}.{table}")  # type: ignore[arg-type]
    return time.perf_counter() - started


def timed(fn: Callable[[], object], times: int) -> tuple[float, float]:
    """p50 and p95 of ``fn`` in milliseconds."""
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def show(label: str, figures: tuple[float, float]) -> None:
    print(f"  {label:<44} p50 {figures[0]:7.2f} ms   p95 {figures[1]:7.2f} ms", flush=True)


def latencies(app: outlast.App, n: int, lists_only: bool = False) -> None:
    store = app.store
    ids = [f"gen-{i:09d}" for i in random.sample(range(n), 200)]
    pick = iter(ids * 2)
    assert all(store.get_run(i) is not None for i in ids[:5])
    if not lists_only:
        show("get_run (random id)", timed(lambda: store.get_run(next(pick)), 200))
    third = f"gen-{n * 2 // 3:09d}"
    for label, kwargs in (
        ("outlast runs", {}),
        ("outlast runs --status failed", {"status": "failed"}),
        ("outlast runs --workflow other", {"workflow": "other"}),
        (
            "outlast runs --status failed --workflow other",
            {"status": "failed", "workflow": "other"},
        ),
        (
            "outlast runs --status cancelled --after (1/3 down)",
            {"status": "cancelled", "after": third},
        ),
    ):
        show(label, timed(lambda kw=kwargs: app.list_runs(limit=50, **kw), 30))  # type: ignore[misc]
    if lists_only:
        return
    show("claim, nothing runnable", timed(lambda: store.claim("bench", 30.0, limit=4), 100))

    def one_claim() -> float:
        run, _ = store.create_run(NewRun(f"c-{random.random()}", "triple", b"", "h"))
        start = time.perf_counter()
        [claimed] = store.claim("bench", 30.0, limit=4)
        took = time.perf_counter() - start
        store.finish(claimed.run_id, claimed.epoch, "completed")
        return took

    samples = sorted(one_claim() * 1000 for _ in range(100))
    show("claim, one pending run", (statistics.median(samples), samples[94]))


def enqueue_to_start(
    app: outlast.App, log: Path, seconds: float, stop: threading.Event | None = None
) -> list[float]:
    """Enqueue a one-step run every 50 ms for ``seconds`` (or until ``stop``); the delays
    until each step started, in milliseconds."""
    sent: dict[str, float] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop is not None and stop.is_set()):
        t = time.time()
        rid = app.enqueue(fleet_app.slow, 1, 0.0).run_id
        sent[rid] = t
        time.sleep(0.05)
    started: dict[str, float] = {}

    def all_started() -> bool:
        for line in lines(log):
            parts = line.split()
            if len(parts) == 4 and parts[0] == "start":
                started[parts[1].split(":")[0]] = float(parts[3])
        return set(sent) <= set(started)

    wait_until(all_started, 60, "the enqueued runs to start")
    return sorted((started[r] - t) * 1000 for r, t in sent.items())


def pct(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples):6.1f} ms  p95 {samples[int(len(samples) * 0.95) - 1]:6.1f} ms"


def prune_under_load(app: outlast.App, url: str, batch: int, folder: Path) -> None:
    log = folder / "scale.log"
    os.environ["FLEET_LOG"] = str(log)
    worker = spawn_worker(url, log, concurrency=4, poll=0.5)
    try:
        time.sleep(3.0)  # imported, connected, idle
        base = enqueue_to_start(app, log, 10.0)
        print(f"  enqueue-to-start, no prune ({len(base)} runs): {pct(base)}", flush=True)
        done = threading.Event()
        result: dict[str, float] = {}

        def prune() -> None:
            store = outlast.App(url).store
            start = time.perf_counter()
            total = 0
            while (count := store.prune(time.time() - 600, batch)) > 0:
                total += count
            result.update(total=total, seconds=time.perf_counter() - start)
            assert store.get_run("gen-000000001") is None
            store.close()
            done.set()

        thread = threading.Thread(target=prune, daemon=True)
        thread.start()
        during = enqueue_to_start(app, log, 3600.0, stop=done)
        thread.join()
        rate = result["total"] / result["seconds"]
        print(
            f"  prune --batch {batch}: {result['total']:,.0f} runs in {result['seconds']:.1f} s"
            f" ({rate:,.0f} runs/s)",
            flush=True,
        )
        print(
            f"  enqueue-to-start during the prune ({len(during)} runs): {pct(during)}", flush=True
        )
    finally:
        stop_all([worker])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "OUTLAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    print(f"outlast {outlast.__version__}, PostgreSQL at {args.url}, {os.cpu_count()} CPU(s)")
    with Schema(args.url) as url, tempfile.TemporaryDirectory() as tmp:
        schema = url.rsplit("schema=", 1)[1]
        app = fleet_app.app
        app.use(url)
        app.store  # noqa: B018 - migrate the fresh schema
        print(f"generating {args.runs:,} finished runs:")
        took = generate(url, schema, args.runs)
        print(f"  {args.runs / took:,.0f} runs/s")
        print(f"latency with {args.runs:,} finished runs:")
        latencies(app, args.runs)
        with psycopg.connect(args.url, autocommit=True) as conn:
            for index in ("runs_status_created", "runs_workflow_created"):
                conn.execute(f"DROP INDEX {schema}.{index}")  # type: ignore[arg-type]
        print("the same, without migration 8's list indexes (as before it):")
        latencies(app, args.runs, lists_only=True)
        print(f"prune of {args.runs:,} runs while a worker runs new ones:")
        prune_under_load(app, url, args.batch, Path(tmp))
        app.close()


if __name__ == "__main__":
    main()
