"""OutlastSaver, the LangGraph checkpointer on outlast's store: the official conformance suite,
a real StateGraph killed with SIGKILL mid-graph and resumed, linear storage of a growing
messages channel, and blobs freed by delete and prune. SQLite and PostgreSQL.

Run as a script (``python -m tests.test_langgraph_saver URL THREAD LOG [HANG]``) it is the child
process of the SIGKILL test: a 6-node graph that appends one message per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import operator
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage  # noqa: E402
from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.graph.message import add_messages  # noqa: E402

from outlast.integrations.langgraph import OutlastSaver  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = 2048


# -- graphs ---------------------------------------------------------------------------------


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def chain_graph(log: Path | None, hang: int | None) -> Any:
    """Nodes n1..n6, each appending one AI message; node ``hang`` blocks forever."""
    builder = StateGraph(Chat)

    def node(i: int) -> Any:
        def run(state: Chat) -> dict[str, Any]:
            if log is not None:
                with log.open("a") as f:
                    f.write(f"start {i}\n")
                    if i == hang:
                        f.write(f"hang {i}\n")
            if i == hang:
                time.sleep(600)  # killed here
            return {"messages": [AIMessage(content=f"n{i} saw {len(state['messages'])}", id=f"m{i}")]}

        return run

    for i in range(1, 7):
        builder.add_node(f"n{i}", node(i))
        builder.add_edge(START if i == 1 else f"n{i - 1}", f"n{i}")
    builder.add_edge("n6", END)
    return builder


class Growing(TypedDict):
    messages: Annotated[list[dict[str, str]], operator.add]


def message(i: int) -> dict[str, str]:
    body = f"message {i:05d} " + "".join(chr(97 + (i * 7 + k) % 26) for k in range(MESSAGE))
    return {"role": "assistant", "content": body[:MESSAGE]}


def grow(saver: OutlastSaver, thread_id: str, n: int) -> dict[str, Any]:
    """A one-node loop appending a 2 KB message per step, ``n`` steps."""
    builder = StateGraph(Growing)
    builder.add_node("talk", lambda s: {"messages": [message(len(s["messages"]))]})
    builder.add_edge(START, "talk")
    builder.add_conditional_edges("talk", lambda s: END if len(s["messages"]) >= n else "talk")
    config = {"configurable": {"thread_id": thread_id}, "recursion_limit": n + 10}
    return builder.compile(checkpointer=saver).invoke({"messages": []}, config)  # type: ignore[arg-type]


# -- reading what is stored (the tables, straight) --------------------------------------------


def _query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        import sqlite3

        # closing(): sqlite3's own context manager commits but does not close.
        with contextlib.closing(sqlite3.connect(url.split(":///", 1)[1])) as conn, conn:
            return conn.execute(sql.replace("%s", "?").format(p="outlast_"), params).fetchall()
    import psycopg

    base, schema = url.split("?schema=")
    with psycopg.connect(base) as conn:
        return conn.execute(sql.format(p=f"{schema}."), params).fetchall()


def stored_bytes(url: str, thread_id: str) -> int:
    """Payload bytes the thread holds: checkpoint rows, writes, and the blobs it references."""
    return sum(int(_query(url, sql, thread_id)[0][0] or 0) for sql in (
        "SELECT sum(length(checkpoint) + length(metadata)) FROM {p}lg_checkpoints WHERE thread_id = %s",
        "SELECT sum(length(value)) FROM {p}lg_writes WHERE thread_id = %s",
        "SELECT sum(length(b.data)) FROM {p}blobs b JOIN {p}blob_refs r ON r.hash = b.hash "
        "WHERE r.run_id = 'lg:' || %s",
    ))


def blob_count(url: str) -> int:
    return int(_query(url, "SELECT count(*) FROM {p}blobs")[0][0])


# -- tests --------------------------------------------------------------------------------------


def test_conformance_suite_passes(store_url: str) -> None:
    @checkpointer_test(name="OutlastSaver")
    async def make() -> Any:
        saver = OutlastSaver(store_url)
        yield saver
        saver.close()

    report = asyncio.run(validate(make))
    results = {name: result.passed for name, result in report.results.items()}
    # every capability, base and extended, is detected and passes
    assert results == dict.fromkeys(
        ["put", "put_writes", "get_tuple", "list", "delete_thread", "delete_for_runs",
         "copy_thread", "prune"], True), {
        n: r.failures for n, r in report.results.items() if not r.passed}
    assert report.passed_all_base()


def test_sigkill_mid_graph_resumes_from_the_checkpoint(store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "nodes.log"
    cmd = [sys.executable, "-m", "tests.test_langgraph_saver", store_url, "t-kill", str(log)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*cmd, "4"], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while "hang 4" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None, f"child exited early ({proc.returncode})"
        assert time.monotonic() < deadline, "the child never reached node 4"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr.decode()
    starts = log.read_text().splitlines()
    # nodes 1-3 ran once: the resumed process started from the checkpoint after node 3
    assert [s for s in starts if s.startswith("start")] == [
        "start 1", "start 2", "start 3", "start 4", "start 4", "start 5", "start 6"]

    clean = chain_graph(None, None).compile().invoke({"messages": [HumanMessage("hi", id="h")]})
    expected = [[m.type, m.content] for m in clean["messages"]]
    assert json.loads(resumed.stdout) == expected
    assert expected[-1] == ["ai", "n6 saw 6"]


@pytest.mark.parametrize("steps", [10, 50, 200])
def test_storage_is_linear_in_the_messages(store_url: str, steps: int) -> None:
    with OutlastSaver(store_url) as saver:
        final = grow(saver, "t-grow", steps)
        assert final["messages"] == [message(i) for i in range(steps)]
        rows = saver.store.get_checkpoints("t-grow")
        assert len(rows) == steps + 2  # the input, step 0, one per node
        # an older checkpoint reads back whole (newest first: the k-th holds steps - k messages)
        middle = saver.get_tuple({"configurable": {"thread_id": "t-grow", "checkpoint_ns": "",
                                                   "checkpoint_id": rows[steps // 2].checkpoint_id}})
        assert middle is not None
        assert middle.checkpoint["channel_values"]["messages"] == [
            message(i) for i in range(steps - steps // 2)]
    unique = steps * MESSAGE
    assert stored_bytes(store_url, "t-grow") <= 1.5 * unique, stored_bytes(store_url, "t-grow")


def test_prune_keeps_the_latest_and_frees_unused_blobs(store_url: str) -> None:
    with OutlastSaver(store_url) as saver:
        grow(saver, "t-a", 30)
        before, blobs_before = stored_bytes(store_url, "t-a"), blob_count(store_url)
        saver.prune(["t-a"], keep=2)
        tuples = list(saver.list({"configurable": {"thread_id": "t-a"}}))
        assert len(tuples) == 2
        # the kept checkpoints still load every message: shared blobs were not freed
        assert tuples[0].checkpoint["channel_values"]["messages"] == [message(i) for i in range(30)]
        # the list-tree chunks only older checkpoints used were freed
        assert blob_count(store_url) < blobs_before
        assert stored_bytes(store_url, "t-a") < before
        assert stored_bytes(store_url, "t-a") <= 1.2 * 30 * MESSAGE


def test_delete_thread_frees_its_blobs_but_not_shared_ones(store_url: str) -> None:
    with OutlastSaver(store_url) as saver:
        grow(saver, "t-a", 12)
        grow(saver, "t-b", 8)  # the same first 8 messages: their blobs are shared
        saver.delete_thread("t-a")
        assert saver.get_tuple({"configurable": {"thread_id": "t-a"}}) is None
        assert _query(store_url, "SELECT count(*) FROM {p}blob_refs WHERE run_id = 'lg:t-a'")[0][0] == 0
        b = saver.get_tuple({"configurable": {"thread_id": "t-b"}})
        assert b is not None
        assert b.checkpoint["channel_values"]["messages"] == [message(i) for i in range(8)]
        saver.delete_thread("t-b")
        assert blob_count(store_url) == 0
        assert _query(store_url, "SELECT count(*) FROM {p}lg_writes")[0][0] == 0


def test_saver_on_an_app_shares_its_store(sqlite_url: str) -> None:
    import outlast

    app = outlast.App(sqlite_url)
    try:
        saver = OutlastSaver(app)
        grow(saver, "t-app", 3)
        saver.close()  # not its store: left open
        store = app.store
        assert [c.thread_id for c in store.get_checkpoints("t-app", limit=1)] == ["t-app"]
    finally:
        app.close()


def test_async_graph_uses_the_async_methods(store_url: str) -> None:
    async def main() -> list[str]:
        with OutlastSaver(store_url) as saver:
            graph = chain_graph(None, None).compile(checkpointer=saver)
            config = {"configurable": {"thread_id": "t-async"}}
            out = await graph.ainvoke({"messages": [HumanMessage("hi", id="h")]}, config)  # type: ignore[arg-type]
            history = [t async for t in saver.alist(config)]  # type: ignore[arg-type]
            assert len(history) == 8  # input, start, n1..n6
            return [str(m.content) for m in out["messages"]]

    assert asyncio.run(main())[-1] == "n6 saw 6"


def _child(url: str, thread_id: str, log: str, hang: str | None) -> None:
    with OutlastSaver(url) as saver:
        graph = chain_graph(Path(log), int(hang) if hang else None).compile(checkpointer=saver)
        config = {"configurable": {"thread_id": thread_id}}
        state = graph.get_state(config)  # type: ignore[arg-type]
        inputs = None if state.next else {"messages": [HumanMessage("hi", id="h")]}
        out = graph.invoke(inputs, config, durability="sync")  # type: ignore[arg-type]
    print(json.dumps([[m.type, m.content] for m in out["messages"]]))


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
