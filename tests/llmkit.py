"""What the model-call tests share: the local model server, SDK clients closed after each test,
and a real agent subprocess to SIGKILL (``tests/apps/llm_agent.py``).

Test modules import the fixtures by name (``from tests.llmkit import close_clients, server``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import outlast
import outlast.llm
from outlast.testing import FakeLLMServer

ROOT = Path(__file__).resolve().parent.parent


class Crash(BaseException):
    """Stands for the process dying after some calls were recorded (the run is left pending)."""


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as running:
        yield running


_clients: list[Any] = []


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _clients:  # closed here, not by the garbage collector during another test
        _clients.pop().close()


def oai(server: FakeLLMServer, **options: Any) -> Any:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
    _clients.append(client)
    return outlast.llm.wrap(client, **options)


def bodies(server: FakeLLMServer) -> list[str]:
    return [json.dumps(r.body, sort_keys=True) for r in server.requests]


def run_twice(app: outlast.App, wf: Any, *args: Any, run_id: str, flag: dict[str, bool]) -> Any:
    """Run ``wf`` until it raises Crash, then again with the flag cleared: the second
    execution replays the journal of the first."""
    flag["crash"] = True
    with pytest.raises(Crash):
        app.run(wf, *args, run_id=run_id)
    flag["crash"] = False
    return app.run(wf, *args, run_id=run_id)


def spawn(db: str, base_url: str, run_id: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.apps.llm_agent", db, base_url, run_id, mode],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def kill_when(proc: subprocess.Popen[str], server: FakeLLMServer, requests: int) -> None:
    deadline = time.monotonic() + 30
    while server.count() < requests:
        assert proc.poll() is None, "the agent ended before it was killed"
        assert time.monotonic() < deadline, "the agent never reached the request"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def finish(proc: subprocess.Popen[str]) -> Any:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


def claude(server: FakeLLMServer) -> Any:
    client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
    _clients.append(client)
    return outlast.llm.wrap(client)
