"""Journaled no-op step overhead beside a raw single-row INSERT+COMMIT, same file settings.

    python bench/step_overhead.py [--quick] [--sync normal|full|both] [--postgres URL]
    python bench/step_overhead.py --against /tmp/outlast-main/src [--rounds 20] [--cpu] ...
    python bench/step_overhead.py --against /tmp/outlast-010/src --cpu --page-size 4096

``--against SRC`` compares this tree with another outlast source tree (e.g. main's, from
``git archive main | tar -x -C /tmp/outlast-main``) side by side: each round measures both, in
alternating child processes on separate database files, and the medians over all rounds are
printed with each side's ratios to the raw commit, and (SQLite) the WAL pages each side writes
per step. ``--cpu`` times SQLite with the process's CPU time (user + system) instead of the
wall clock: with ``synchronous=normal`` nothing waits for the disk except a checkpoint's fsync
(every ~1000 pages), so CPU time is the cost without that luck and without the other processes
of a loaded machine taking the CPU away. ``--page-size N`` opens this tree's SQLite files with
``?page_size=N`` (the --against side keeps its own default: 0.1.0 knows no such option and uses
SQLite's 4096; ``--against-page-size N`` sets it for a tree that has the option), to compare the
code at equal pages apart from the page-size decision.

For each setting, interleaved over several rounds (medians reported, with the spread):
- raw: a single-row INSERT + COMMIT on a fresh connection with the same pragmas (SQLite) or
  a single-row INSERT in autocommit (PostgreSQL round trip);
- outlast, long run: one workflow calling N no-op steps (per-step cost of the journal write
  and the engine around it);
- outlast, 200 x 10: 200 workflows of 10 no-op steps each (per step, including starting and
  finishing each run, amortized).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# The tree to measure: this one, or another one for a child process of --against.
sys.path.insert(0, os.environ.get("OUTLAST_BENCH_SRC") or os.path.join(os.path.dirname(__file__), "..", "src"))

import outlast  # noqa: E402

#: the clock: the wall clock, or process CPU time (--cpu; SQLite only)
clock = time.perf_counter
#: appended to this tree's SQLite URLs (--page-size)
sqlite_options = ""


def raw_sqlite(path: str, sync: str, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    conn.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, v BLOB)")
    payload = b"1"
    start = clock()
    for _ in range(n):
        conn.execute("INSERT INTO raw (v) VALUES (?)", (payload,))
    elapsed = clock() - start
    conn.close()
    return elapsed / n


def raw_postgres(url: str, n: int) -> float:
    import psycopg

    # A regular (WAL-logged) table: a TEMP table skips the WAL and is no fair baseline.
    table = f"public.outlast_raw_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, v bytea)")
        try:
            start = time.perf_counter()
            for _ in range(n):
                conn.execute(f"INSERT INTO {table} (v) VALUES (%s)", (b"1",))
            return (time.perf_counter() - start) / n
        finally:
            conn.execute(f"DROP TABLE {table}")


def make_app(url: str, **options: Any) -> tuple[outlast.App, Callable[..., object]]:
    """An app with one no-op step and a workflow calling it ``n`` times (``options``: App's)."""
    app = outlast.App(url, **options)

    @app.step
    def noop() -> None:
        return None

    @app.workflow
    def chain(ctx: outlast.Context, n: int) -> int:
        for _ in range(n):
            noop()
        return n

    return app, chain


def outlast_long(url: str, n: int) -> float:
    app, chain = make_app(url)
    app.run(chain, 1)  # open and migrate the store outside the timing
    start = clock()
    app.run(chain, n)
    elapsed = clock() - start
    app.close()
    return elapsed / n


def outlast_many(url: str, runs: int, steps: int) -> float:
    app, chain = make_app(url)
    app.run(chain, 1)
    start = clock()
    for _ in range(runs):
        app.run(chain, steps)
    elapsed = clock() - start
    app.close()
    return elapsed / (runs * steps)


def wal_pages(path: str, runs: int, steps: int) -> float:
    """WAL pages (frames) written per step by ``runs`` runs of ``steps`` steps on a new file.

    Automatic checkpoints are off on the store's connection while counting, so the WAL file
    holds every frame written (not timed; the same count on every machine).
    """
    app, chain = make_app(f"sqlite:///{path}?synchronous=normal{sqlite_options}")
    app.run(chain, 1)
    conn = app.store._conn  # type: ignore[attr-defined]  # a benchmark may look inside
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    for _ in range(runs):
        app.run(chain, steps)
    frames = (os.path.getsize(path + "-wal") - 32) / (page + 24)
    app.close()
    return frames / (runs * steps)


def fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med * 1e6:8.1f} us  (min {min(values) * 1e6:.1f}, max {max(values) * 1e6:.1f})"


