"""Step overhead with and without compression and encryption, side by side in one run.

    python bench/sealed_overhead.py [--quick] [--postgres URL] [--rounds N]

Four settings of the same store, measured in interleaved rounds (the order rotates each
round; medians over rounds, with the spread):

- ``plain, no compression``: blob compression and row packing switched off (the module
  thresholds raised, in this process only);
- ``plain``: the default (blobs compressed with zstd when installed, else zlib, when it pays;
  journal rows packed);
- ``encrypted``: ``App(encryption=...)``: compressed, then sealed with AES-256-GCM;
- ``encrypted, no compression``: sealed only.

Two step kinds: ``noop`` (returns None: the journal write alone) and ``2 KB text`` (returns a
distinct 2 KB English-like text, which becomes a blob: the compression and sealing path).
Two run shapes: one run of N steps (``1 x 1000``) and many 10-step runs (``100 x 10``), per
step, including creating and finishing each run. SQLite (WAL, synchronous=normal) in a fresh
file per measurement; PostgreSQL in a fresh schema.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, os.path.dirname(__file__))

from disk_size import text  # noqa: E402

import outlast  # noqa: E402
from outlast import serde  # noqa: E402
from outlast.store import blobs as blob_codec  # noqa: E402

KEY = outlast.Encryption({"k1": os.urandom(32)})
SETTINGS = ("plain, no compression", "plain", "encrypted", "encrypted, no compression")
TEXTS = [text("english", i) for i in range(1000)]


@contextmanager
def compression(on: bool) -> Iterator[None]:
    saved = blob_codec.COMPRESS_MIN, serde.PACK_THRESHOLD
    if not on:
        blob_codec.COMPRESS_MIN = serde.PACK_THRESHOLD = 1 << 60
    try:
        yield
    finally:
        blob_codec.COMPRESS_MIN, serde.PACK_THRESHOLD = saved


def make_app(url: str, setting: str, kind: str) -> tuple[outlast.App, Any]:
    app = outlast.App(url, encryption=KEY if setting.startswith("encrypted") else None)
    counter = iter(range(10**9))

    @app.step
    def step() -> str | None:
        return None if kind == "noop" else TEXTS[next(counter) % len(TEXTS)] + str(uuid.uuid4())

    @app.workflow
    def chain(ctx: outlast.Context, n: int) -> int:
        for _ in range(n):
            step()
        return n

    return app, chain


def per_step(url: str, setting: str, kind: str, runs: int, steps: int) -> float:
    with compression("no compression" not in setting):
        app, chain = make_app(url, setting, kind)
        try:
            app.run(chain, 1)  # open and migrate outside the timing
            start = time.perf_counter()
            for _ in range(runs):
                app.run(chain, steps)
            return (time.perf_counter() - start) / (runs * steps)
        finally:
            app.close()


def stores(pg: str | None) -> Iterator[tuple[str, Callable[[], Any]]]:
    yield "SQLite (WAL, synchronous=normal)", _sqlite_url
    if pg:
        yield "PostgreSQL", lambda: _pg_url(pg)


@contextmanager
def _sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/b.db"


@contextmanager
def _pg_url(pg: str) -> Iterator[str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        yield f"{pg}{'&' if '?' in pg else '?'}schema={schema}"
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 x 200 and 20 x 10, 2 rounds")
    parser.add_argument("--postgres", help="also on this PostgreSQL URL")
    parser.add_argument("--rounds", type=int)
    args = parser.parse_args()
    long_n, many = (200, 20) if args.quick else (1000, 100)
    rounds = args.rounds or (2 if args.quick else 5)
    shapes = [(f"1 x {long_n}", 1, long_n), (f"{many} x 10", many, 10)]
    print(
        f"python {sys.version.split()[0]}, outlast {outlast.__version__}, "
        f"zstd: {bool(blob_codec._zstd())}, {rounds} rounds, medians (min-max), us per step"
    )
    for label, url_of in stores(args.postgres):
        found: dict[tuple[str, str, str], list[float]] = {}
        for r in range(rounds):
            order = SETTINGS[r % 4 :] + SETTINGS[: r % 4]
            for kind in ("noop", "2 KB text"):
                for shape, runs, steps in shapes:
                    for setting in order:
                        with url_of() as url:
                            value = per_step(url, setting, kind, runs, steps)
                        found.setdefault((kind, shape, setting), []).append(value)
        print(f"\n**{label}**\n")
        print("| step | run shape | " + " | ".join(SETTINGS) + " |")
        print("|---|---|" + "---|" * len(SETTINGS))
        for kind in ("noop", "2 KB text"):
            for shape, _, _ in shapes:
                base = statistics.median(found[(kind, shape, "plain")])
                cells = []
                for setting in SETTINGS:
                    values = found[(kind, shape, setting)]
                    med = statistics.median(values)
                    cells.append(
                        f"{med * 1e6:,.1f} ({min(values) * 1e6:,.0f}-"
                        f"{max(values) * 1e6:,.0f}) {med / base:.2f}x"
                    )
                print(f"| {kind} | {shape} | " + " | ".join(cells) + " |", flush=True)
        print("\n(x: against `plain` of the same row)")


if __name__ == "__main__":
    main()
