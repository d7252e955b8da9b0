"""A run SIGKILLed mid-step and resumed in a second process: each process emits spans only
for what it executed, and the resumed execution links to the run's anchor, a span the first
process exported before it was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from outlast.testing import FakeLLMServer, Reply, ToolCall

# Spans are per execution: the replay-each-step pass would multiply them.
pytestmark = pytest.mark.counts_executions


ROOT = Path(__file__).resolve().parent.parent


def spawn(db: str, url: str, spans: Path, hang: int | None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACED_SPANS": str(spans)}
    env.pop("TRACED_HANG", None)
    if hang is not None:
        env["TRACED_HANG"] = str(hang)
    cmd = [sys.executable, "-m", "tests.apps.traced", db, url, "crashed", "5"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def test_sigkilled_run_resumed_elsewhere_emits_only_new_work_linked_to_the_first(
    store_url: str, tmp_path: Path
) -> None:
    spans = tmp_path / "spans.jsonl"
    script = [
        Reply(tool_calls=[ToolCall("search", {"query": "acme"}, id="call_9")]),
        Reply(text="Acme is fine."),
    ]
    with FakeLLMServer(script) as server:
        first = spawn(store_url, server.openai_base_url, spans, hang=3)
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "hanging 3"
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stdout.close()
        second = spawn(store_url, server.openai_base_url, spans, hang=None)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 0, out
        assert out.strip() == "Acme is fine."
        assert server.count() == 2  # the first model call was not sent again
    rows: list[dict[str, Any]] = [json.loads(line) for line in spans.read_text().splitlines()]
    pids = sorted({r["pid"] for r in rows}, key=[r["pid"] for r in rows].index)
    assert len(pids) == 2
    before = [r for r in rows if r["pid"] == pids[0]]
    after = [r for r in rows if r["pid"] == pids[1]]
    # The killed process exported the run's anchor at once, then the spans it finished; its
    # run span (the anchor's child) and step 3 never ended.
    assert [r["name"] for r in before] == [
        "start_workflow research",
        "chat gpt-4o-mini",
        "execute_tool search",
        "step read",
        "step read",
    ]
    anchor = before[0]
    assert anchor["parent"] is None and anchor["attributes"]["outlast.run.id"] == "crashed"
    first_run = {r["parent"] for r in before[1:]}
    assert len(first_run) == 1 and anchor["span"] not in first_run
    assert {r["trace"] for r in before} == {anchor["trace"]}
    # The second process: step 3 (interrupted) again, then 4, 5, the last model call, the run.
    assert [r["name"] for r in after] == [
        "step read",
        "step read",
        "step read",
        "chat gpt-4o-mini",
        "invoke_workflow research",
    ]
    assert [r["attributes"]["outlast.step.key"] for r in after[:3]] == [
        "read:3",
        "read:4",
        "read:5",
    ]
    run = after[-1]
    assert run["attributes"]["outlast.run.recoveries"] == 1
    # replayed: the first model call, the tool, read 1 and read 2
    assert run["attributes"]["outlast.replayed_calls"] == 4
    # the link points at a span that was exported: the anchor
    assert run["links"] == [[anchor["trace"], anchor["span"]]]
    assert all(r["parent"] == run["span"] for r in after[:-1])
