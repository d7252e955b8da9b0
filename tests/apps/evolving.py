"""One workflow in three versions, for the evolution tests (tests/test_evolution.py).

``v1``: ``a``, then wait for "go", then ``b``. ``patched``: v1 plus an ``audit`` step before
the wait, guarded by ``ctx.patched``. ``unguarded``: the same change without the guard.
Every step appends its name to the file named by ``$EVOLVE_LOG`` (when set), so a test sees
exactly what executed, in this process or another.
"""

from __future__ import annotations

import os
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
