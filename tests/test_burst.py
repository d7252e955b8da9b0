"""``outlast worker --burst`` drains everything runnable; ``app.start()`` runs survive the
end of the script that started them (handed back at exit). Real subprocesses, real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.proc import keys_env

import outlast

ROOT = Path(__file__).resolve().parent.parent
WORKER = [sys.executable, "-m", "outlast.cli", "worker", "tests.apps.crashy:app", "--burst"]

START_AND_HANG = """
import sys, time
from tests.apps import crashy
crashy.app.use(sys.argv[1])
for i in range(int(sys.argv[2])):
    crashy.app.start(crashy.chain, 3, run_id=f"r{i}")
if sys.argv[3] == "sleep":
    time.sleep(120)  # the test SIGKILLs us
"""

ENQUEUE = """
import sys
from tests.apps import crashy
crashy.app.use(sys.argv[1])
for i in range(int(sys.argv[2])):
    crashy.app.enqueue(crashy.chain, 2, run_id=f"q{i}")
"""


def _env(log: Path, hang: str | None) -> dict[str, str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "CRASHY_LOG": str(log), **keys_env()}
    if hang is not None:
        env["CRASHY_HANG"] = hang
    return env


def _wait_lines(log: Path, line: str, count: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().splitlines().count(line) >= count:
            return
        assert proc.poll() is None, f"exited early with {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"{count} x {line!r} never appeared")


def _statuses(url: str) -> dict[str, str]:
    app = outlast.App(url)
    try:
        return {r.run_id: r.status for r in app.list_runs(limit=1000)}
    finally:
        app.close()


def test_burst_finishes_every_run_of_a_killed_process(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", START_AND_HANG, sqlite_url, "20", "sleep"],
        cwd=ROOT, env=_env(log, hang="2"), stderr=subprocess.DEVNULL,
    )
    _wait_lines(log, "start 2", 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert set(_statuses(sqlite_url).values()) == {"running"}
    out = subprocess.run([*WORKER, "--db", sqlite_url], cwd=ROOT, env=_env(log, None),
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert "20 run(s) executed" in out.stderr.decode()
    assert _statuses(sqlite_url) == {f"r{i}": "completed" for i in range(20)}


def test_burst_finishes_200_runs_of_a_script_that_ended(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    subprocess.run([sys.executable, "-c", ENQUEUE, sqlite_url, "200"], cwd=ROOT,
                   env=_env(log, None), check=True, timeout=60)
    out = subprocess.run([*WORKER, "--db", sqlite_url, "-c", "4"], cwd=ROOT,
                         env=_env(log, None), capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    assert _statuses(sqlite_url) == {f"q{i}": "completed" for i in range(200)}


def test_started_runs_are_handed_back_when_the_script_ends(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    # Each run hangs in its second step when the script's main thread ends.
    proc = subprocess.Popen(
        [sys.executable, "-c", START_AND_HANG + "\nimport time; time.sleep(1.5)\n",
         sqlite_url, "5", "exit"],
        cwd=ROOT, env=_env(log, hang="2"), stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    text = err.decode()
    assert "5 run(s) started with app.start() were unfinished" in text, text
    assert "r0, r1, r2, r3, r4" in text and "outlast worker" in text
    assert _statuses(sqlite_url) == {f"r{i}": "pending" for i in range(5)}
    started = time.monotonic()
    out = subprocess.run([*WORKER, "--db", sqlite_url], cwd=ROOT, env=_env(log, None),
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert time.monotonic() - started < 8  # pending: no lease to wait out
    assert _statuses(sqlite_url) == {f"r{i}": "completed" for i in range(5)}
    lines = log.read_text().splitlines()
    assert lines.count("done 1") == 5 and lines.count("done 3") == 5


def test_a_run_finished_before_exit_gets_no_warning(sqlite_url: str, tmp_path: Path) -> None:
    script = START_AND_HANG + "\nfor i in range(2): crashy.app.handle(f'r{i}').result()\n"
    out = subprocess.run([sys.executable, "-c", script, sqlite_url, "2", "exit"], cwd=ROOT,
                         env=_env(tmp_path / "log", None), capture_output=True, timeout=60)
    assert out.returncode == 0 and "unfinished" not in out.stderr.decode(), out.stderr.decode()
    assert _statuses(sqlite_url) == {"r0": "completed", "r1": "completed"}
    assert os.path.exists(sqlite_url.removeprefix("sqlite:///"))


def test_burst_finishes_200_runs_a_script_started_and_left(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    # 200 runs started in the background, each hanging in its 2nd step when the script ends.
    out = subprocess.run([sys.executable, "-c", START_AND_HANG, sqlite_url, "200", "exit"],
                         cwd=ROOT, env=_env(log, hang="2"), capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert "run(s) started with app.start() were unfinished" in out.stderr.decode()
    assert "running" not in set(_statuses(sqlite_url).values())
    out = subprocess.run([*WORKER, "--db", sqlite_url], cwd=ROOT, env=_env(log, None),
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    assert _statuses(sqlite_url) == {f"r{i}": "completed" for i in range(200)}
