"""What a short run writes, part by part: figures that do not move with the machine's load.

    python bench/short_run_parts.py [--postgres URL] [--runs 200]
    OUTLAST_BENCH_SRC=/tmp/other/src python bench/short_run_parts.py   # another tree

SQLite: WAL pages (frames) each store operation of a 10-step run writes, counted from the WAL
file's size with automatic checkpoints off: the run's creation with its first journal entry,
the nine further entries, the finish; beside a raw single-row INSERT + COMMIT on a file of
SQLite's default page size and of outlast's. With ``synchronous=normal`` a commit costs what
it writes, page by page, so these counts are the commit cost without the timing noise. Then
the CPU time of a step with no file at all (``sqlite:///:memory:``: the engine and the SQL,
no WAL), beside a raw INSERT in memory and a raw INSERT + COMMIT on a file: the part of a
step's cost that no page layout can remove.

PostgreSQL: server execution time of each statement (``EXPLAIN (ANALYZE)``: the executor,
without parsing, the network or the commit's WAL flush, which every statement pays alike),
medians over ``--runs`` executions: the raw INSERT, the journal write as it is and without
its ``FOR SHARE`` fence lock or its ``ON CONFLICT`` clause (variants only measured, never
used), the creation with the first entry, the finish. Each executes for real, on a schema of
its own that is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(
    0, os.environ.get("OUTLAST_BENCH_SRC") or os.path.join(os.path.dirname(__file__), "..", "src")
)

from outlast.runs import new_run_id  # noqa: E402
from outlast.store import open_store  # noqa: E402
from outlast.store.base import Entry, NewRun  # noqa: E402


def entry(i: int) -> Entry:
    now = time.time()
    # as a no-op step journals it: an args fingerprint of 32 hex digits, a small result
    return Entry(f"noop:{i}", i, "step", "noop", "completed", b"N", "0" * 32, 1, now, now, None)


def new_run(run_id: str) -> NewRun:
    return NewRun(run_id=run_id, workflow="chain", input=b"x" * 40, input_hash="h" * 16)


def raw_pages(page_size: int, n: int = 500) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/raw.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(f"PRAGMA page_size = {page_size}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, v BLOB)")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for _ in range(n):
            conn.execute("INSERT INTO raw (v) VALUES (?)", (b"1",))
        frames = (os.path.getsize(path + "-wal") - 32) / (page_size + 24)
        conn.close()
        return frames / n


def sqlite_parts(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/parts.db"
        store = open_store(f"sqlite:///{path}")
        conn = store._conn  # type: ignore[attr-defined]  # a benchmark may look inside
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]

        def frames() -> int:
            size = os.path.getsize(path + "-wal")
            return (size - 32) // (page + 24) if size else 0

        parts = {"create + first entry": 0, "9 entries": 0, "finish": 0}
        for _ in range(runs):
            run_id = new_run_id()
            before = frames()
            store.create_run(new_run(run_id), owner="bench", lease=60, first=entry(0))
            created = frames()
            for i in range(1, 10):
                store.record(run_id, 1, entry(i))
            recorded = frames()
            store.finish(run_id, 1, "completed", output=b"N")
            parts["create + first entry"] += created - before
            parts["9 entries"] += recorded - created
            parts["finish"] += frames() - recorded
        store.close()
    print(f"SQLite, WAL pages written per 10-step run ({runs} runs, {page // 1024} KB pages):")
    for name, total in parts.items():
        print(f"  {name:22s} {total / runs:6.2f}")
    print(f"  {'whole run':22s} {sum(parts.values()) / runs:6.2f}  (11 commits)")
    for size in sorted({4096, page}):
        print(f"  raw INSERT + COMMIT, {size // 1024} KB pages: {raw_pages(size):.2f} per commit")


def cpu_per_step(rounds: int = 5) -> None:
    import outlast

    def raw(path: str, n: int = 3000) -> float:
        conn = sqlite3.connect(path, isolation_level=None)
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = normal")
        conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, v BLOB)")
        start = time.process_time()
        for _ in range(n):
            conn.execute("INSERT INTO raw (v) VALUES (?)", (b"1",))
        elapsed = time.process_time() - start
        conn.close()
        return elapsed / n

    def steps(runs: int = 300) -> float:
        app = outlast.App("sqlite:///:memory:")

        @app.step
        def noop() -> None:
            return None

        @app.workflow
        def chain(ctx: outlast.Context, n: int) -> int:
            for _ in range(n):
                noop()
            return n

        app.run(chain, 1)
        start = time.process_time()
        for _ in range(runs):
            app.run(chain, 10)
        elapsed = time.process_time() - start
        app.close()
        return elapsed / (runs * 10)

    found: dict[str, list[float]] = {"memory": [], "steps": [], "file": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            found["file"].append(raw(f"{tmp}/raw.db"))
        found["memory"].append(raw(":memory:"))
        found["steps"].append(steps())
    med = {k: statistics.median(v) * 1e6 for k, v in found.items()}
    print(f"\nCPU time, medians of {rounds} rounds:")
    print(f"  raw INSERT + COMMIT, file (4 KB pages)   {med['file']:6.1f} us")
    print(f"  raw INSERT, in memory                   {med['memory']:6.1f} us")
    print(
        f"  10-step runs in memory, per step        {med['steps']:6.1f} us"
        f"  ({med['steps'] / med['file']:.2f}x the raw commit on a file)"
    )


def postgres_parts(url: str, runs: int) -> None:
    import psycopg

    from outlast.store.postgres import _entry_params, _fields

    schema = f"bench_parts_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in url else "?"
    store = open_store(f"{url}{sep}schema={schema}")
    q = store._q  # type: ignore[attr-defined]
    conn = psycopg.connect(url, autocommit=True)
    try:
        conn.execute(f"CREATE TABLE {schema}.raw (id bigserial PRIMARY KEY, v bytea)")
        store.create_run(new_run("long"), owner="bench", lease=3600)
        plain = q.record.split("ON CONFLICT")[0]
        statements: dict[str, str] = {
            "raw INSERT": f"INSERT INTO {schema}.raw (v) VALUES (%(output)s)",
            "journal write (record)": q.record,
            "  without FOR SHARE": q.record.replace(" FOR SHARE", ""),
            "  without ON CONFLICT": plain,
            "create + first entry": q.create_run_first,
            "finish": q.finish,
        }
        found: dict[str, list[float]] = {name: [] for name in statements}

        def execute(name: str, params: dict[str, Any]) -> None:
            plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statements[name]}", params)
            row = plan.fetchone()
            assert row is not None
            found[name].append(row[0][0]["Execution Time"] * 1000)

        for i in range(runs):
            for j, name in enumerate(list(statements)[:4]):
                execute(name, _entry_params("long", 1, entry(10 * i + j + 1)))
            run_id = new_run_id()
            params = {**_fields(new_run(run_id)), "owner": "bench", "claimed": True, "lease": 60.0}
            params.update(_fields(entry(0)), entry_status="completed", status="running", epoch=1)
            execute("create + first entry", params)
            execute(
                "finish",
                {
                    "run_id": run_id,
                    "epoch": 1,
                    "status": "completed",
                    "stats": None,
                    "output": b"N",
                    "error": None,
                },
            )
        print(f"\nPostgreSQL, server execution per statement (EXPLAIN ANALYZE, median of {runs}):")
        for name, values in found.items():
            print(f"  {name:24s} {statistics.median(values):6.1f} us")
    finally:
        store.close()
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", help="also measure on this PostgreSQL URL")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    sqlite_parts(args.runs)
    cpu_per_step()
    if args.postgres:
        postgres_parts(args.postgres, args.runs)


if __name__ == "__main__":
    main()
