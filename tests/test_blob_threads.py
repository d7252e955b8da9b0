"""Blobs are compressed and inflated from many threads at once (a LangGraph loop writes its
checkpoints from a pool): the zstandard codec must not share one compressor between them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("zstandard")

SCRIPT = textwrap.dedent(
    """
    import os, threading
    from outlast.store import blobs

    data = [os.urandom(65536).hex().encode() * 4 for _ in range(16)]

    errors = []

    def work():
        try:
            for i in range(300):
                framed = blobs.compress(data[i % 16])
                assert framed[:2] == b"\\xffs", framed[:2]
                assert blobs.decompress(framed[1], framed[2:]) == data[i % 16]
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("ok" if not errors else errors[0])
    """
)


def test_compression_from_many_threads_at_once() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr)
