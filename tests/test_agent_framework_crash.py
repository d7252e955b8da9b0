"""Agent Framework workflows on OutlastCheckpointStorage across real processes: a three-executor
workflow SIGKILLed inside its second executor resumes in a new process from the latest
checkpoint, and a human-in-the-loop request is answered by a process started after the one
that asked had exited. SQLite and PostgreSQL. The workflows are in tests/apps/maf_workflow.py.
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

pytest.importorskip("agent_framework")

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def app(url: str, log: Path, mode: str, *hang: str) -> list[str]:
    return [sys.executable, "-m", "tests.apps.maf_workflow", url, str(log), mode, *hang]


def finish(cmd: list[str]) -> Any:
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_sigkill_in_the_second_executor_resumes_from_the_latest_checkpoint(
    store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "executors.log"
    proc = subprocess.Popen(app(store_url, log, "chain", "research"), cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while "hang research" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, f"child exited early ({proc.returncode})"
        assert time.monotonic() < deadline, "the child never reached the second executor"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    resumed = finish(app(store_url, log, "resume"))
    lines = log.read_text().splitlines()
    # plan ran once: the new process started from the checkpoint taken after its superstep;
    # research was cut short, so it started twice and finished once
    assert lines == ["start plan", "done plan", "start research", "hang research",
                     "start research", "done research", "start write", "done write"]
    clean = finish(app(store_url, tmp_path / "clean.log", "chain"))
    assert resumed == clean == [["hi", "plan saw 1", "research saw 2", "write saw 3"]]


def test_a_request_is_answered_after_the_process_restarts(store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "review.log"
    (request_id,) = finish(app(store_url, log, "ask"))  # the asking process exits
    assert finish(app(store_url, log, "answer")) == ["draft 1: approved by alice"]
    assert log.read_text().splitlines() == ["start review", "answered approved"]
    assert request_id