def bench_sqlite(sync: str, rounds: int, n: int, runs: int) -> dict[str, float]:
    results: dict[str, list[float]] = {"raw": [], "long": [], "many": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            results["raw"].append(raw_sqlite(f"{tmp}/raw.db", sync, n))
            url = f"sqlite:///{tmp}/o1.db?synchronous={sync}{sqlite_options}"
            results["long"].append(outlast_long(url, n))
            url2 = f"sqlite:///{tmp}/o2.db?synchronous={sync}{sqlite_options}"
            results["many"].append(outlast_many(url2, runs, 10))
    print(f"\nSQLite, WAL, synchronous={sync}  ({rounds} rounds, medians)")
    print(f"  raw INSERT+COMMIT           {fmt(results['raw'])}")
    print(f"  outlast step (1 x {n:<5})     {fmt(results['long'])}")
    print(f"  outlast step ({runs} x 10)      {fmt(results['many'])}")
    raw = statistics.median(results["raw"])
    ratio_long = statistics.median(results["long"]) / raw
    ratio_many = statistics.median(results["many"]) / raw
    print(f"  ratio to raw commit: {ratio_long:.2f}x (long run), {ratio_many:.2f}x ({runs} x 10)")
    return {"raw": raw, "long": statistics.median(results["long"]), "many": statistics.median(results["many"])}


def bench_postgres(url: str, rounds: int, n: int, runs: int) -> dict[str, float]:
    import psycopg

    results: dict[str, list[float]] = {"raw": [], "long": [], "many": []}
    for i in range(rounds):
        schema = f"bench_{os.getpid()}_{i}"
        results["raw"].append(raw_postgres(url, n))
        sep = "&" if "?" in url else "?"
        results["long"].append(outlast_long(f"{url}{sep}schema={schema}a", n))
        results["many"].append(outlast_many(f"{url}{sep}schema={schema}b", runs, 10))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}a CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}b CASCADE")
    print(f"\nPostgreSQL {url}  ({rounds} rounds, medians)")
    print(f"  raw INSERT+COMMIT           {fmt(results['raw'])}")
    print(f"  outlast step (1 x {n:<5})     {fmt(results['long'])}")
    print(f"  outlast step ({runs} x 10)      {fmt(results['many'])}")
    raw = statistics.median(results["raw"])
    print(
        f"  ratio to raw round trip: {statistics.median(results['long']) / raw:.2f}x (long run), "
        f"{statistics.median(results['many']) / raw:.2f}x ({runs} x 10)"
    )
    return {"raw": raw, "long": statistics.median(results["long"]), "many": statistics.median(results["many"])}


def one_round(store: str, n: int, runs: int) -> dict[str, float]:
    """One round of each measurement on ``store`` (a sync setting, or a PostgreSQL URL)."""
    if store in ("normal", "full"):
        with tempfile.TemporaryDirectory() as tmp:
            return {
                "raw": raw_sqlite(f"{tmp}/raw.db", store, n),
                "long": outlast_long(f"sqlite:///{tmp}/o1.db?synchronous={store}{sqlite_options}", n),
                "many": outlast_many(
                    f"sqlite:///{tmp}/o2.db?synchronous={store}{sqlite_options}", runs, 10
                ),
                "pages long": wal_pages(f"{tmp}/p1.db", 1, n),
                "pages many": wal_pages(f"{tmp}/p2.db", runs, 10),
            }
    import psycopg

    schema = f"bench_{os.getpid()}"
    sep = "&" if "?" in store else "?"
    try:
        return {
            "raw": raw_postgres(store, n),
            "long": outlast_long(f"{store}{sep}schema={schema}a", n),
            "many": outlast_many(f"{store}{sep}schema={schema}b", runs, 10),
        }
    finally:
        with psycopg.connect(store, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}a CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}b CASCADE")


