"""One workflow in three versions, for the evolution tests (tests/test_evolution.py).

``v1``: ``a``, then wait for "go", then ``b``. ``patched``: v1 plus an ``audit`` step before
the wait, guarded by ``ctx.patched``. ``unguarded``: the same change without the guard.
Every step appends its name to the file named by ``$EVOLVE_LOG`` (when set), so a test sees
exactly what executed, in this process or another.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import outlast


def mark(name: str) -> None:
    path = os.environ.get("EVOLVE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


def build(version: str, url: str | None = None, *, timeout: float | None = None) -> outlast.App:
    """An app with workflow ``flow`` as in ``version`` (v1, patched, unguarded)."""
    app = outlast.App(url)

    @app.step
    def a(x: int) -> int:
        mark("a")
        return x + 1

    @app.step
    def audit(y: int) -> int:
        mark("audit")
        return y

    @app.step
    def b(x: int) -> int:
        mark("b")
        return x * 10

    @app.workflow(name="flow")
    def flow(ctx: outlast.Context, x: int) -> int:
        y = a(x)
        if version == "unguarded" or (version == "patched" and ctx.patched("audit-before-wait")):
            audit(y)
        go: dict[str, Any] = ctx.wait_for("go", timeout=timeout)
        return b(y + go["v"])

    return app


v1 = build("v1")
patched = build("patched")
unguarded = build("unguarded")


def long_app(url: str | None = None, steps: int = 400) -> outlast.App:
    """``long``: ``steps`` steps, then ``last``, which fails while ``$EVOLVE_BROKEN`` is 1.
    ``waiting``: ``steps`` steps, then a wait for event "go", each step noting ``w<i>`` in
    ``$EVOLVE_LOG``. Leases last ``$EVOLVE_LEASE`` seconds (default 10): a test that kills a
    process mid-run takes its runs over that soon."""
    app = outlast.App(url, lease=float(os.environ.get("EVOLVE_LEASE", "10")))

    @app.step
    def step(i: int) -> int:
        return i

    @app.step
    def noted(i: int) -> int:
        mark(f"w{i}")
        return i

    @app.workflow
    def waiting(ctx: outlast.Context) -> int:
        total = sum(noted(i) for i in range(steps))
        return total + int(ctx.wait_for("go"))

    @app.step
    def last(total: int) -> int:
        if os.environ.get("EVOLVE_BROKEN") == "1":
            raise ValueError("still broken")
        return total

    @app.workflow
    def long(ctx: outlast.Context) -> int:
        return last(sum(step(i) for i in range(steps)))

    return app


def churn(url: str, what: str, log: str) -> None:
    """Fork run ``long-src`` again and again (``what="fork"``), fork the waiting run
    ``wait-src`` and execute each fork to its wait (``"fork-run"``), or retry and re-fail run
    ``long-bad`` again and again (``"retry"``), noting each one done in ``log``; a test
    kills this process with SIGKILL somewhere in the middle."""
    app = long_app(url)
    with open(log, "a") as out:
        for i in range(100_000):
            if what == "fork":
                app.fork("long-src", "300", new_run_id=f"f{i}", execute=False)
            elif what == "fork-run":  # fork a waiting run and execute the fork up to its wait
                app.fork("wait-src", "150", new_run_id=f"w{i}")
                while app.get_run(f"w{i}", steps=False).status != "suspended":
                    time.sleep(0.01)
            else:
                with contextlib.suppress(ValueError):  # still broken: it fails again
                    app.retry("long-bad").result(timeout=60)
            out.write(f"{i}\n")
            out.flush()


if __name__ == "__main__":
    import sys

    churn(sys.argv[1], sys.argv[2], sys.argv[3])
