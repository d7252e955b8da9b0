"""Real crashes: a process SIGKILLed mid-step, then resumed by a script or a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.proc import wait_for_line

import outlast

ROOT = Path(__file__).resolve().parent.parent


def _env(log: Path, hang: int | None) -> dict[str, str]:
    env = {**os.environ, "CRASHY_LOG": str(log), "PYTHONPATH": str(ROOT)}
    env.pop("CRASHY_HANG", None)
    if hang is not None:
        env["CRASHY_HANG"] = str(hang)
    return env


def _counts(log: Path) -> Counter[str]:
    return Counter(log.read_text().splitlines())


def test_sigkill_mid_step_then_rerun_resumes(store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    cmd = [sys.executable, "-m", "tests.apps.crashy", store_url, "chain-1", "8"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(log, hang=5))
    wait_for_line(log, "start 5", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = subprocess.run(cmd, cwd=ROOT, env=_env(log, hang=None), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == str(sum(i * i for i in range(1, 9)))
    counts = _counts(log)
    for i in range(1, 9):
        assert counts[f"done {i}"] == 1, counts
    assert counts["start 5"] == 2  # interrupted mid-flight: runs again
    assert all(counts[f"start {i}"] == 1 for i in range(1, 9) if i != 5)
    with outlast.App(store_url) as reader:
        info = reader.get_run("chain-1")
    assert info.status == "completed" and info.recoveries == 1
    assert info.stats.get("saved_steps") == 4


def test_worker_takes_over_a_killed_workers_run(store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    from tests.apps import crashy

    crashy.app.use(store_url)
    crashy.app.enqueue(crashy.chain, 6, run_id="chain-w")
    worker = [sys.executable, "-m", "outlast.cli", "worker", "tests.apps.crashy:app", "--db", store_url, "--burst"]
    proc = subprocess.Popen(worker, cwd=ROOT, env=_env(log, hang=3), stderr=subprocess.DEVNULL)
    wait_for_line(log, "start 3", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    started = time.monotonic()
    out = subprocess.run(worker, cwd=ROOT, env=_env(log, hang=None), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    # The owner died on this host: taken over at once, not after the lease.
    assert time.monotonic() - started < 8
    counts = _counts(log)
    assert [counts[f"done {i}"] for i in range(1, 7)] == [1] * 6
    assert counts["start 3"] == 2
    with outlast.App(store_url) as reader:
        run = reader.get_run("chain-w")
    assert run.status == "completed" and run.result == sum(i * i for i in range(1, 7))
    crashy.app.close()
