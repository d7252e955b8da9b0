"""Capture and draw the trace of a crashed-and-resumed agent run (docs/observability.md).

    python bench/crash_trace.py [--spans FILE]

Runs the agent of ``tests/apps/traced.py`` (a model call with a tool call, five steps, a
final model call) against the local fake model server, SIGKILLs it inside step 3, resumes
it in a second process, and draws the spans both processes exported (one JSON line each,
written by the app's own SDK exporter) as a text tree with timings, per process. With
``--spans FILE`` it only draws an existing file. Needs ``pip install -e '.[test]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SHOWN = ("outlast.run.id", "outlast.run.recoveries", "outlast.replayed_calls",
         "outlast.step.key", "outlast.step.attempt", "gen_ai.tool.call.id",
         "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
         "gen_ai.response.finish_reasons")


def capture(spans: Path) -> None:
    from outlast.testing import FakeLLMServer, Reply, ToolCall

    script = [Reply(tool_calls=[ToolCall("search", {"query": "acme"}, id="call_9")]),
              Reply(text="Acme is fine.")]
    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer(script, latency=0.05) as server:
        db = f"sqlite:///{tmp}/trace.db"

        def spawn(hang: str | None) -> subprocess.Popen[str]:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACED_SPANS": str(spans)}
            env.pop("TRACED_HANG", None)
            if hang:
                env["TRACED_HANG"] = hang
            cmd = [sys.executable, "-m", "tests.apps.traced", db, server.openai_base_url,
                   "research-42", "5"]
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)

        first = spawn("3")
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "hanging 3"
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stdout.close()
        second = spawn(None)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 0, out


def draw(rows: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    pids = list(dict.fromkeys(r["pid"] for r in rows))
    by_span = {r["span"]: r for r in rows}
    for n, pid in enumerate(pids, 1):
        mine = [r for r in rows if r["pid"] == pid]
        t0 = min(r["start"] for r in mine)
        lines.append(f"process {n} (pid {pid}), {len(mine)} spans exported")
        roots = [r for r in mine if r["parent"] not in by_span]
        anchors = {r["trace"] for r in roots if r["name"].startswith("start_workflow")}
        for parent in dict.fromkeys(r["parent"] for r in roots):
            group = sorted((r for r in roots if r["parent"] == parent), key=lambda r: r["start"])
            pad = "  "
            if parent is not None:
                # the run span the anchor parents, lost with the process
                pad += "  " if group[0]["trace"] in anchors else ""
                lines.append(f"{pad}[span {parent}: never ended, the process was SIGKILLed]")
                pad += "  "
            for r in group:
                _node(r, mine, t0, pad, lines)
        lines.append("")
    return "\n".join(lines)


def _node(r: dict[str, Any], rows: list[dict[str, Any]], t0: float, pad: str,
          lines: list[str]) -> None:
    start, took = (r["start"] - t0) * 1000, (r["end"] - r["start"]) * 1000
    attrs = ", ".join(f"{k}={_v(r['attributes'][k])}" for k in SHOWN if k in r["attributes"])
    status = f" {r['status']} error.type={r['attributes']['error.type']}" \
        if "error.type" in r["attributes"] else ""
    lines.append(f"{pad}{r['name']:<28} +{start:7.1f} ms {took:7.1f} ms  {attrs}{status}")
    for link in r["links"]:
        lines.append(f"{pad}  link -> trace {link[0][:8]}.. span {link[1]}")
    for event in r["events"]:
        lines.append(f"{pad}  event {event}")
    for child in sorted((c for c in rows if c["parent"] == r["span"]), key=lambda c: c["start"]):
        _node(child, rows, t0, pad + "  ", lines)


def _v(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=Path, help="draw this JSON-lines file instead")
    args = parser.parse_args(argv)
    if args.spans is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "spans.jsonl"
            capture(path)
            rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        rows = [json.loads(line) for line in args.spans.read_text().splitlines()]
    text = draw(rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
