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

PRICE_PER_MTOK = 2.50  # simulated price, dollars per million tokens


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
    from rich.console import Console

    from .. import App
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
            console.print("[red]the agent finished before step 14; nothing to recover[/]")
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
        replayed = [s for s in info.steps[: kill_at - 1]]
        saved_seconds = sum(s.duration or 0 for s in replayed)
        replayed_tokens = 0
        run_result = info.result
        # Tokens of the replayed model calls, from their recorded results.
        from .. import serde

        for entry in App(db).store.load_journal(run_id)[: kill_at - 1]:
            value = serde.loads(entry.output or b"null")
            if isinstance(value, dict) and "tokens" in value:
                replayed_tokens += int(value["tokens"])
        console.print("\n[bold]What recovery saved[/]")
        console.print(f"  steps 1-{kill_at - 1} came back from the journal: {len(replayed)} steps, "
                      f"0 re-executed ({sorted(second['executed'])} ran after the crash)")
        console.print(f"  time not spent again: {saved_seconds:.1f} s of the first attempt's {first_seconds:.1f} s "
                      f"(resume took {second_seconds:.1f} s)")
        console.print(f"  model tokens not bought again: {replayed_tokens} "
                      f"(${replayed_tokens * PRICE_PER_MTOK / 1e6:.4f} at ${PRICE_PER_MTOK}/M tokens); "
                      f"model requests after the crash: {llm.count() - calls_before}")
        console.print(f"  meeting scheduled: {outbox.delivered.get('/calendar', 0)}x, "
                      f"team emailed: {outbox.delivered.get('/email', 0)}x "
                      f"(duplicates refused by the receiver: {outbox.duplicates})")
        console.print(f"  result: meeting {run_result['meeting']}, synthesis "
                      f"{run_result['synthesis'][:60]!r}...")
        ok = (
            outbox.delivered.get("/calendar") == 1
            and outbox.delivered.get("/email") == 1
            and min(second["executed"]) == kill_at
        )
    console.print(f"\nInspect it: [bold]outlast show {run_id} --db {db}[/]")
    return 0 if ok else 1
