"""Writes tests/data/v010.db with outlast 0.1.0 (tests/test_v010_db.py reads it today).

    git archive 03d242e | tar -x -C /tmp/outlast-010
    PYTHONPATH=/tmp/outlast-010/src python tests/data/make_v010_db.py tests/data/v010.db

Runs with steps, a large blob, an event, a stash, a failure, and one suspended mid-way (a
later outlast continues it).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys

import outlast
from outlast.worker import Worker

path = sys.argv[1]
if os.path.exists(path):
    os.remove(path)
app = outlast.App(f"sqlite:///{path}")


@app.step
def add(a: int, b: int) -> int:
    return a + b


@app.step
def big(n: int) -> str:
    return "0.1.0 blob " + "x" * n


@app.step
def boom() -> None:
    raise ValueError("0.1.0 failure")


@app.workflow(name="steps")
def steps(ctx: outlast.Context, x: int) -> dict[str, object]:
    return {"sum": add(x, 1), "big": len(big(5000)), "text": big(10)}


@app.workflow(name="stashed")
def stashed(ctx: outlast.Context, x: int) -> int:
    total = add(x, 2)
    ctx.stash({"total": total})
    return add(total, 3)


@stashed.on_recovered
def stashed_again(ctx: outlast.Context, snap: dict[str, int], x: int) -> int:
    return add(snap["total"], 3)


@app.workflow(name="failing")
def failing(ctx: outlast.Context) -> None:
    add(1, 1)
    boom()


@app.workflow(name="waiting")
def waiting(ctx: outlast.Context, x: int) -> int:
    first = add(x, 10)
    got = ctx.wait_for("go", timeout=3600)
    return first + int(got["n"]) + add(first, 0)


assert app.run(steps, 1, run_id="steps-1") == {"sum": 2, "big": 5011, "text": "0.1.0 blob xxxxxxxxxx"}
assert app.run(stashed, 4, run_id="stashed-1") == 9
with contextlib.suppress(ValueError):
    app.run(failing, run_id="failing-1")
app.start(waiting, 5, run_id="waiting-1")
Worker(app, burst=True).run()  # runs it up to its wait: suspended, waiting for "go"
app.send("waiting-1", "other", {"n": 1})  # an event nobody waits for (kept pending)
app.close()
with sqlite3.connect(path) as db:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print("wrote", path)
