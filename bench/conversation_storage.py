"""Bytes stored for a growing conversation: outlast.llm vs LangGraph's SqliteSaver.

A conversation of N turns: each turn appends a 2 KB user message, sends the whole history
to the model (the local FakeLLMServer through the real openai SDK), and appends its 2 KB
reply. outlast journals every call through ``outlast.llm.wrap``; LangGraph checkpoints the
same message list after every step with ``SqliteSaver`` (measured in the same run when
``langgraph`` and ``langgraph-checkpoint-sqlite`` import).

    python bench/conversation_storage.py            # 10, 50, 200 turns
    python bench/conversation_storage.py --quick    # 10, 50 turns

Reported: the unique payload (each message once, as the JSON sent to the model), the bytes each stores for
the run (outlast: journal outputs and meta plus the run's blobs; LangGraph: checkpoint
blobs, metadata and pending writes), the ratio, and the SQLite file size.
"""

from __future__ import annotations

import argparse
import json
import operator
import sqlite3
import tempfile
from pathlib import Path
from typing import Annotated, Any, TypedDict

import openai

import outlast
import outlast.llm
from outlast.testing import FakeLLMServer

MESSAGE = 2048


def user_text(turn: int) -> str:
    head = f"turn {turn}: "
    return head + "q" * (MESSAGE - len(head))


def outlast_bytes(folder: Path, turns: int, server: FakeLLMServer) -> tuple[int, int, int]:
    db = folder / f"outlast-{turns}.db"
    app = outlast.App(f"sqlite:///{db}")
    llm = outlast.llm.wrap(
        openai.OpenAI(base_url=server.openai_base_url, api_key="bench", max_retries=0)
    )

    @app.workflow(name=f"talk{turns}")
    def talk(ctx: outlast.Context, n: int) -> int:
        messages: list[Any] = []
        for turn in range(n):
            messages.append({"role": "user", "content": user_text(turn)})
            reply = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
            messages.append(reply.choices[0].message)
        # The unique payload: each message once, as the JSON the model is sent.
        return sum(len(json.dumps(m if isinstance(m, dict) else m.model_dump(exclude_unset=True)))
                   for m in messages)

    payload = app.run(talk, turns, run_id="talk")
    app.close()
    with sqlite3.connect(db) as conn:
        journal = conn.execute(
            "SELECT sum(length(output) + length(coalesce(meta, ''))) FROM outlast_journal"
        ).fetchone()[0]
        blobs = conn.execute(
            "SELECT coalesce(sum(length(data)), 0) FROM outlast_blobs"
        ).fetchone()[0]
    return int(payload), int(journal + blobs), db.stat().st_size


def langgraph_bytes(folder: Path, turns: int) -> tuple[int, int] | None:
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError:
        return None

    class State(TypedDict):
        messages: Annotated[list[dict[str, str]], operator.add]

    def model(state: State) -> dict[str, Any]:
        turn = len(state["messages"]) // 2
        return {"messages": [{"role": "assistant", "content": "a" * MESSAGE + str(turn)}]}

    builder = StateGraph(State)
    builder.add_node("model", model)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    db = folder / f"langgraph-{turns}.db"
    conn = sqlite3.connect(db, check_same_thread=False)
    graph = builder.compile(checkpointer=SqliteSaver(conn))
    config = {"configurable": {"thread_id": "talk"}}
    for turn in range(turns):
        graph.invoke({"messages": [{"role": "user", "content": user_text(turn)}]}, config)  # type: ignore[arg-type]
    stored = conn.execute(
        "SELECT sum(length(checkpoint) + length(metadata)) FROM checkpoints"
    ).fetchone()[0] + (conn.execute("SELECT coalesce(sum(length(value)), 0) FROM writes").fetchone()[0])
    conn.close()
    return int(stored), db.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 and 50 turns only")
    args = parser.parse_args()
    sizes = (10, 50) if args.quick else (10, 50, 200)
    print(f"{'turns':>5} {'payload':>10} {'outlast':>10} {'ratio':>6} {'file':>10}  "
          f"{'langgraph':>11} {'ratio':>6} {'file':>10}")
    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer(reply_tokens=MESSAGE // 4) as server:
        for turns in sizes:
            payload, ours, our_file = outlast_bytes(Path(tmp), turns, server)
            lg = langgraph_bytes(Path(tmp), turns)
            line = (f"{turns:>5} {payload:>10,} {ours:>10,} {ours / payload:>6.2f} {our_file:>10,}")
            if lg is None:
                line += "  langgraph not installed"
            else:
                line += f"  {lg[0]:>11,} {lg[0] / payload:>6.2f} {lg[1]:>10,}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