def compare(
    other: str, stores: list[str], rounds: int, n: int, runs: int, cpu: bool = False,
    page_size: int | None = None, against_page_size: int | None = None,
) -> None:
    """This tree against ``other`` (an outlast src folder), rounds alternating between them."""
    import json
    import subprocess

    sides = {"this tree": "", "against": os.path.abspath(other)}
    for store in stores:
        found: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
        size, count = (n, runs) if store in ("normal", "full") else (n // 2, runs // 2)
        for i in range(rounds):
            for side, src in (sides.items() if i % 2 == 0 else reversed(sides.items())):
                env = {**os.environ, "OUTLAST_BENCH_SRC": src}
                out = subprocess.run(
                    [sys.executable, __file__, "--one", store, "--n", str(size), "--runs", str(count)]
                    + (["--cpu"] if cpu else [])
                    + (["--page-size", str(psize)] if (psize := against_page_size if src else page_size) else []),
                    env=env, capture_output=True, text=True, check=True,
                ).stdout
                for key, value in json.loads(out.splitlines()[-1]).items():
                    found[side].setdefault(key, []).append(value)
        # The raw commit is the same code on both sides: its median over all rounds is the unit.
        raw = statistics.median(found["this tree"]["raw"] + found["against"]["raw"])
        label = f"SQLite synchronous={store}" if store in ("normal", "full") else "PostgreSQL"
        timed = "CPU time" if cpu and store in ("normal", "full") else "wall clock"
        sized = "".join(
            f", {side} at ?page_size={size}" for side, size in (("this tree", page_size), ("against", against_page_size))
            if size and store in ("normal", "full")
        )
        print(f"\n{label}: {rounds} rounds alternating, {timed}{sized}, medians in us per step (x raw commit)")
        print(f"  raw INSERT+COMMIT {raw * 1e6:.1f} us (both sides)")
        print(f"  {'side':10s} {'long run':>18s} {f'{count} x 10-step runs':>22s}")
        for side in sides:
            long, many = (statistics.median(found[side][k]) for k in ("long", "many"))
            pages = ""
            if "pages many" in found[side]:
                pl, pm = (statistics.median(found[side][k]) for k in ("pages long", "pages many"))
                pages = f"   WAL pages per step: {pl:.2f} long, {pm:.2f} 10-step"
            print(f"  {side:10s} {long * 1e6:9.1f} ({long / raw:4.2f}x) {many * 1e6:13.1f} ({many / raw:4.2f}x)"
                  f"{pages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--sync", default="both", choices=["normal", "full", "both"])
    parser.add_argument("--postgres", help="also measure on this PostgreSQL URL")
    parser.add_argument("--against", metavar="SRC", help="compare with another outlast src tree")
    parser.add_argument("--rounds", type=int, help="rounds (default 7, 3 with --quick)")
    parser.add_argument("--cpu", action="store_true", help="time SQLite with process CPU time (see above)")
    parser.add_argument("--page-size", type=int, help="this tree's SQLite page size (see above)")
    parser.add_argument("--against-page-size", type=int, help="the --against tree's page size")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child of --against: one round
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    global clock, sqlite_options
    if args.cpu:
        clock = time.process_time
    if args.page_size:
        sqlite_options = f"&page_size={args.page_size}"
    if args.one:
        import json

        print(json.dumps(one_round(args.one, args.n, args.runs)))
        return
    rounds, n, runs = (3, 500, 50) if args.quick else (7, 2000, 200)
    rounds = args.rounds or rounds
    if args.against:
        stores = ["normal", "full"] if args.sync == "both" else [args.sync]
        compare(
            args.against, stores + ([args.postgres] if args.postgres else []), rounds, n, runs,
            args.cpu, args.page_size, args.against_page_size,
        )
        return
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, outlast {outlast.__version__}")
    for sync in (["normal", "full"] if args.sync == "both" else [args.sync]):
        bench_sqlite(sync, rounds, n, runs)
    if args.postgres:
        bench_postgres(args.postgres, rounds, n // 2, runs // 2)


if __name__ == "__main__":
    main()
