"""Helpers for tests that drive real subprocesses through a shared log file."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wait_for_line(log: Path, line: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until ``line`` appears in ``log``; fail early if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and line in log.read_text().splitlines():
            return
        if proc.poll() is not None:
            text = log.read_text() if log.exists() else ""
            raise AssertionError(f"process exited early ({proc.returncode}); log: {text}")
        time.sleep(0.02)
    raise AssertionError(f"{line!r} never appeared in {log}")
