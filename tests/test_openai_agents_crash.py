"""OpenAI Agents SDK runs under outlast across real processes: the real ``openai-agents``
package against the local model server, the agent process SIGKILLed inside its second tool
call and the run finished by another process (this one). No model request made before the
crash is sent again, the first tool does not run again, and the output is that of an
uninterrupted run; the same streamed, with parallel tool calls, inside a sub-agent used as
a tool, and with a human approval that waits across a restart. The agent is in
tests/apps/oa_agent.py.

One process per case is started (and killed): the uninterrupted baseline and the rerun run
here, where ``agents`` is imported once. PostgreSQL runs the sequential case only; what the
other cases vary is the adapter, not the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from tests.apps import oa_agent  # noqa: E402
from tests.proc import wait_for_line  # noqa: E402

import outlast  # noqa: E402
from outlast.testing.llm_server import FakeLLMServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

pytestmark = pytest.mark.counts_executions

#: model requests of an uninterrupted run, by mode (par: both tools in one turn; subagent:
#: two of the boss, three of the helper)
REQUESTS = {"seq": 3, "stream": 3, "par": 2, "subagent": 5}
#: the uninterrupted run's output per mode, computed once
_baselines: dict[str, Any] = {}


def start(db: str, server: FakeLLMServer, run_id: str, mode: str, log: Path) -> Any:
    args = [sys.executable, "-m", "tests.apps.oa_agent", db, server.openai_base_url]
    args += [run_id, mode, str(log), "hang"]
    return subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)


def run_here(db: str, server: FakeLLMServer, run_id: str, mode: str, log: Path) -> Any:
    """Run (or resume) ``run_id`` in this process, as a new process would."""
    oa_agent.use(log, mode, run_id)
    oa_agent.app.use(db)
    try:
        return json.loads(
            json.dumps(
                oa_agent.app.run(oa_agent.clerk, server.openai_base_url, mode, run_id=run_id)
            )
        )
    finally:
        oa_agent.app.close()


def baseline(mode: str, tmp_path: Path) -> Any:
    if mode not in _baselines:
        with FakeLLMServer(oa_agent.responder) as server:
            db = f"sqlite:///{tmp_path / 'clean.db'}"
            _baselines[mode] = run_here(db, server, f"clean-{mode}", mode, tmp_path / "clean.log")
            assert server.count() == REQUESTS[mode]
    return _baselines[mode]


def bodies(server: FakeLLMServer) -> list[str]:
    return [json.dumps(r.body, sort_keys=True) for r in server.requests]


def crash_and_resume(db: str, tmp_path: Path, mode: str) -> tuple[Any, list[str], list[str]]:
    """SIGKILL the agent inside ``second``, finish the run here: (output, requests before the
    crash, all requests)."""
    log = tmp_path / "tools.log"
    with FakeLLMServer(oa_agent.responder) as server:
        proc = start(db, server, "r1", mode, log)
        try:
            wait_for_line(log, "hang second", proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        before = bodies(server)
        resumed = run_here(db, server, "r1", mode, log)
        return resumed, before, bodies(server)


def check_resumed(db: str, tmp_path: Path, mode: str, first_runs: int = 1) -> None:
    resumed, before, after = crash_and_resume(db, tmp_path, mode)
    total = REQUESTS[mode]
    left = 2 if mode == "subagent" else 1  # the helper's last request, then the boss's
    assert len(before) == total - left  # made before the crash
    assert after[: total - left] == before and len(after) == total  # none sent again
    assert len(set(after)) == total
    lines = (tmp_path / "tools.log").read_text().splitlines()
    assert lines.count("start first") == first_runs
    assert lines.count("start second") == 2 and lines.count("done second") == 1
    assert resumed == baseline(mode, tmp_path)
    with outlast.App(db) as reader:
        info = reader.get_run("r1")
    assert info.status == "completed" and info.recoveries == 1
    assert info.stats["llm_calls"] == total and info.stats["tokens"] > 0
    keys = [s.key for s in info.steps]
    models = [k for k in keys if k.startswith("agents.model")]
    if mode == "subagent":
        assert resumed["output"] == "boss: done: first 1 | second 2"
        assert keys.count("tool:helper:h1") == 1
        assert models == [f"agents.model:{k}" for k in ("1", "h1.1", "h1.2", "h1.3", "2")]
        return
    assert resumed["output"] == "done: first 1 | second 2"
    assert keys.count("tool:first:c1") == keys.count("tool:second:c2") == 1
    assert models == [f"agents.model:{n}" for n in range(1, total + 1)]


def test_sigkill_in_the_second_tool_resumes_without_resending(
    store_url: str, tmp_path: Path
) -> None:
    check_resumed(store_url, tmp_path, "seq")


@pytest.mark.parametrize("mode", ["stream", "par"])
def test_sigkill_in_a_streamed_or_parallel_tool_call(
    sqlite_url: str, tmp_path: Path, mode: str
) -> None:
    check_resumed(sqlite_url, tmp_path, mode)


def test_sigkill_inside_a_sub_agent_used_as_a_tool(sqlite_url: str, tmp_path: Path) -> None:
    # The helper's requests are journaled one by one inside its tool call: none made before
    # the crash is sent again. Its own tools are plain (the SDK runs the helper agent
    # itself), so `first` runs again; durable_agent(helper).as_tool(...) would journal it.
    check_resumed(sqlite_url, tmp_path, "subagent", first_runs=2)


def status(app: outlast.App, run_id: str) -> str | None:
    try:
        return app.get_run(run_id, steps=False).status
    except outlast.RunNotFound:
        return None


def test_an_approval_waits_across_a_process_restart(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "tools.log"
    with FakeLLMServer(oa_agent.responder) as server:
        args = [sys.executable, "-m", "tests.apps.oa_agent", sqlite_url, server.openai_base_url]
        proc = subprocess.Popen(
            [*args, "ap", "approval", str(log)], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL
        )
        try:
            with outlast.App(sqlite_url) as human:
                deadline = time.monotonic() + 30
                while status(human, "ap") != "suspended":
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.02)
                proc.send_signal(signal.SIGKILL)  # nobody is waiting in memory any more
                proc.wait()
                assert server.count() == 2
                human.send("ap", "approval", "yes")
        finally:
            proc.kill()
            proc.wait()
        resumed = run_here(sqlite_url, server, "ap", "approval", log)
        assert server.count() == 3
    assert resumed == {"output": "done: first 1 | refund 2 yes"}
    lines = log.read_text().splitlines()
    assert lines == ["start first", "done first", "start refund", "start refund", "done refund yes"]
