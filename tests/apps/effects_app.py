"""The torture workload: runs of N effects of every kind, executed by workers SIGKILLed at random.

Effect ``i`` of a run is, by ``i % 5``:

- 0, 1: a plain step POSTing to the deduplicating receiver (``Idempotency-Key`` added by
  :mod:`outlast.integrations.httpx`);
- 2: an at-most-once step POSTing to the raw receiver, without ``reconcile`` (a crash inside
  it pauses the run for an operator);
- 3: the same with ``reconcile`` asking the receiver whether the effect ran;
- 4: a transaction step inserting one row into ``TORTURE_TABLE`` in the journal's database.

Workers run ``outlast worker tests.apps.effects_app:app --db URL`` with ``RECEIVER_URL`` and
``TORTURE_TABLE`` in the environment. :func:`torture` drives the whole thing and checks it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import outlast
from outlast.effects import NOT_DONE
from outlast.integrations.httpx import Client

ROOT = Path(__file__).resolve().parents[2]
app = outlast.App()
_http: Any = None


def http() -> Any:
    global _http
    if _http is None:
        _http = Client(base_url=os.environ["RECEIVER_URL"], timeout=30, trust_env=False)
    return _http


@app.step(retry=outlast.Retry(attempts=5, initial=0.1))
def send_dedup(i: int) -> int:
    response = http().post("/dedup/effect", json={"i": i})
    response.raise_for_status()
    return int(response.json()["n"])


@app.step(at_most_once=True)
def send_raw(i: int) -> int:
    response = http().post("/raw/effect", json={"key": outlast.idempotency_key()})
    response.raise_for_status()
    return int(response.json()["n"])


def ask_receiver(key: str) -> Any:
    seen = int(http().get("/raw/seen", params={"key": key}).json()["n"])
    return {"n": seen} if seen else NOT_DONE


@app.step(at_most_once=True, reconcile=ask_receiver)
def send_raw_reconciled(i: int) -> Any:
    response = http().post("/raw/effect", json={"key": outlast.idempotency_key()})
    response.raise_for_status()
    return response.json()


@app.transaction
def write_row(conn: Any, run_id: str, i: int) -> int:
    table = os.environ["TORTURE_TABLE"]
    mark = "?" if app.store.dialect == "sqlite" else "%s"
    conn.execute(f"INSERT INTO {table} (run_id, i) VALUES ({mark}, {mark})", (run_id, i))
    return i


@app.workflow
def effects_run(ctx: outlast.Context, n: int) -> int:
    done = 0
    for i in range(n):
        kind = i % 5
        if kind in (0, 1):
            send_dedup(i)
        elif kind == 2:
            send_raw(i)
        elif kind == 3:
            send_raw_reconciled(i)
        else:
            write_row(ctx.run_id, i)
        done += 1
    return done


# -- the harness ---------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a torture round did and found."""

    store: str
    runs: int
    effects: int
    kills: int = 0
    paused_seen: list[tuple[str, str]] = field(default_factory=list)
    resolved: Counter[str] = field(default_factory=Counter)
    reconciled: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"[{self.store}] {self.runs} runs x {self.effects} effects, {self.kills} SIGKILLs, "
            f"{self.seconds:.1f} s; {len(self.paused_seen)} pause(s) resolved by the operator "
            f"({dict(self.resolved)}), {self.reconciled} effect(s) settled by reconcile",
        ]
        out += [f"  paused {rid}: {reason[:110]}..." for rid, reason in self.paused_seen]
        out += [f"  PROBLEM: {p}" for p in self.problems] or ["  every check passed"]
        return out


def _sql(url: str, statements: list[str]) -> None:
    store = outlast.App(url).store
    if store.dialect == "sqlite":
        conn = store._conn  # type: ignore[attr-defined]
        for s in statements:
            conn.execute(s)
    else:
        import psycopg

        with psycopg.connect(store._conninfo, autocommit=True) as conn:  # type: ignore[attr-defined]
            for s in statements:
                conn.execute(s)
    store.close()


def _rows(url: str, table: str) -> list[tuple[str, int]]:
    store = outlast.App(url).store
    if store.dialect == "sqlite":
        rows = store._conn.execute(f"SELECT run_id, i FROM {table}").fetchall()  # type: ignore[attr-defined]
    else:
        import psycopg

        with psycopg.connect(store._conninfo) as conn:  # type: ignore[attr-defined]
            rows = conn.execute(f"SELECT run_id, i FROM {table}").fetchall()
    store.close()
    return [(r[0], int(r[1])) for r in rows]


