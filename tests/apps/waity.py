"""Workflows that wait, for tests run in real processes (SIGKILL, worker thread counts).

Each step appends a line to $WAITY_LOG (one line per real execution).
Run as a script: ``python -m tests.apps.waity DB_URL RUN_ID SECONDS`` runs ``napper``.
"""

from __future__ import annotations

import os
import sys

import outlast

app = outlast.App(hibernate_after=float(os.environ.get("WAITY_HIBERNATE_AFTER", "0.5")))
LOG = os.environ.get("WAITY_LOG", "waity.log")


def _log(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@app.step
def note(line: str) -> str:
    _log(line)
    return line


@app.workflow
def napper(ctx: outlast.Context, seconds: float) -> str:
    note("before")
    ctx.sleep(seconds)
    return note("after")


@app.workflow
def waiter(ctx: outlast.Context) -> object:
    return ctx.wait_for("go")


if __name__ == "__main__":
    app.use(sys.argv[1])
    print(app.run(napper, float(sys.argv[3]), run_id=sys.argv[2]))
