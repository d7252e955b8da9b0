"""``outlast rekey``: every payload moves to the active key, killed halfway and rerun, while
workers write; afterwards the new key alone reads everything."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import outlast
from outlast.encryption import sealed_kid
from outlast.rekey import rekey
from outlast.store import open_store
from outlast.store.sealed import META

pytest.importorskip("cryptography")

ROOT = Path(__file__).resolve().parent.parent
K1, K2 = os.urandom(32), os.urandom(32)
OLD = outlast.Encryption({"k1": K1})
BOTH = outlast.Encryption({"k2": K2, "k1": K1})
NEW = outlast.Encryption({"k2": K2})


def env_keys(*pairs: tuple[str, bytes]) -> str:
    return ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in pairs)


def build(url: str, encryption: outlast.Encryption | None) -> tuple[outlast.App, Any]:
    app = outlast.App(url, encryption=encryption)

    @app.step
    def small(i: int) -> str:
        return f"small-{i}"

    @app.step
    def big(i: int) -> str:
        return f"big-{i}-" + "x" * 3000  # a blob

    @app.workflow(name="w")
    def w(ctx: outlast.Context, i: int) -> str:
        ctx.stash([f"snap-{i}"])
        return tail(ctx, i)

    def tail(ctx: outlast.Context, i: int) -> str:
        got = small(i) + big(i)[:6]
        if i % 4 == 0:
            got += ctx.wait_for("go", timeout=30)
        return got

    @w.on_recovered
    def again(ctx: outlast.Context, snap: list[str], i: int) -> str:
        return tail(ctx, i)

    return app, w


def fill(url: str, encryption: outlast.Encryption | None, runs: range) -> None:
    app, w = build(url, encryption)
    for i in runs:
        if i % 4 == 0:
            app.start(w, i, run_id=f"r{i}")
            app.send(f"r{i}", "go", f"-ev{i}")
        app.run(w, i, run_id=f"r{i}")
    app.close()


def check_all(url: str, runs: range, encryption: outlast.Encryption) -> None:
    """Every run's result, steps, blobs and metas read under ``encryption`` alone."""
    app, _ = build(url, encryption)
    for i in runs:
        info = app.get_run(f"r{i}", steps=True)
        want = f"small-{i}" + f"big-{i}-"[:6] + (f"-ev{i}" if i % 4 == 0 else "")
        assert info.result == want, i
        assert info.steps
    store = app.store
    for i in runs:
        entries = store.load_journal(f"r{i}")
        big = [e for e in entries if e.name == "big"]
        # the blob a step result refers to
        assert outlast.serde.loads(big[0].output, blobs=store.get_blobs).startswith(f"big-{i}-")
    app.close()


def kids(url: str) -> set[str | None]:
    """The key ids of every stored payload (None: in the clear)."""
    store = open_store(url, encryption=NEW)
    inner: Any = store.inner  # type: ignore[attr-defined]
    found: set[str | None] = set()
    if inner.dialect == "sqlite":
        conn = inner._conn
        rows = [*conn.execute("SELECT input, output, error, snapshot FROM outlast_runs"),
                *conn.execute("SELECT output FROM outlast_journal"),
                *conn.execute("SELECT payload FROM outlast_events"),
                *conn.execute("SELECT data FROM outlast_blobs")]
        metas = [r[0] for r in conn.execute("SELECT meta FROM outlast_journal")]
    else:
        s = inner.schema

        def q(sql: str) -> list[Any]:
            return inner._run(lambda c, _: c.execute(sql.replace("{s}", s)).fetchall())

        rows = [*q("SELECT input, output, error, snapshot FROM {s}.runs"),
                *q("SELECT output FROM {s}.journal"), *q("SELECT payload FROM {s}.events"),
                *q("SELECT data FROM {s}.blobs")]
        metas = [r[0] for r in q("SELECT meta FROM {s}.journal")]
    for row in rows:
        for v in row:
            if v is not None:
                found.add(sealed_kid(bytes(v)))
    for m in metas:
        if m is not None:
            found.add(sealed_kid(base64.b64decode(m[len(META):])) if m.startswith(META) else None)
    store.close()
    return found


