"""``outlast demo``: a research agent killed with SIGKILL at step 14, then resumed.

The parent process serves a simulated model (:mod:`outlast.testing.llm_server`, with realistic
latency and token counts) and a deduplicating calendar/mail service on 127.0.0.1, runs the
agent (:mod:`outlast.demo.agent`) in a child process, kills it when step 14 starts, starts it
again and shows what came back from the journal. No keys, no network.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any


def _spawn(db: str, llm: str, outbox: str, run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "outlast.demo.agent", db, llm, outbox, run_id],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _follow(proc: subprocess.Popen[str], console: Any, kill_at: int | None) -> dict[str, Any]:
    """Render the child's progress; SIGKILL it when step ``kill_at`` starts executing."""
    executed: set[int] = set()
    pending_exec = False
    last_step = 0
    finished: dict[str, Any] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event["event"] == "exec":
            pending_exec = True
            if kill_at is not None and last_step + 1 == kill_at:
                console.print(
                    f"  [bold red]step {kill_at:2d}  {event['name']:<18} SIGKILL[/] "
                    "(the container was rescheduled)"
                )
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return {"killed": True}
        elif event["event"] == "step":
            last_step = event["n"]
            if pending_exec:
                executed.add(last_step)
                console.print(f"  [green]step {last_step:2d}  {event['name']:<18} ran[/]")
            else:
                console.print(f"  [cyan]step {last_step:2d}  {event['name']:<18} from the journal[/]")
            pending_exec = False
        elif event["event"] == "finished":
            finished = event
    proc.wait()
    return {"killed": False, "executed": executed, **finished}


def run_demo(db: str | None = None, kill_at: int = 14) -> int:
    """Run the demo; returns a process exit code."""
    import importlib.util

    from rich.console import Console

    from .. import App

    if importlib.util.find_spec("openai") is None:
        print("outlast demo needs the openai SDK: pip install 'outlast[demo]'", file=sys.stderr)
        return 1
    from ..testing.llm_server import FakeLLMServer
    from .outbox import Outbox

    console = Console()
    tmp = None
    if db is None:
        tmp = tempfile.mkdtemp(prefix="outlast-demo-")
        db = f"sqlite:///{tmp}/demo.db"
    run_id = f"research-{int(time.time())}"
    console.print(f"[bold]outlast demo[/]: a research agent, 16 durable steps. Store: {db}")
    with FakeLLMServer(latency=0.45, reply_tokens=220) as llm, Outbox() as outbox:
        console.print("\n[bold]First attempt[/]")
        t0 = time.monotonic()
        first = _follow(_spawn(db, llm.url, outbox.url, run_id), console, kill_at)
        first_seconds = time.monotonic() - t0
        if not first.get("killed"):
            console.print(f"[red]the agent finished before step {kill_at}; nothing to recover[/]")
            return 1
        calls_before = llm.count()
        console.print(f"\n[bold]Second attempt[/] (same run id {run_id!r}): resume")
        t1 = time.monotonic()
        second = _follow(_spawn(db, llm.url, outbox.url, run_id), console, None)
        second_seconds = time.monotonic() - t1
        info = App(db).get_run(run_id)
        if info.status != "completed":
            console.print(f"[red]run ended {info.status}[/]")
            return 1
        replayed = info.steps[: kill_at - 1]
        stats = info.stats
        console.print("\n[bold]What recovery saved[/] (from the run's stats, `outlast show`)")
        console.print(f"  steps 1-{kill_at - 1} came back from the journal: "
                      f"{int(stats.get('saved_steps', 0))} durable calls, 0 re-executed "
                      f"({sorted(second['executed'])} ran after the crash)")
        console.print(f"  time not spent again: {stats.get('saved_seconds', 0.0):.1f} s of the first "
                      f"attempt's {first_seconds:.1f} s (resume took {second_seconds:.1f} s)")
        console.print(f"  model tokens not bought again: {int(stats.get('saved_tokens', 0))} "
                      f"(${stats.get('saved_cost', 0.0):.4f}, from the recorded usage at the demo's "
                      f"price); model requests after the crash: {llm.count() - calls_before}")
        console.print(f"  spent by the run in all: {int(stats.get('tokens', 0))} tokens, "
                      f"${stats.get('cost', 0.0):.4f}")
        console.print(f"  meeting scheduled: {outbox.delivered.get('/calendar', 0)}x, "
                      f"team emailed: {outbox.delivered.get('/email', 0)}x "
                      f"(duplicates refused by the receiver: {outbox.duplicates})")
        console.print(f"  result: meeting {info.result['meeting']}, synthesis "
                      f"{info.result['synthesis'][:60]!r}...")
        ok = (
            outbox.delivered.get("/calendar") == 1
            and outbox.delivered.get("/email") == 1
            and min(second["executed"]) == kill_at
            and len(replayed) == kill_at - 1
            and stats.get("saved_tokens", 0) > 0
        )
    console.print(f"\nInspect it: [bold]outlast show {run_id} --db {db}[/]")
    return 0 if ok else 1