def torture(
    url: str, workdir: Path, *, runs: int, effects: int, kills: int, delay: float = 0.1,
    concurrency: int = 2, seed: int | None = None, label: str = "",
) -> Summary:
    """Enqueue ``runs`` runs, SIGKILL workers ``kills`` times at random moments, resolve the
    pauses as an operator would (asking the receiver), finish every run, check every effect."""
    from tests.apps.receiver import Receiver

    rng = random.Random(seed)
    table = f"torture_{os.getpid()}_{rng.randrange(10**6)}"
    _sql(url, [f"CREATE TABLE {table} (run_id TEXT NOT NULL, i INTEGER NOT NULL)"])
    summary = Summary(label or url.split(":", 1)[0], runs, effects)
    receiver = Receiver(str(workdir / f"{table}_dedup.db"), delay=delay)
    started = time.monotonic()
    app.use(url)
    operator = app  # this process plays the operator; workers execute
    try:
        with receiver.serve() as base:
            env = {**os.environ, "RECEIVER_URL": base, "TORTURE_TABLE": table, "PYTHONPATH": str(ROOT)}
            ids = [f"t{i}" for i in range(runs)]
            for rid in ids:
                operator.enqueue(effects_run, effects, run_id=rid)
            cmd = [
                sys.executable, "-m", "outlast.cli", "worker", "tests.apps.effects_app:app",
                "--db", url, "--burst", "-c", str(concurrency), "--poll", "0.05",
            ]
            # Kill phase: each worker dies at a random moment; the next one takes over.
            while summary.kills < kills:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
                if rng.random() < 0.8:
                    # Most kills land while effects are in flight: wait for the worker's first
                    # request, then a random moment; the others anywhere, startup included.
                    seen = receiver.started
                    deadline = time.monotonic() + 10
                    while receiver.started == seen and proc.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.005)
                    time.sleep(rng.uniform(0.0, 0.3))
                else:
                    time.sleep(rng.uniform(0.0, 0.8))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    summary.kills += 1
                proc.wait()
                _operate(operator, receiver, summary)
                if all(_settled(operator, rid) for rid in ids):
                    break  # nothing left to interrupt
            # Last phase: no more kills; the operator keeps deciding unknown outcomes.
            for _ in range(runs * effects + 1):
                _operate(operator, receiver, summary)
                # Unhurried now: every run at once.
                final = [*cmd[:-3], str(max(concurrency, runs)), *cmd[-2:]]
                out = subprocess.run(final, cwd=ROOT, env=env, capture_output=True, timeout=300)
                if out.returncode != 0:
                    summary.problems.append(f"final worker exited {out.returncode}: {out.stderr[-500:]!r}")
                    break
                if not operator.list_runs(status="paused", limit=1):
                    break
            receiver.quiet()
            summary.reconciled = _check(operator, url, table, ids, effects, receiver, summary)
    finally:
        operator.close()
        _sql(url, [f"DROP TABLE IF EXISTS {table}"])
    summary.seconds = time.monotonic() - started
    return summary


def _operate(operator: outlast.App, receiver: Any, summary: Summary) -> None:
    """What an operator does with paused runs: ask the receiver whether the effect happened."""
    receiver.quiet()
    for info in operator.list_runs(status="paused", limit=10_000):
        summary.paused_seen.append((info.run_id, info.reason or ""))
        key = str(getattr(_intent(operator, info.run_id), "key", ""))
        seen = receiver.executed["raw"][f"{info.run_id}:{key}"]
        if seen:
            operator.resolve(info.run_id, done=seen)
            summary.resolved["done"] += 1
        else:
            operator.resolve(info.run_id, redo=True)
            summary.resolved["redo"] += 1


def _settled(app: outlast.App, run_id: str) -> bool:
    return app.get_run(run_id, steps=False).status in ("completed", "failed", "paused")


def _intent(app: outlast.App, run_id: str) -> Any:
    return next((s for s in app.get_run(run_id).steps if s.status == "intent"), None)


def _check(
    app: outlast.App, url: str, table: str, ids: list[str], effects: int, receiver: Any,
    summary: Summary,
) -> int:
    problems = summary.problems
    reconciled = 0
    rows = Counter(_rows(url, table))
    for rid in ids:
        info = app.get_run(rid)
        if info.status != "completed":
            problems.append(f"run {rid} is {info.status}: {info.reason or info.error}")
            continue
        for step in info.steps:
            reconciled += bool(step.meta.get("reconciled"))
        sent = [k for k in receiver.executed["dedup"] if k.startswith(f"{rid}:send_dedup:")]
        if len(sent) != sum(1 for j in range(effects) if j % 5 in (0, 1)):
            problems.append(f"run {rid}: the dedup receiver saw keys {sorted(sent)}")
        for name, kind in (("send_raw", 2), ("send_raw_reconciled", 3)):
            expected = sum(1 for j in range(effects) if j % 5 == kind)
            got = {k: v for k, v in receiver.executed["raw"].items() if k.startswith(f"{rid}:{name}:")}
            if len(got) != expected or any(v != 1 for v in got.values()):
                problems.append(f"run {rid}: {name} executions {got} (expected {expected} x 1)")
        want = Counter((rid, i) for i in range(effects) if i % 5 == 4)
        have = Counter({k: v for k, v in rows.items() if k[0] == rid})
        if have != want:
            problems.append(f"run {rid}: transaction rows {dict(have)} != {dict(want)}")
    for key, n in receiver.executed["dedup"].items():
        if n != 1:
            problems.append(f"dedup receiver executed {key} {n} times")
    return reconciled
