"""OpenAI Agents SDK runs under outlast across real processes: the real ``openai-agents``
package against the local model server, the agent process SIGKILLed inside its second tool
call and run again in a new process. No model request made before the crash is sent again,
the first tool does not run again, and the output is that of an uninterrupted run; the same
streamed, with parallel tool calls, and with a human approval that waits across a restart.
The agent is in tests/apps/oa_agent.py.
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

from tests.apps.oa_agent import responder  # noqa: E402
from tests.proc import wait_for_line  # noqa: E402

import outlast  # noqa: E402
from outlast.testing.llm_server import FakeLLMServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

pytestmark = pytest.mark.counts_executions


def cmd(db: str, server: FakeLLMServer, run_id: str, mode: str, log: Path, *hang: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.apps.oa_agent",
        db,
        server.openai_base_url,
        run_id,
        mode,
        str(log),
        *hang,
    ]


def finish(args: list[str]) -> Any:
    done = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def bodies(server: FakeLLMServer) -> list[str]:
    return [json.dumps(r.body, sort_keys=True) for r in server.requests]


def clean_run(db: str, mode: str, tmp_path: Path) -> Any:
    with FakeLLMServer(responder) as server:
        out = finish(cmd(db, server, f"clean-{mode}", mode, tmp_path / "clean.log"))
        assert server.count() == (2 if mode == "par" else 3)
    return out


@pytest.mark.parametrize("mode", ["seq", "stream", "par"])
def test_sigkill_in_the_second_tool_resumes_without_resending(
    store_url: str, tmp_path: Path, mode: str
) -> None:
    log = tmp_path / "tools.log"
    with FakeLLMServer(responder) as server:
        proc = subprocess.Popen(
            cmd(store_url, server, "r1", mode, log, "hang"),
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
        )
        wait_for_line(log, "hang second", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = bodies(server)
        resumed = finish(cmd(store_url, server, "r1", mode, log))
        after = bodies(server)
    total = 2 if mode == "par" else 3  # model requests in all (par: both tools in one turn)
    assert len(before) == total - 1  # made before the crash
    assert after[: total - 1] == before and len(after) == total  # only the last one is new
    assert len(set(after)) == total
    lines = log.read_text().splitlines()
    assert lines.count("start first") == 1  # the first tool did not run again
    assert lines.count("start second") == 2 and lines.count("done second") == 1
    assert resumed == clean_run(store_url, mode, tmp_path)
    assert resumed["output"] == "done: first 1 | second 2"
    with outlast.App(store_url) as reader:
        info = reader.get_run("r1")
    assert info.status == "completed" and info.recoveries == 1
    assert info.stats["llm_calls"] == total and info.stats["tokens"] > 0
    keys = [s.key for s in info.steps]
    assert keys.count("tool:first:c1") == keys.count("tool:second:c2") == 1
    assert [k for k in keys if k.startswith("agents.model")] == [
        f"agents.model:{n}" for n in range(1, total + 1)
    ]


def status(app: outlast.App, run_id: str) -> str | None:
    try:
        return app.get_run(run_id, steps=False).status
    except outlast.RunNotFound:
        return None


def test_an_approval_waits_across_a_process_restart(store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "tools.log"
    with FakeLLMServer(responder) as server:
        proc = subprocess.Popen(
            cmd(store_url, server, "ap", "approval", log),
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
        )
        with outlast.App(store_url) as human:
            deadline = time.monotonic() + 30
            while status(human, "ap") != "suspended":
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)  # nobody is waiting in memory any more
            proc.wait()
            assert server.count() == 2
            human.send("ap", "approval", "yes")
        resumed = finish(cmd(store_url, server, "ap", "approval", log))
        assert server.count() == 3
    assert resumed == {"output": "done: first 1 | refund 2 yes"}
    lines = log.read_text().splitlines()
    assert lines == ["start first", "done first", "start refund", "start refund", "done refund yes"]
