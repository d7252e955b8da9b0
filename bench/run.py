"""Run the benchmark suite and write docs/benchmarks.md with its plots.

    python bench/run.py [--quick | --tiny] [--only NAME[,NAME]] [--no-peers] [--json FILE]
                        [--doc FILE]

Cases: step_overhead, conversation, resume, hibernation, compound, fleet (bench/cases/).
Installs nothing: peers come from the ``bench`` extra (``pip install -e '.[bench]'``); a case
whose peer or capability is missing reports "not available: <why>", and so does a peer that
fails to import or start (its bug is not ours). ``--no-peers`` measures outlast only.

Results are kept in ``docs/benchmarks.json`` (beside the doc), so ``--only`` re-runs some cases
and re-renders the doc with the others' last results. ``--quick`` is a reduced run (about two
minutes) and ``--tiny`` the test's size; neither writes the published doc unless ``--doc`` is
given.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from cases import PG, compound, conversation, fleet, hibernation, resume, step_overhead  # noqa: E402
from cases.render import render  # noqa: E402

CASES = {m.NAME: m for m in (step_overhead, conversation, resume, hibernation, compound, fleet)}
DOC = ROOT / "docs" / "benchmarks.md"
PEERS = ["dbos", "langgraph", "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres",
         "psycopg", "matplotlib"]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(PG, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except Exception as exc:  # the server is optional for the SQLite cases
        return f"unreachable ({type(exc).__name__})"


def environment() -> dict[str, Any]:
    """The machine, versions and settings the figures were taken on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{cpu}, {os.cpu_count()} cores, {int(mem) // 1024:,} MB RAM, {platform.system()} "
                   f"{platform.release()}",
        "load": "{:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg()),
        "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
        "postgresql": _postgres_version(), "outlast": f"{_version('outlast')} (git {commit})",
        **{dist: _version(dist) for dist in PEERS},
    }


def run_cases(names: list[str], size: str) -> dict[str, Any]:
    """Run the named cases at a size; a case that raises is reported, not fatal."""
    results = {}
    for name in names:
        start = time.monotonic()
        print(f"[{name}] running ({size})...", file=sys.stderr, flush=True)
        try:
            res = CASES[name].run(size)
        except Exception as exc:
            res = {"name": name, "title": CASES[name].TITLE, "available": False,
                   "reason": f"failed: {type(exc).__name__}: {exc}"}
        res["seconds"] = round(time.monotonic() - start, 1)
        res["size"] = size
        res["environment"] = environment()
        print(f"[{name}] {res['seconds']} s: {res.get('reason') or res.get('headline')}",
              file=sys.stderr, flush=True)
        results[name] = res
    return results


def publish(doc: Path, results: dict[str, Any]) -> None:
    """Merge results into the doc's JSON (other cases keep their last run) and re-render."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    store = doc.with_suffix(".json")
    merged = json.loads(store.read_text()) if store.exists() else {}
    merged.update(results)
    ordered = {n: merged[n] for n in CASES if n in merged}
    store.write_text(json.dumps(ordered, indent=1, default=str) + "\n")
    doc.write_text(render(ordered, doc.parent / "img", doc.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a reduced run of every case (~2 min)")
    group.add_argument("--tiny", action="store_true", help="the test's size: seconds per case")
    parser.add_argument("--only", help=f"comma-separated cases: {', '.join(CASES)}")
    parser.add_argument("--no-peers", action="store_true",
                        help="measure outlast only; peers' cells say 'not run (--no-peers)'")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--doc", help="write the Markdown here (default: docs/benchmarks.md for a "
                        "full run, nothing for --quick/--tiny)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.no_peers:
        os.environ["OUTLAST_BENCH_PEERS"] = "0"
    doc = Path(args.doc) if args.doc else (DOC if size == "full" else None)
    results: dict[str, Any] = {}
    for name in names:  # the page is rewritten after every case, so a late failure loses nothing
        results.update(run_cases([name], size))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        if doc is not None:
            publish(doc, results)
    for res in results.values():
        print(f"{res['title']}: {res.get('reason') or json.dumps(res.get('headline'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
