"""Encryption at rest for framework checkpoints (the LangGraph saver, the Agent Framework
storage) and the deduplicating receiver's stored responses: no marker in the raw SQLite file
(WAL included) or PostgreSQL's tables; reads back; deletes still find the blobs in use; rows
are bound to their place; without the key, nothing is read or freed."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import sqlite3
from typing import Annotated, Any, TypedDict

import pytest
from tests.test_encryption import raw_bytes

import outlast
from outlast.encryption import sealed_kid
from outlast.errors import SerializationError, UnreadableValue

pytest.importorskip("cryptography")
pytest.importorskip("langgraph")
pytest.importorskip("agent_framework")

from agent_framework import Message, WorkflowCheckpoint  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

from outlast.dedup import Deduplicator  # noqa: E402
from outlast.integrations._rows import unpack_row  # noqa: E402
from outlast.integrations.agent_framework import OutlastCheckpointStorage  # noqa: E402
from outlast.integrations.langgraph import OutlastSaver  # noqa: E402

K1 = os.urandom(32)
MARK = "SECRETCPMARK"


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]
    note: str


def chat(saver: OutlastSaver, thread: str, turns: int) -> dict[str, Any]:
    """A loop appending marked messages (small ones and blob-sized ones) and a small note."""
    builder = StateGraph(Chat)
    builder.add_node("talk", lambda s: {
        "messages": [f"{MARK}-lg-{len(s['messages'])}-" + "q" * (3000 if len(s["messages"]) % 2
                                                                 else 10)],
        "note": f"{MARK}-note-{len(s['messages'])}"})
    builder.add_edge(START, "talk")
    builder.add_conditional_edges("talk", lambda s: END if len(s["messages"]) >= turns else "talk")
    config = {"configurable": {"thread_id": thread}, "recursion_limit": turns + 10}
    return builder.compile(checkpointer=saver).invoke(  # type: ignore[no-any-return]
        {"messages": [], "note": ""}, config)  # type: ignore[arg-type]


def maf_checkpoint(i: int) -> WorkflowCheckpoint:
    history = [Message(role="user", contents=[f"{MARK}-maf-{k}-" + "w" * (k % 2 * 2000)])
               for k in range(i + 1)]
    return WorkflowCheckpoint(
        workflow_name="wf", graph_signature_hash="sig", checkpoint_id=f"c{i}",
        timestamp=f"2026-01-01T00:00:{i:02d}+00:00",
        state={"_executor_state": {"a": {"history": history, "small": f"{MARK}-small"}}})


def write_everything(url: str, encryption: outlast.Encryption | None) -> None:
    app = outlast.App(url, encryption=encryption)
    try:
        saver = OutlastSaver(app)
        assert chat(saver, "t", 6)["note"] == f"{MARK}-note-5"
        storage = OutlastCheckpointStorage(app)
        for i in range(3):
            asyncio.run(storage.save(maf_checkpoint(i)))
    finally:
        app.close()


def row_values(url: str) -> list[bytes]:
    """Every checkpoint, metadata and write value as stored."""
    sqls = ["SELECT checkpoint FROM {p}lg_checkpoints", "SELECT metadata FROM {p}lg_checkpoints",
            "SELECT value FROM {p}lg_writes"]
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url.split("sqlite:///", 1)[1])) as conn:
            rows = [r for sql in sqls for r in conn.execute(sql.format(p="outlast_"))]
        conn.close()
    else:
        import psycopg

        base, schema = url.split("?schema=")
        with psycopg.connect(base) as pg:
            rows = [r for sql in sqls for r in pg.execute(sql.format(p=f'"{schema}".'))]
    return [bytes(r[0]) for r in rows]


def test_checkpoint_rows_are_sealed(store_url: str) -> None:
    keys = outlast.Encryption({"k1": K1})
    write_everything(store_url, keys)
    assert MARK.encode() not in raw_bytes(store_url)
    # rows are deflated, so the search above alone would not see clear rows: each is sealed
    values = row_values(store_url)
    assert len(values) > 20
    assert all(sealed_kid(v) == "k1" for v in values if v), values
    # read back whole, with the key
    app = outlast.App(store_url, encryption=keys)
    try:
        saver = OutlastSaver(app)
        latest = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert latest is not None and latest.checkpoint["channel_values"]["note"] == f"{MARK}-note-5"
        assert len(list(saver.list({"configurable": {"thread_id": "t"}}))) >= 6
        storage = OutlastCheckpointStorage(app)
        got = asyncio.run(storage.load("c2"))
        assert got.state["_executor_state"]["a"]["small"] == f"{MARK}-small"
        # deletes open the rows to find the blobs still in use: the kept ones still read
        saver.prune(["t"], keep=1)
        kept = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert kept is not None and len(kept.checkpoint["channel_values"]["messages"]) == 6
        assert storage.prune(workflow_name="wf", keep=1) == 2
        last = asyncio.run(storage.load("c2")).state["_executor_state"]["a"]["history"]
        assert [m.text.split("-w")[0].rstrip("-") for m in last] == [f"{MARK}-maf-{k}" for k in range(3)]
    finally:
        app.close()


def test_without_encryption_the_checkpoint_markers_are_there(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)
    write_everything(sqlite_url, None)
    # the checks above can fail: in the clear, the rows (deflated) hold the markers
    stored = b"".join(unpack_row(v) for v in row_values(sqlite_url))
    assert f"{MARK}-small".encode() in stored  # (LangGraph's own values are msgpack, base64)
    assert b'"channel_versions"' in stored  # LangGraph's checkpoint head
    assert not any(sealed_kid(v) for v in row_values(sqlite_url))


def test_without_the_key_nothing_is_read_or_freed(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)
    write_everything(sqlite_url, outlast.Encryption({"k1": K1}))
    path = sqlite_url.split("sqlite:///", 1)[1]

    def blobs() -> int:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("SELECT count(*) FROM outlast_blobs").fetchone()[0])

    before = blobs()
    with OutlastSaver(sqlite_url) as plain:
        with pytest.raises(UnreadableValue, match="'k1'"):
            plain.get_tuple({"configurable": {"thread_id": "t"}})
        # the walk that finds blobs in use cannot read the rows: it refuses, frees nothing
        with pytest.raises(UnreadableValue, match="'k1'"):
            plain.prune(["t"], keep=1)
    assert blobs() == before
    with OutlastSaver(sqlite_url) as plain, pytest.raises(UnreadableValue):
        plain.prune(["t"], keep=1)  # the failed delete was rolled back: still all there
    wrong = outlast.App(sqlite_url, encryption=outlast.Encryption({"k1": os.urandom(32)}))
    try:
        with pytest.raises(SerializationError, match="authentication failed"):
            OutlastSaver(wrong).get_tuple({"configurable": {"thread_id": "t"}})
    finally:
        wrong.close()


def test_a_checkpoint_row_copied_to_another_thread_does_not_decrypt(sqlite_url: str) -> None:
    keys = outlast.Encryption({"k1": K1})
    app = outlast.App(sqlite_url, encryption=keys)
    try:
        saver = OutlastSaver(app)
        chat(saver, "one", 2)
        chat(saver, "two", 2)
    finally:
        app.close()
    path = sqlite_url.split("sqlite:///", 1)[1]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "UPDATE outlast_lg_checkpoints SET checkpoint = (SELECT checkpoint FROM "
            "outlast_lg_checkpoints c WHERE c.thread_id = 'one' AND c.checkpoint_id = "
            "(SELECT max(checkpoint_id) FROM outlast_lg_checkpoints WHERE thread_id = 'one')) "
            "WHERE thread_id = 'two'")
        conn.commit()
    app = outlast.App(sqlite_url, encryption=keys)
    try:
        saver = OutlastSaver(app)
        assert saver.get_tuple({"configurable": {"thread_id": "one"}}) is not None
        with pytest.raises(SerializationError, match="authentication failed"):
            saver.get_tuple({"configurable": {"thread_id": "two"}})
    finally:
        app.close()


def test_dedup_responses_are_sealed(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTLAST_ENCRYPTION_KEYS", raising=False)
    url = store_url.split("?", 1)[0] if store_url.startswith("postgres") else store_url
    table = "dedup_" + os.urandom(4).hex()
    keys = outlast.Encryption({"k1": K1})
    with Deduplicator(url, table=table, encryption=keys) as dedup:
        assert dedup.execute("k", "fp", lambda: f"{MARK}-response".encode()) == (
            f"{MARK}-response".encode())
        assert dedup.execute("k", "fp", lambda: b"again") == f"{MARK}-response".encode()
        stored = _column(url, table)
        assert len(stored) == 1 and MARK.encode() not in stored[0]
    with Deduplicator(url, table=table) as plain, pytest.raises(UnreadableValue, match="'k1'"):
        plain.execute("k", "fp", lambda: b"again")
    with Deduplicator(url, table=table + "x") as clear:  # no keys: stored as it is
        clear.execute("k", "fp", lambda: f"{MARK}-clear".encode())
        assert _column(url, table + "x") == [f"{MARK}-clear".encode()]
    with Deduplicator(url, table=table + "x", encryption=keys) as later:  # switched on later
        assert later.execute("k", "fp", lambda: b"again") == f"{MARK}-clear".encode()
    if not url.startswith("sqlite"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")
            conn.execute(f"DROP TABLE {table}x")


def _column(url: str, table: str) -> list[bytes]:
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite:///"):])) as conn:
            return [bytes(r[0]) for r in conn.execute(f"SELECT response FROM {table}")]
    import psycopg

    with psycopg.connect(url) as conn:
        return [bytes(r[0]) for r in conn.execute(f"SELECT response FROM {table}")]
