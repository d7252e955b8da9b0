"""Torture run: N runs x 10 effects of every kind while workers are SIGKILLed at random moments.

    python bench/torture.py                 # 50 runs, 100 SIGKILLs, SQLite and PostgreSQL
    python bench/torture.py --quick         # 10 runs, 15 SIGKILLs
    python bench/torture.py --store sqlite --runs 100 --kills 200

Prints, per store, the kills, the pauses the operator resolved (with their reasons), the
effects settled by reconcile, and every check that failed (exit status 1 if any).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.apps.effects_app import torture  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 runs, 15 SIGKILLs")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pg", default=PG, help="PostgreSQL server URL")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    runs, kills = (10, 15) if args.quick else (args.runs, args.kills)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        urls = []
        if args.store in ("sqlite", "both"):
            urls.append(("sqlite", f"sqlite:///{work}/torture.db"))
        if args.store in ("postgres", "both"):
            urls.append(("postgres", f"{args.pg}?schema=torture_{uuid.uuid4().hex[:8]}"))
        for label, url in urls:
            summary = torture(url, work, runs=runs, effects=10, kills=kills, seed=args.seed, label=label)
            print("\n".join(summary.lines()), flush=True)
            failed |= bool(summary.problems)
            if label == "postgres":
                import psycopg

                with psycopg.connect(args.pg, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {url.rsplit('=', 1)[1]} CASCADE")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
