"""Encryption at rest (docs/security.md): no payload in the clear, keys, rotation, binding."""

from __future__ import annotations

import base64
import contextlib
import os
import sqlite3
import threading
from typing import Any

import pytest

import outlast
from outlast.errors import SerializationError, UnreadableValue

pytest.importorskip("cryptography")

K1, K2 = os.urandom(32), os.urandom(32)
MARK = "SECRETMARK"


def enc(**keys: bytes) -> outlast.Encryption:
    return outlast.Encryption(keys or {"k1": K1})


def markers_app(url: str, encryption: outlast.Encryption | None) -> outlast.App:
    app = outlast.App(url, encryption=encryption)

    @app.step
    def small(x: str) -> str:
        return f"{MARK}-step-{x}"

    @app.step
    def large() -> list[str]:
        return [f"{MARK}-blob-{i}-" + "y" * 2000 for i in range(3)]

    @app.step
    def boom() -> None:
        raise ValueError(f"{MARK}-error")

    @app.workflow(name="w")
    def w(ctx: outlast.Context, arg: str) -> str:
        got = [small(arg), *large()]
        ctx.stash(got[:1] + [f"{MARK}-snapshot"])
        return tail(ctx, got)

    def tail(ctx: outlast.Context, got: list[str]) -> str:
        got = [*got, ctx.wait_for("go", timeout=30)]
        with contextlib.suppress(ValueError):
            boom()
        state = app.run(g, {"messages": []}, run_id="graph")
        return f"{MARK}-result {len(got)} {len(state['messages'])}"

    @w.on_recovered
    def again(ctx: outlast.Context, snap: list[str], arg: str) -> str:
        return tail(ctx, [*snap, "", "", "", ""][:5])

    g = app.graph("chat", reducers={"messages": outlast.append})

    @g.node
    def talk(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": f"{MARK}-graph-{len(state['messages'])}"}

    g.edge(outlast.START, "talk")
    g.route("talk", lambda s: outlast.END if len(s["messages"]) >= 3 else "talk")
    return app


def run_markers(app: outlast.App) -> str:
    sender = threading.Timer(0.3, lambda: app.send("m", "go", f"{MARK}-event"))
    sender.start()
    try:
        return str(app.run(app.workflows["w"], f"{MARK}-input", run_id="m"))
    finally:
        sender.join()


def raw_bytes(url: str) -> bytes:
    """Everything stored: the SQLite file and its WAL, or every PostgreSQL table's rows."""
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[1]
        out = b""
        for name in (path, path + "-wal"):
            if os.path.exists(name):
                with open(name, "rb") as f:
                    out += f.read()
        return out
    import psycopg

    base, _, query = url.partition("?")
    schema = dict(p.split("=") for p in query.split("&"))["schema"]
    out = b""
    with psycopg.connect(base) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
        for t in tables:
            for row in conn.execute(f'SELECT * FROM "{schema}"."{t}"'):
                for v in row:
                    out += bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
    return out


def test_no_payload_is_stored_in_the_clear(store_url: str) -> None:
    app = markers_app(store_url, enc())
    assert run_markers(app).startswith(f"{MARK}-result 6 3")
    app.close()
    stored = raw_bytes(store_url)
    assert b"outlast_runs" in stored or b"running" in stored or b"completed" in stored
    assert MARK.encode() not in stored
    # and the same database reads back in full with the key
    again = markers_app(store_url, enc())
    run = again.get_run("m", steps=True)
    assert run.result.startswith(f"{MARK}-result")
    assert [s.name for s in run.steps] == ["timeout:go", "go", "boom"]  # compacted by the stash
    assert again.run(again.workflows["w"], f"{MARK}-input", run_id="m").startswith(MARK)


def test_without_encryption_the_markers_are_there(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)  # the encrypted pass sets it
    # the check above can fail: the same workload unencrypted leaves every marker in the file
    app = markers_app(sqlite_url, None)
    run_markers(app)
    app.close()
    stored = raw_bytes(sqlite_url)
    for kind in ("input", "step", "error", "snapshot", "event", "graph", "result"):
        assert f"{MARK}-{kind}".encode() in stored, kind


def simple(url: str, encryption: outlast.Encryption | None) -> tuple[outlast.App, Any]:
    app = outlast.App(url, encryption=encryption)

    @app.step
    def big() -> str:
        return f"{MARK}-" + "z" * 3000

    @app.workflow(name="s")
    def s(ctx: outlast.Context, x: str) -> str:
        return big()[:20] + x

    return app, s


def test_missing_key_names_the_key_id(store_url: str) -> None:
    app, s = simple(store_url, enc(k1=K1))
    assert app.run(s, "a", run_id="r") == f"{MARK}-zzzzzzzzza"
    app.close()
    plain, _ = simple(store_url, None)
    with pytest.raises(UnreadableValue, match="'k1'"):
        plain.get_run("r").result  # noqa: B018
    other, _ = simple(store_url, enc(k9=K2))
    with pytest.raises(UnreadableValue, match="encrypted with key 'k1'"):
        other.get_run("r").result  # noqa: B018


def test_wrong_key_fails_authentication(store_url: str) -> None:
    app, s = simple(store_url, enc(k1=K1))
    app.run(s, "a", run_id="r")
    app.close()
    wrong, _ = simple(store_url, enc(k1=K2))
    with pytest.raises(SerializationError, match="authentication failed under key 'k1'"):
        wrong.get_run("r").result  # noqa: B018
    with pytest.raises(SerializationError, match="authentication failed"):
        wrong.get_run("r", steps=True).steps[0].result  # noqa: B018


def test_rotation_reads_old_keys_and_writes_the_active_one(store_url: str) -> None:
    app, s = simple(store_url, enc(k1=K1))
    app.run(s, "a", run_id="old")
    app.close()
    rotated, s2 = simple(store_url, outlast.Encryption({"k2": K2, "k1": K1}, active="k2"))
    assert rotated.get_run("old").result.endswith("a")
    rotated.run(s2, "b", run_id="new")
    # replaying the old run reads its k1 journal and blobs
    assert rotated.run(s2, "a", run_id="old").endswith("a")
    rotated.close()
    only_k2, _ = simple(store_url, enc(k2=K2))
    assert only_k2.get_run("new").result.endswith("b")
    with pytest.raises(UnreadableValue, match="'k1'"):
        only_k2.get_run("old").result  # noqa: B018


def test_a_ciphertext_copied_to_another_run_does_not_decrypt(sqlite_url: str) -> None:
    app, s = simple(sqlite_url, enc())
    app.run(s, "a", run_id="one")
    app.run(s, "b", run_id="two")
    app.close()
    path = sqlite_url.split("sqlite:///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE outlast_runs SET output = (SELECT output FROM outlast_runs "
                     "WHERE run_id = 'one') WHERE run_id = 'two'")
    conn.close()
    again, _ = simple(sqlite_url, enc())
    assert again.get_run("one").result.endswith("a")
    with pytest.raises(SerializationError, match="authentication failed"):
        again.get_run("two").result  # noqa: B018


def test_equal_blobs_in_two_runs_have_keyed_addresses(sqlite_url: str) -> None:
    from outlast import serde

    app, s = simple(sqlite_url, enc())
    app.run(s, "a", run_id="one")
    app.close()
    plain_hash = serde.fingerprint(('"' + f"{MARK}-" + "z" * 3000 + '"').encode())
    path = sqlite_url.split("sqlite:///", 1)[1]
    with sqlite3.connect(path) as conn:
        addresses = [r[0] for r in conn.execute("SELECT hash FROM outlast_blobs")]
    conn.close()
    assert addresses and all(len(a) == 32 for a in addresses)
    assert plain_hash not in addresses
    assert serde.fingerprint(f"{MARK}-{'z' * 3000}".encode()) not in addresses


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    from outlast.encryption import from_env

    monkeypatch.setenv("OUTLAST_ENCRYPTION_KEYS",
                       f"k2:{base64.b64encode(K2).decode()},k1:{base64.b64encode(K1).decode()}")
    keys = from_env()
    assert keys is not None and keys.active == "k2" and set(keys.keys) == {"k1", "k2"}
    app, s = simple(sqlite_url, None)  # no encryption= given: the environment's keys
    app.run(s, "a", run_id="r")
    app.close()
    assert MARK.encode() not in raw_bytes(sqlite_url)
    monkeypatch.setenv("OUTLAST_ENCRYPTION_KEYS", "k1")
    with pytest.raises(outlast.ConfigurationError, match="id:base64"):
        from_env()


def test_bad_keys_are_refused() -> None:
    with pytest.raises(outlast.ConfigurationError, match="32 bytes"):
        outlast.Encryption({"k1": b"short"})
    with pytest.raises(outlast.ConfigurationError, match="not among"):
        outlast.Encryption({"k1": K1}, active="k2")
    assert "k1" in repr(outlast.Encryption({"k1": K1})) and str(K1) not in repr(
        outlast.Encryption({"k1": K1}))


def test_the_sealed_store_forwards_every_store_method() -> None:
    # a Store method the wrapper does not define would run the base class's default
    # (a no-op or NotImplementedError) instead of the backend's
    from outlast.store.base import Store
    from outlast.store.sealed import SealedStore

    missing = [name for name, value in vars(Store).items()
               if callable(value) and not name.startswith("__") and name not in vars(SealedStore)]
    assert missing == []


def test_show_without_the_key_names_it(sqlite_url: str) -> None:
    import subprocess
    import sys

    app = markers_app(sqlite_url, enc())
    run_markers(app)
    app.close()
    env = {k: v for k, v in os.environ.items() if k != "OUTLAST_ENCRYPTION_KEYS"}
    for run_id in ("m", "graph"):
        out = subprocess.run(
            [sys.executable, "-m", "outlast.cli", "show", run_id, "--db", sqlite_url],
            capture_output=True, text=True, timeout=60, env={**env, "COLUMNS": "300"})
        said = out.stdout + out.stderr  # a run's steps show; a graph's state cannot be folded
        assert "'k1'" in said and "Traceback" not in said and MARK not in said
