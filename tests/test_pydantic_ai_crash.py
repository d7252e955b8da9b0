"""Pydantic AI agents with OutlastDurability across real processes: SIGKILLed inside the second
of two tool calls (one after the other, streamed, or in parallel), rerun in a new process, the
agent sends no model request made before the crash again, does not run the first tool again,
and ends with the output of an uninterrupted run. A human approval waits across a process
restart. The model is the local server in this process; the agent is tests/apps/pai_agent.py.

Only the process that is killed (or that leaves the run waiting) is started: the
uninterrupted baseline and the run's end happen in this process, which imports pydantic_ai
once. PostgreSQL runs the sequential case only; the other cases vary the adapter, not the
store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pydantic_ai")

from tests.proc import wait_for_line  # noqa: E402

import outlast  # noqa: E402
from outlast.testing.llm_server import FakeLLMServer  # noqa: E402
from outlast.worker import Worker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    from tests.apps.pai_agent import scripted

    with FakeLLMServer(scripted) as srv:
        yield srv


def _env(log: Path, hang: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PAI_LOG": str(log), "PYTHONPATH": str(ROOT)}
    env.pop("PAI_HANG", None)
    if hang is not None:
        env["PAI_HANG"] = hang
    return env


def _cmd(url: str, server: FakeLLMServer, run_id: str, mode: str) -> list[str]:
    return [sys.executable, "-m", "tests.apps.pai_agent", url, server.openai_base_url, run_id, mode]


def _finish(url: str, server: FakeLLMServer, run_id: str, mode: str, log: Path) -> str:
    """Finish ``run_id`` in this process, as a new process would."""
    from tests.apps import pai_agent

    pai_agent.LOG = str(log)
    pai_agent.app.use(url)
    try:
        return str(pai_agent.app.run(pai_agent.shop, server.openai_base_url, mode, run_id=run_id))
    finally:
        pai_agent.app.close()
        pai_agent.LOG = None


def _recorded(url: str, run_id: str, key: str) -> bool:
    with outlast.App(url) as reader:
        return any(s.key == key and s.status == "completed" for s in reader.get_run(run_id).steps)


ADD = "shop__function_toolset__<agent>.call_tool:add:call_add"


def _clean_run(url: str, server: FakeLLMServer, mode: str) -> tuple[str, int]:
    """The output and the number of model requests of an uninterrupted run (in this process)."""
    from tests.apps import pai_agent

    pai_agent.app.use(url)
    try:
        output = pai_agent.app.run(
            pai_agent.shop, server.openai_base_url, mode, run_id=f"clean-{mode}"
        )
    finally:
        pai_agent.app.close()
    count = server.count()
    server.reset()
    return output, count


def _crash_and_rerun(url: str, tmp_path: Path, server: FakeLLMServer, mode: str) -> None:
    clean, uninterrupted = _clean_run(url, server, mode)
    log = tmp_path / "tools.log"
    cmd = _cmd(url, server, f"crash-{mode}", mode)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(log, hang="mul"), stdout=subprocess.DEVNULL)
    try:
        wait_for_line(log, "hang mul", proc)
        deadline = time.monotonic() + 30
        while not _recorded(url, f"crash-{mode}", ADD):  # parallel: add may still be recording
            assert time.monotonic() < deadline, "the first tool call was never journaled"
            time.sleep(0.02)
        before = server.count()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    assert _finish(url, server, f"crash-{mode}", mode, log) == clean == "results: 3, 12"
    counts = Counter(log.read_text().splitlines())
    assert counts["start add"] == counts["done add"] == 1, counts  # the first tool: once
    assert counts["start mul"] == 2 and counts["done mul"] == 1, counts
    # The requests made before the crash were answered from the journal: only what was left
    # of the conversation reached the model.
    assert server.count() == uninterrupted
    assert before == (1 if mode == "parallel" else 2)
    with outlast.App(url) as reader:
        info = reader.get_run(f"crash-{mode}")
    assert info.status == "completed" and info.recoveries == 1
    assert info.stats["llm_calls"] == uninterrupted and info.stats["tokens"] > 0


def test_sigkill_in_the_second_tool_call_resumes_without_resending(
    store_url: str, tmp_path: Path, server: FakeLLMServer
) -> None:
    _crash_and_rerun(store_url, tmp_path, server, "seq")


# The store is not what these vary, so they run on SQLite only.
@pytest.mark.parametrize("mode", ["stream", "parallel"])
def test_sigkill_in_a_streamed_or_parallel_tool_call(
    sqlite_url: str, tmp_path: Path, server: FakeLLMServer, mode: str
) -> None:
    _crash_and_rerun(sqlite_url, tmp_path, server, mode)


def test_a_human_approval_waits_across_a_process_restart(
    sqlite_url: str, tmp_path: Path, server: FakeLLMServer
) -> None:
    from pydantic_ai import DeferredToolResults
    from tests.apps import pai_agent

    from outlast.integrations.pydantic_ai import answer

    log = tmp_path / "approve.log"
    worker = [
        sys.executable,
        "-m",
        "outlast.cli",
        "worker",
        "tests.apps.pai_agent:app",
        "--db",
        sqlite_url,
        "--burst",
        "--poll",
        "0.05",
    ]
    pai_agent.app.use(sqlite_url)
    try:
        pai_agent.app.enqueue(pai_agent.shop, server.openai_base_url, "approve", run_id="hitl")
        first = subprocess.run(worker, cwd=ROOT, env=_env(log), capture_output=True, timeout=90)
        assert first.returncode == 0, first.stderr
        assert pai_agent.app.get_run("hitl", steps=False).status == "suspended"
        (line,) = [x for x in log.read_text().splitlines() if x.startswith("token ")]
        token = line.removeprefix("token ")
        assert token == "hitl deferred_tool_calls:1"
        assert server.count() == 1

        answer(pai_agent.app, token, DeferredToolResults(approvals={"call_refund": True}))
        pai_agent.LOG = str(log)  # the first worker has exited: this process finishes the run
        Worker(pai_agent.app, burst=True, poll=0.05).run()
        info = pai_agent.app.get_run("hitl")
    finally:
        pai_agent.LOG = None
        pai_agent.app.close()
    assert info.status == "completed", info.error
    assert info.result == "refund: refunded 1 for A7"
    # asked once (the restart replayed the answer to `ask`), the tool ran once, after approval
    assert log.read_text().splitlines() == [line, "start refund", "done refund"]
    assert server.count() == 2  # the request before the wait was not sent again
