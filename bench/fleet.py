"""Worker fleet on PostgreSQL: throughput of 1, 2 and 4 worker processes, takeover time, and
what idle workers cost the database.

    python bench/fleet.py [--quick] [--url postgresql://postgres@127.0.0.1:5432/test]

Throughput, for no-op steps (what the fleet's own machinery costs: on a small machine the
worker processes and the database share the same cores) and for 50 ms steps (model calls and
other I/O, where adding workers adds capacity): idle workers (``outlast worker``, concurrency 4 each) are started first, then N runs
of 3 no-op steps are enqueued and timed from the first enqueue to the last completion, so
process start-up is left out. Takeover: a worker holding a run mid-step is SIGKILLed; the time
until another worker starts the run's step again is measured, for a worker on "another
machine" (its runs wait for their lease to expire; target lease + 1 s) and for one on this host
(its death is detected at once, at the next orphan scan of the surviving worker).

"another machine" is a worker whose owner id names another host (``FLEET_FAKE_HOST``, as a
worker in its own UTS namespace would): its pid cannot be checked, so it is taken over through
its session's liveness lock, or, through a transaction-mode pooler (``?pooler=transaction``),
when its lease expires.

Idle cost: N idle workers (``outlast worker``, default ``--poll 0.5``) run for a while; the
database's committed and rolled-back transactions (``pg_stat_database``, summed over
``xact_commit + xact_rollback``) are counted over that window, in a database of their own
(the server is shared with whatever else runs), minus the same count over an equal window with
no worker (the measuring connection's own statements; the statistics collector flushes about
once a second, so windows are long).

Each measurement uses a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from tests.apps import fleet_app  # noqa: E402
from tests.fleetkit import all_finished, lines, spawn_worker, stop_all, wait_until  # noqa: E402

import outlast  # noqa: E402


class Schema:
    """A fresh schema on the server, dropped on exit."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"bench_fleet_{uuid.uuid4().hex[:8]}"
        self.url = f"{server}?schema={self.name}"

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def throughput(server: str, workers: int, runs: int, step: float, folder: Path) -> float:
    """Runs per second completed by ``workers`` worker processes, steps of ``step`` seconds."""
    log = folder / f"tp{workers}-{step}.log"
    os.environ["FLEET_LOG"] = str(log)
    with Schema(server) as url:
        app = fleet_app.app
        app.use(url)
        app.store  # noqa: B018 - create the schema before the workers race to
        env = {"FLEET_STEP_SLEEP": str(step), "FLEET_LEASE": "10"}
        procs = [spawn_worker(url, log, concurrency=4, poll=0.2, env=env) for _ in range(workers)]
        try:
            time.sleep(1.5)  # let them import and go idle
            started = time.perf_counter()
            ids = [app.enqueue(fleet_app.triple).run_id for _ in range(runs)]
            wait_until(all_finished(app, ids), 300, "the runs", procs)
            elapsed = time.perf_counter() - started
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            stop_all(procs)
            app.close()
    return runs / elapsed


def _xacts(server: str) -> int:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _window(server: str, seconds: float) -> float:
    """Transactions per second in the database over ``seconds``."""
    time.sleep(1.5)  # the statistics of what came before are flushed
    start = _xacts(server)
    time.sleep(seconds)
    time.sleep(1.5)
    return (_xacts(server) - start) / (seconds + 1.5)


