"""Workflows for the fleet tests and benchmark, run by ``outlast worker tests.apps.fleet_app:app``.

Every step appends one line per real execution to ``$FLEET_LOG`` (O_APPEND writes of one short
line, so several processes can share the file). Knobs, all read from the environment:

- ``FLEET_LEASE``: the app's lease in seconds (default 1.0: tests stay fast);
- ``FLEET_HANG_AFTER=N``: from this process's N-th step execution on, steps hang (to be
  killed or stopped mid-step); each hanging step first logs ``hang``;
- ``FLEET_FAKE_HOST=1``: pretend to run on another machine, so a dead worker's runs are taken
  over when their lease expires, not at once by the dead-process check of its host;
- ``FLEET_STEP_SLEEP``: seconds each ``unit`` step sleeps (default 0.005).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid

import outlast
from outlast import owner

if os.environ.get("FLEET_FAKE_HOST") == "1":
    owner._HOST = f"elsewhere-{uuid.uuid4().hex[:6]}"

app = outlast.App(lease=float(os.environ.get("FLEET_LEASE", "1.0")))
app.queue("llm", concurrency=2)
app.queue("solo", worker_concurrency=1)
app.queue("keyed", key_concurrency=1)
app.queue("rated", rate_limit=3, rate_period=1.0)
app.queue("single", concurrency=1)

_executions = itertools.count(1)
_count_lock = threading.Lock()


def log(line: str) -> None:
    """Append one line to the shared side log."""
    fd = os.open(os.environ["FLEET_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def _maybe_hang() -> None:
    with _count_lock:
        n = next(_executions)
    limit = os.environ.get("FLEET_HANG_AFTER")
    if limit is not None and n >= int(limit):
        log(f"hang {os.getpid()}")
        time.sleep(120)  # the test kills or stops us here


@app.step
def unit(run_id: str, j: int) -> int:
    """A short step: logs its execution, returns the executing pid."""
    log(f"start {run_id}:{j} {os.getpid()}")
    _maybe_hang()
    time.sleep(float(os.environ.get("FLEET_STEP_SLEEP", "0.005")))
    log(f"done {run_id}:{j} {os.getpid()}")
    return os.getpid()


@app.workflow
def triple(ctx: outlast.Context) -> list[int]:
    """Three short steps; returns the pids that executed them."""
    return [unit(ctx.run_id, j) for j in range(3)]


@app.step
def nap(run_id: str, j: int, seconds: float) -> int:
    """A step of ``seconds``; logs start and end."""
    log(f"start {run_id}:{j} {os.getpid()} {time.time()}")
    _maybe_hang()
    time.sleep(seconds)
    log(f"done {run_id}:{j} {os.getpid()} {time.time()}")
    return os.getpid()


@app.workflow
def slow(ctx: outlast.Context, steps: int, seconds: float) -> list[int]:
    """``steps`` steps of ``seconds`` each; returns the pids that executed them."""
    return [nap(ctx.run_id, j, seconds) for j in range(steps)]


@app.step
def hold(scopes: list[str], seconds: float) -> None:
    """Occupy one slot of each scope for ``seconds`` and log how many slots were occupied.

    A scope is a folder under ``$FLEET_LOG.active``; ``{pid}`` in its name is this process.
    The count is taken after our own file exists, so two overlapping holders see each other.
    """
    base = os.environ["FLEET_LOG"] + ".active"
    mine = []
    for scope in scopes:
        folder = os.path.join(base, scope.replace("{pid}", str(os.getpid())))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, uuid.uuid4().hex)
        open(path, "w").close()
        mine.append((folder, path))
    for folder, _ in mine:
        log(f"count {os.path.basename(folder)} {len(os.listdir(folder))} {time.time()}")
    time.sleep(seconds)
    for _, path in mine:
        os.unlink(path)


@app.workflow(queue="llm")
def gated(ctx: outlast.Context, scopes: list[str], seconds: float) -> str:
    """One ``hold`` step; the queue comes from the decoration (``llm``) or from the start."""
    hold(scopes, seconds)
    return ctx.run_id


@app.workflow
def dozing(ctx: outlast.Context, seconds: float) -> list[int]:
    """A step, an in-memory ``ctx.sleep`` of ``seconds``, another step."""
    first = nap(ctx.run_id, 0, 0.0)
    ctx.sleep(seconds)
    return [first, nap(ctx.run_id, 1, 0.0)]
