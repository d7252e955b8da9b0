"""Instructions per journaled no-op step (valgrind's callgrind), this tree beside another.

    python bench/step_instructions.py --against /tmp/outlast-010/src --page-size 4096

Timing a step on a loaded machine moves by several percent from run to run; the number of
instructions a process executes does not (it moves by well under 1%). Each figure comes from
three processes under ``valgrind --tool=callgrind`` on a new SQLite file
(``synchronous=normal``): the same program with no measured steps (imports, opening the
store, two warm-up runs), with one run of ``--n`` steps, and with ``--runs`` runs of 10 steps;
the difference to the first, divided by the steps, is the cost of a step in a long run and in
10-step runs (creating and finishing the run included). Instructions leave out what the
kernel does (writing the WAL): see ``bench/step_overhead.py --cpu`` for time.

``--page-size N`` opens this tree's files with ``?page_size=N``; ``--against-page-size N`` the
other tree's (0.1.0 knows no such option: it uses SQLite's 4096).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def child(mode: str, count: int, options: str) -> None:
    """The measured program (run under callgrind)."""
    sys.path.insert(0, os.environ.get("OUTLAST_BENCH_SRC") or os.path.join(HERE, "..", "src"))
    import outlast

    with tempfile.TemporaryDirectory() as tmp:
        app = outlast.App(f"sqlite:///{tmp}/i.db?synchronous=normal{options}")

        @app.step
        def noop() -> None:
            return None

        @app.workflow
        def chain(ctx: outlast.Context, n: int) -> int:
            for _ in range(n):
                noop()
            return n

        app.run(chain, 10)
        app.run(chain, 10)
        if mode == "long":
            app.run(chain, count)
        else:
            for _ in range(count):
                app.run(chain, 10)
        app.close()


def instructions(src: str, mode: str, count: int, options: str) -> int:
    """Instructions executed by the child program (callgrind's total)."""
    env = {**os.environ, "OUTLAST_BENCH_SRC": src, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            mode,
            str(count),
            options,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    found = re.search(r"refs:\s+([\d,]+)", out)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_step(src: str, options: str, n: int, runs: int) -> tuple[float, float]:
    base = instructions(src, "long", 0, options)
    long = (instructions(src, "long", n, options) - base) / n
    many = (instructions(src, "many", runs, options) - base) / (runs * 10)
    return long, many


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--against", metavar="SRC", help="another outlast src tree to measure beside"
    )
    parser.add_argument("--page-size", type=int, help="this tree's SQLite page size")
    parser.add_argument("--against-page-size", type=int, help="the other tree's page size")
    parser.add_argument("--n", type=int, default=2000, help="steps of the long run")
    parser.add_argument("--runs", type=int, default=100, help="10-step runs")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, count, options = args.child
        child(mode, int(count), options)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    sides = [("this tree", "", args.page_size)]
    if args.against:
        sides.append(("against", os.path.abspath(args.against), args.against_page_size))
    print(
        f"instructions per no-op step (callgrind), {args.n}-step run and {args.runs} x 10-step runs"
    )
    print(f"  {'side':10s} {'page size':>10s} {'long run':>12s} {'10-step runs':>14s}")
    for side, src, size in sides:
        long, many = per_step(src, f"&page_size={size}" if size else "", args.n, args.runs)
        print(f"  {side:10s} {size or 'default'!s:>10s} {long:12,.0f} {many:14,.0f}")


if __name__ == "__main__":
    main()
