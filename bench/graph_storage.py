"""Storage of a growing conversation: N graph nodes each appending a 2 KB message.

Compares outlast's graph (node updates as content-addressed deltas, a snapshot of
references every 10 nodes) with LangGraph's SqliteSaver (a full checkpoint per node), on the
same machine in the same run. Bytes are the payload columns (journal outputs, blobs, run
input/output for outlast; checkpoints, writes for LangGraph), plus the database file size.

    python bench/graph_storage.py           # 10, 50, 200 nodes
    python bench/graph_storage.py --quick   # 10, 50 nodes

The "saver" column is the same LangGraph graph on outlast's LangGraph checkpointer
(``outlast.integrations.langgraph.OutlastSaver``): checkpoint rows, writes and the blobs its
thread references.
"""

from __future__ import annotations

import argparse
import operator
import os
import sqlite3
import tempfile
from typing import Annotated, Any, TypedDict

import outlast

MESSAGE = 2048


def message(i: int) -> dict[str, str]:
    body = f"message {i:05d} " + "".join(chr(97 + (i * 7 + k) % 26) for k in range(MESSAGE))
    return {"role": "assistant", "content": body[:MESSAGE]}


def _sum(db: str, queries: list[str]) -> int:
    with sqlite3.connect(db) as conn:
        return sum(int(conn.execute(q).fetchone()[0] or 0) for q in queries)


def _file_size(db: str) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(db)


def outlast_graph(n: int, folder: str) -> tuple[int, int, int]:
    """(payload bytes without the final result, payload bytes, file bytes)."""
    db = os.path.join(folder, f"outlast-{n}.db")
    app = outlast.App(f"sqlite:///{db}")
    graph = app.graph("chat", reducers={"messages": outlast.append})

    @graph.node
    def talk(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": message(len(state["messages"]))}

    graph.edge(outlast.START, "talk")
    graph.route("talk", lambda s: outlast.END if len(s["messages"]) >= n else "talk")
    app.run(graph, {"messages": []}, run_id="bench")
    app.close()
    history = _sum(db, [
        "SELECT sum(length(output)) FROM outlast_journal",
        "SELECT sum(length(data)) FROM outlast_blobs",
        "SELECT sum(length(input)) FROM outlast_runs",
    ])
    result = _sum(db, ["SELECT sum(length(output)) FROM outlast_runs"])
    return history, history + result, _file_size(db)


class ChatState(TypedDict):
    messages: Annotated[list[dict[str, str]], operator.add]


def langgraph_sqlite(n: int, folder: str) -> tuple[int, int] | None:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError:
        return None
    db = os.path.join(folder, f"langgraph-{n}.db")

    def talk(state: ChatState) -> dict[str, Any]:
        return {"messages": [message(len(state["messages"]))]}

    builder = StateGraph(ChatState)
    builder.add_node("talk", talk)
    builder.add_edge(START, "talk")
    builder.add_conditional_edges("talk", lambda s: END if len(s["messages"]) >= n else "talk")
    conn = sqlite3.connect(db, check_same_thread=False)
    compiled = builder.compile(checkpointer=SqliteSaver(conn))
    compiled.invoke({"messages": []}, {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10})
    conn.commit()
    conn.close()
    payload = _sum(db, [
        "SELECT sum(length(checkpoint)) + sum(length(metadata)) FROM checkpoints",
        "SELECT sum(length(value)) FROM writes",
    ])
    return payload, _file_size(db)


def outlast_saver(n: int, folder: str) -> tuple[int, int] | None:
    """The langgraph_sqlite graph on OutlastSaver: (payload bytes, file bytes)."""
    try:
        from langgraph.graph import END, START, StateGraph

        from outlast.integrations.langgraph import OutlastSaver
    except ImportError:
        return None
    db = os.path.join(folder, f"saver-{n}.db")
    builder = StateGraph(ChatState)
    builder.add_node("talk", lambda state: {"messages": [message(len(state["messages"]))]})
    builder.add_edge(START, "talk")
    builder.add_conditional_edges("talk", lambda s: END if len(s["messages"]) >= n else "talk")
    with OutlastSaver(f"sqlite:///{db}") as saver:
        config = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}
        builder.compile(checkpointer=saver).invoke({"messages": []}, config)  # type: ignore[arg-type]
    payload = _sum(db, [
        "SELECT sum(length(checkpoint)) + sum(length(metadata)) FROM outlast_lg_checkpoints",
        "SELECT sum(length(value)) FROM outlast_lg_writes",
        "SELECT sum(length(data)) FROM outlast_blobs",
    ])
    return payload, _file_size(db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 and 50 nodes only")
    sizes = [10, 50] if parser.parse_args().quick else [10, 50, 200]
    print(f"{'nodes':>5} {'unique':>9} | {'outlast hist':>12} {'x':>5} {'+result':>9} {'file':>9} | "
          f"{'langgraph':>10} {'x':>6} {'file':>9} | {'saver':>8} {'x':>5} {'file':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            unique = n * MESSAGE
            hist, total, ofile = outlast_graph(n, folder)
            lg = langgraph_sqlite(n, folder)
            lg_text = f"{lg[0]:>10} {lg[0] / unique:>6.1f} {lg[1]:>9}" if lg else "(langgraph-checkpoint-sqlite not installed)"
            sv = outlast_saver(n, folder)
            sv_text = f"{sv[0]:>8} {sv[0] / unique:>5.2f} {sv[1]:>9}" if sv else "(langgraph not installed)"
            print(f"{n:>5} {unique:>9} | {hist:>12} {hist / unique:>5.2f} {total:>9} {ofile:>9} | "
                  f"{lg_text} | {sv_text}")


if __name__ == "__main__":
    main()