class Database:
    """A fresh database (its own ``pg_stat_database`` row: the server is shared), dropped on
    exit."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"bench_idle_{uuid.uuid4().hex[:8]}"
        base, _, _ = server.rpartition("/")
        self.url = f"{base}/{self.name}"

    def __enter__(self) -> str:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.name}")
        return self.url

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def idle_cost(server: str, workers: int, seconds: float, pooler: str, folder: Path) -> float:
    """Transactions per second that ``workers`` idle workers cost, above the baseline."""
    log = folder / f"idle{workers}{pooler}.log"
    os.environ["FLEET_LOG"] = str(log)
    with Database(server) as db, Schema(db) as url:
        server = db
        app = fleet_app.app
        app.use(url)
        app.store  # noqa: B018 - create the schema first
        app.close()
        baseline = _window(server, seconds)
        wurl = url + ("&pooler=transaction" if pooler == "transaction" else "")
        procs = [spawn_worker(wurl, log, concurrency=4, poll=0.5) for _ in range(workers)]
        try:
            time.sleep(8.0)  # imported, migrated, connected, idle
            busy = _window(server, seconds)
        finally:
            stop_all(procs)
    return busy - baseline


SERVER_LOG = "/var/log/postgresql/postgresql-15-main.log"


def idle_statements(
    server: str,
    workers: int,
    seconds: float,
    folder: Path,
    server_log: str = SERVER_LOG,
    settle: float | None = None,
) -> tuple[float, float, collections.Counter[str]]:
    """Statements per second that ``workers`` idle workers send, counted in the server's log:
    ``log_statement = 'all'`` is set for a database of their own only (ALTER DATABASE, not
    server-wide), and the lines the server logs for that database within the window are
    counted, by statement. Each statement of an autocommit connection is one transaction.
    Also returns ``pg_stat_database``'s transactions per second over the same window, for
    comparison (it counts more than statements: see docs/scale.md)."""
    log = folder / f"stmts{workers}.log"
    os.environ["FLEET_LOG"] = str(log)
    with Database(server) as db, Schema(db) as url:
        name = db.rsplit("/", 1)[1]
        app = fleet_app.app
        app.use(url)
        app.store  # noqa: B018 - create the schema first
        app.close()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} SET log_statement = 'all'")  # type: ignore[arg-type]
        procs = [spawn_worker(url, log, concurrency=4, poll=0.5) for _ in range(workers)]
        try:
            # imported, migrated, connected, idle: on two busy cores 16 processes take a while
            time.sleep(8.0 + workers * 0.5 if settle is None else settle)
            xacts = _xacts(db)
            start = os.path.getsize(server_log)
            time.sleep(seconds)
            end = os.path.getsize(server_log)
            time.sleep(1.5)  # the statistics of the window are flushed
            stat = (_xacts(db) - xacts) / (seconds + 1.5)
        finally:
            stop_all(procs)
    with open(server_log, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    counts: collections.Counter[str] = collections.Counter()
    # simple protocol: "statement: SQL"; extended (psycopg's parameters): "execute NAME: SQL"
    logged = re.compile(rf"@{name} LOG:  (?:statement|execute [^:]+): (.*)")
    for line in text.splitlines():
        match = logged.search(line)
        if match:
            counts[" ".join(match.group(1).split())[:70]] += 1
    return sum(counts.values()) / seconds, stat, counts


#: a command prefix that runs the worker in a UTS namespace of its own, named elsewhere
UTS = ["unshare", "--uts", "sh", "-c", 'hostname elsewhere && exec "$0" "$@"']


def takeover(
    server: str, lease: float, other_host: bool | str, folder: Path, pooler: str = "session"
) -> float:
    """Seconds from a worker's SIGKILL (mid-step) to another worker starting that step again."""
    log = folder / f"to{other_host}{pooler}.log"
    os.environ["FLEET_LOG"] = str(log)
    with Schema(server) as url:
        app = fleet_app.app
        app.use(url)
        rid = app.enqueue(fleet_app.triple).run_id
        if pooler == "transaction":
            url += "&pooler=transaction"
        env = {"FLEET_LEASE": str(lease), "FLEET_HANG_AFTER": "1"}
        if other_host:
            env["FLEET_FAKE_HOST"] = "1"
        if other_host == "uts":  # its own UTS namespace, another host name (needs root)
            del env["FLEET_FAKE_HOST"]
            victim = spawn_worker(url, log, concurrency=1, env=env, wrap=UTS)
        else:
            victim = spawn_worker(url, log, concurrency=1, env=env)
        survivor = None
        try:
            wait_until(lambda: f"hang {victim.pid}" in lines(log), 30, "the victim", [victim])
            survivor = spawn_worker(url, log, concurrency=1, poll=0.1,
                                    env={"FLEET_LEASE": str(lease)})
            time.sleep(1.5)  # the survivor is up and idle
            victim.kill()
            killed = time.perf_counter()
            victim.wait()
            step = f"start {rid}:0 {survivor.pid}"
            wait_until(lambda: any(x.startswith(step) for x in lines(log)), lease + 30,
                       "the takeover", [survivor])
            return time.perf_counter() - killed
        finally:
            stop_all([p for p in (victim, survivor) if p is not None])
            app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, a shorter lease")
    parser.add_argument("--only", choices=["throughput", "takeover", "idle", "statements"], action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--url", default=os.environ.get(
        "OUTLAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    runs = 150 if args.quick else 1000
    lease = 2.0 if args.quick else 10.0
    print(f"outlast {outlast.__version__}, PostgreSQL at {args.url}, {os.cpu_count()} CPU(s)")
    parts = set(args.only or ["throughput", "takeover", "idle", "statements"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "throughput" in parts:
            for step, what in ((0.0, "no-op steps (CPU-bound)"), (0.05, "50 ms steps (I/O-bound)")):
                print(f"throughput, {runs} runs of 3 {what}, 4 runs at once per worker:")
                for workers in (1, 4, 16) if not args.quick else (1, 4):
                    rate = throughput(args.url, workers, runs, step, folder)
                    print(f"  {workers} worker(s): {rate:7.1f} runs/s  {3 * rate:7.1f} steps/s")
        if "takeover" in parts:
            print(f"takeover after SIGKILL mid-step, lease {lease:g} s:")
            far = takeover(args.url, lease, True, folder)
            print(f"  worker on another host, session liveness: {far:5.2f} s")
            if os.geteuid() == 0:
                uts = takeover(args.url, lease, "uts", folder)
                print(f"  worker in its own UTS namespace (unshare --uts), session liveness: "
                      f"{uts:5.2f} s")
            pooled = takeover(args.url, lease, True, folder, pooler="transaction")
            print(f"  worker on another host, ?pooler=transaction (lease): {pooled:5.2f} s")
            near = takeover(args.url, lease, False, folder)
            print(f"  worker on this host: {near:5.2f} s")
        if "idle" in parts:
            seconds = 10.0 if args.quick else 20.0
            print(f"idle workers, database transactions/s above the baseline ({seconds:g} s):")
            for workers in (1, 4, 16):
                live = idle_cost(args.url, workers, seconds, "session", folder)
                polled = idle_cost(args.url, workers, seconds, "transaction", folder)
                print(f"  {workers:2d} worker(s): {live:6.2f} tx/s  "
                      f"(polling, ?pooler=transaction: {polled:6.2f} tx/s)")
        if "statements" in parts:
            seconds = 10.0 if args.quick else 30.0
            print(f"idle workers, statements they send (log_statement, own database, "
                  f"{seconds:g} s), and pg_stat_database over the same window:")
            for workers in (1, 4, 16):
                rate, stat, counts = idle_statements(args.url, workers, seconds, folder)
                top = ", ".join(f"{n} x {sql[:40]}" for sql, n in counts.most_common(3))
                print(f"  {workers:2d} worker(s): {rate:5.2f} statements/s, "
                      f"pg_stat_database {stat:5.2f} tx/s  ({top})")


if __name__ == "__main__":
    main()
