"""The typed front door, proved by mypy on tests/typing/front_door.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_run_start_enqueue_keep_the_workflow_types() -> None:
    pytest.importorskip("mypy")
    source = HERE / "typing" / "front_door.py"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--hide-error-context",
         "--no-error-summary", "--cache-dir=/dev/null", str(source)],
        capture_output=True, text=True, cwd=HERE.parent, timeout=300,
    )
    lines = {}
    for line in done.stdout.splitlines():
        m = re.match(r".*front_door\.py:(\d+): (\w+): (.*)", line)
        if m:
            lines.setdefault(int(m.group(1)), []).append((m.group(2), m.group(3)))
    expected = {}
    for number, text in enumerate(source.read_text().splitlines(), start=1):
        if "# R: " in text:
            expected[number] = ("note", text.split("# R: ")[1])
        elif "# E: " in text:
            expected[number] = ("error", "")
    for number, (kind, want) in expected.items():
        got = lines.get(number, [])
        assert any(k == kind for k, _ in got), (number, got, done.stdout)
        if kind == "note":
            revealed = " ".join(m for k, m in got if k == "note")
            assert f'"{want}"' in revealed or want in revealed, (number, revealed)
    unexpected = {n: g for n, g in lines.items() if n not in expected}
    assert not unexpected, unexpected
