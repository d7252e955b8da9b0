"""Checked by mypy (tests/test_typing.py), never run: the front door keeps workflow types."""

from __future__ import annotations

from typing import reveal_type

import outlast
from outlast import Context

app = outlast.App("sqlite:///:memory:")


@app.workflow
def with_ctx(ctx: Context, n: int, label: str = "x") -> list[int]:
    return [n]


@app.workflow
def no_ctx(n: int) -> str:
    return str(n)


@app.workflow(name="named")
async def aflow(ctx: Context, n: int) -> float:
    return float(n)


reveal_type(app.run(with_ctx, 1))  # R: list[int]
reveal_type(app.run(no_ctx, 2))  # R: str
reveal_type(app.run(with_ctx, 1, run_id="r"))  # R: list[int]
reveal_type(app.start(no_ctx, 2).result())  # R: str
reveal_type(app.enqueue(aflow, 3))  # R: outlast.run.Run[float]
app.run(with_ctx, "x")  # E: incompatible type
app.run(no_ctx)  # E: missing argument
app.run(with_ctx, 1, nope=2)  # E: unexpected keyword
