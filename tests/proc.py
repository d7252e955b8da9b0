"""Helpers for tests that drive real subprocesses through a shared log file."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def keys_env() -> dict[str, str]:
    """What a subprocess started with a clean environment keeps: the encryption keys of the
    encrypted pass (``OUTLAST_TEST_ENCRYPTION=1``), so it reads the stores the test wrote."""
    keys = os.environ.get("OUTLAST_ENCRYPTION_KEYS")
    return {"OUTLAST_ENCRYPTION_KEYS": keys} if keys else {}


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
