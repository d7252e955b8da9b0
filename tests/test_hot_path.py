"""The shortcuts of the per-step hot path (docs/benchmarks.md, step overhead against 0.1.0)
agree with the long way: the positional journal entry, and the partial indexes' conditions."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import outlast
from outlast import serde
from outlast.retry import Retry
from outlast.store.sqlite_schema import FINISHED, LIVE


def test_a_journaled_step_records_every_field_where_it_belongs(tmp_path: Path) -> None:
    app = outlast.App(f"sqlite:///{tmp_path}/t.db")
    tries: list[int] = []

    @app.step(retry=Retry(attempts=3, initial=0.0, jitter=False))
    def charge(amount: int, currency: str) -> dict[str, object]:
        tries.append(amount)
        if len(tries) == 1:
            raise ConnectionError("flaky")
        return {"charged": amount, "currency": currency}

    @app.workflow
    def wf(ctx: outlast.Context) -> object:
        ctx.now()
        return charge(5, "eur")

    try:
        handle = app.start(wf)
        assert handle.result(timeout=30) == {"charged": 5, "currency": "eur"}
        step, now = sorted(
            app.store.load_journal(handle.run_id), key=lambda e: e.position, reverse=True
        )
    finally:
        app.close()
    assert (step.key, step.position, step.kind, step.name, step.status) == (
        "charge:1",
        1,
        "step",
        "charge",
        "completed",
    )
    assert serde.loads(step.output or b"") == {"charged": 5, "currency": "eur"}
    assert step.args_hash == serde.fingerprint(repr((5, "eur")).encode())
    assert step.attempts == 2
    assert step.ended_at is not None and 0 < step.started_at <= step.ended_at
    assert "eur" in json.loads(step.meta or "{}")["args"]
    assert (now.kind, now.name, now.status, now.args_hash, now.attempts) == (
        "now",
        "now",
        "completed",
        None,
        1,
    )


def test_partial_index_conditions_are_spelled_without_in_lists(tmp_path: Path) -> None:
    # SQLite compiles `status IN (3 constants)` into a temporary table at every evaluation,
    # and evaluates a partial index's condition for every row a run write touches.
    app = outlast.App(f"sqlite:///{tmp_path}/t.db")
    app.store  # noqa: B018  (opens and migrates the file)
    app.close()
    conn = sqlite3.connect(tmp_path / "t.db")
    indexes = dict(
        conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
    )
    assert LIVE in indexes["outlast_runs_live"] and FINISHED in indexes["outlast_runs_ended"]
    update = (
        "UPDATE outlast_runs SET status = 'completed', ended_at = 1 "
        "WHERE run_id = 'r' AND epoch = 1 AND status = 'running'"
    )
    insert = (
        "INSERT INTO outlast_runs (run_id, workflow, status, input, input_hash, created_at) "
        "VALUES ('r', 'wf', 'running', x'', 'h', 1)"
    )
    for statement in (update, insert):
        ops = [row[1] for row in conn.execute(f"EXPLAIN {statement}")]
        assert "OpenEphemeral" not in ops, statement
    # The queries that repeat the conditions still use the partial indexes.
    conn.executemany(
        "INSERT INTO outlast_runs (run_id, workflow, status, input, input_hash, created_at, "
        "ended_at) VALUES (?, 'wf', ?, x'', 'h', ?, ?)",
        [
            (
                f"r{i:05d}",
                "pending" if i % 500 == 0 else "completed",
                i,
                None if i % 500 == 0 else i + 1,
            )
            for i in range(5000)
        ],
    )
    conn.execute("ANALYZE")
    claim = conn.execute(
        f"EXPLAIN QUERY PLAN SELECT run_id FROM outlast_runs WHERE status = 'pending' AND "
        f"{LIVE} ORDER BY priority DESC, created_at, run_id LIMIT 1"
    ).fetchall()
    prune = conn.execute(
        f"EXPLAIN QUERY PLAN SELECT run_id FROM outlast_runs WHERE {FINISHED} AND "
        "ended_at < 100 ORDER BY ended_at LIMIT 10"
    ).fetchall()
    conn.close()
    assert "outlast_runs_live" in str(claim)
    assert "outlast_runs_ended" in str(prune)
