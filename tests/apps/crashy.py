"""A workflow for crash tests: each step appends its name to a log file (one line per real
execution), and the step named in $CRASHY_HANG announces itself and hangs, to be SIGKILLed.

Run as a script: ``python -m tests.apps.crashy DB_URL RUN_ID N`` runs ``chain`` with N steps.
"""

from __future__ import annotations

import os
import sys
import time

import outlast

app = outlast.App()
LOG = os.environ.get("CRASHY_LOG")


def _log(line: str) -> None:
    if LOG is None:
        return
    with open(LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@app.step
def work(i: int) -> int:
    _log(f"start {i}")
    if os.environ.get("CRASHY_HANG") == str(i):
        time.sleep(60)  # the test kills us here
    _log(f"done {i}")
    return i * i


@app.workflow
def chain(ctx: outlast.Context, n: int) -> int:
    return sum(work(i) for i in range(1, n + 1))


if __name__ == "__main__":
    app.use(sys.argv[1])
    print(app.run(chain, int(sys.argv[3]), run_id=sys.argv[2]), flush=True)