def test_rekey_moves_everything_to_the_active_key(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)  # the encrypted pass sets it
    runs = range(8)
    fill(store_url, None, range(0, 2))  # written before encryption was switched on
    fill(store_url, OLD, range(2, 8))
    assert kids(store_url) == {None, "k1"}
    with pytest.raises(outlast.errors.OutlastError):
        check_all(store_url, runs, NEW)  # the new key alone cannot read them yet
    store = open_store(store_url, encryption=BOTH)
    lines: list[str] = []
    report = rekey(store, batch=3, progress=lines.append)
    assert report.total > 0 and report.skipped == 0
    assert any(line.startswith("blobs:") for line in lines)
    assert rekey(store, batch=3).total == 0  # idempotent
    store.close()
    assert kids(store_url) == {"k2"}
    check_all(store_url, runs, NEW)


def test_rekey_without_keys_says_how(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)
    store = open_store(sqlite_url)
    with pytest.raises(outlast.errors.ConfigurationError, match="OUTLAST_ENCRYPTION_KEYS"):
        rekey(store)
    store.close()


def test_rekey_while_workers_write(store_url: str) -> None:
    # writers on the new active key run beside rekey: nothing they write is lost
    fill(store_url, OLD, range(0, 12))
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            fill(store_url, BOTH, range(12, 24))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    store = open_store(store_url, encryption=BOTH)
    while t.is_alive():
        rekey(store, batch=2)
    t.join()
    rekey(store, batch=2)
    store.close()
    assert not errors
    assert kids(store_url) == {"k2"}
    check_all(store_url, range(24), NEW)


REKEY_SCRIPT = """
import os, signal, sys
from outlast.rekey import rekey
from outlast.store import open_store

store = open_store(sys.argv[1])
seen = []

def progress(line):
    seen.append(line)
    print(line, flush=True)
    if len(seen) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

rekey(store, batch=2, progress=progress)
"""


def test_rekey_killed_halfway_then_rerun(store_url: str, tmp_path: Path) -> None:
    runs = range(16)
    fill(store_url, OLD, runs)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"),
           "OUTLAST_ENCRYPTION_KEYS": env_keys(("k2", K2), ("k1", K1))}
    # 1. killed between two batches (deterministic): some values moved, others not yet
    script = tmp_path / "rekey_kill.py"
    script.write_text(REKEY_SCRIPT)
    out = subprocess.run([sys.executable, str(script), store_url, "3"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert kids(store_url) == {"k1", "k2"}
    # 2. the command itself, killed wherever it is once it has reported a batch
    cmd = [sys.executable, "-m", "outlast.cli", "rekey", "--db", store_url, "--batch", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert "rows scanned" in first
    # 3. rerun to the end: everything under the new key, readable with it alone
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rekey done" in done.stdout
    assert kids(store_url) == {"k2"}
    check_all(store_url, runs, NEW)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert "rekey done: 0 value(s)" in again.stdout


def test_rekey_moves_framework_checkpoints(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the LangGraph saver's and the Agent Framework storage's rows and writes (their own tables)
    pytest.importorskip("langgraph")
    pytest.importorskip("agent_framework")
    from tests.test_encryption_checkpoints import chat, maf_checkpoint, row_values

    from outlast.integrations.langgraph import OutlastSaver

    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)
    for keys, thread in ((None, "clear"), (OLD, "old")):  # before encryption, then under k1
        app = outlast.App(store_url, encryption=keys)
        chat(OutlastSaver(app), thread, 4)
        app.close()
    app = outlast.App(store_url, encryption=OLD)
    import asyncio

    from outlast.integrations.agent_framework import OutlastCheckpointStorage

    asyncio.run(OutlastCheckpointStorage(app).save(maf_checkpoint(2)))
    app.close()
    assert {sealed_kid(v) for v in row_values(store_url) if v} == {None, "k1"}
    store = open_store(store_url, encryption=BOTH)
    report = rekey(store, batch=3)
    assert report.rewritten["lg_checkpoints"] > 0 and report.rewritten["lg_writes"] > 0
    assert rekey(store, batch=3).total == 0
    store.close()
    assert {sealed_kid(v) for v in row_values(store_url) if v} == {"k2"}
    assert kids(store_url) == {"k2"}  # their blobs too
    app = outlast.App(store_url, encryption=NEW)
    try:
        saver = OutlastSaver(app)
        for thread in ("clear", "old"):
            got = saver.get_tuple({"configurable": {"thread_id": thread}})
            assert got is not None and len(got.checkpoint["channel_values"]["messages"]) == 4
        saver.prune(["old"], keep=1)  # deletes read the moved rows and blobs
        cp = asyncio.run(OutlastCheckpointStorage(app).load("c2"))
        assert len(cp.state["_executor_state"]["a"]["history"]) == 3
    finally:
        app.close()
