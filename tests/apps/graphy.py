"""Graphs for crash tests: ten nodes in a row, each logging its real executions, and a
graph that asks a human through ``outlast.interrupt``.

``GRAPHY_LOG`` names the log file; the node named in ``GRAPHY_HANG`` calls its step, then
announces itself and hangs, to be SIGKILLed.

Run as a script: ``python -m tests.apps.graphy DB_URL RUN_ID chain|ask``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import outlast

app = outlast.App()
chain = app.graph("chain10", reducers={"trail": outlast.append})
ask = app.graph("ask", reducers={"trail": outlast.append})


def _log(line: str) -> None:
    with open(os.environ.get("GRAPHY_LOG", "graphy.log"), "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@app.step
def measure(i: int) -> int:
    _log(f"step {i}")
    return i * 10


def _make(i: int) -> None:
    def node(state: dict) -> dict:
        _log(f"start {i}")
        value = measure(i)
        if os.environ.get("GRAPHY_HANG") == str(i):
            _log(f"hang {i}")
            time.sleep(60)  # the test kills us here
        _log(f"done {i}")
        return {"trail": f"n{i}", "total": state.get("total", 0) + value}

    chain.node(node, name=f"n{i}")


for _i in range(1, 11):
    _make(_i)
chain.edge(outlast.START, "n1")
for _i in range(1, 10):
    chain.edge(f"n{_i}", f"n{_i + 1}")
chain.edge("n10", outlast.END)


@ask.node
def draft(state: dict) -> dict:
    _log("draft")
    return {"trail": "draft", "text": f"email about {state['topic']}"}


@ask.node
def approve(state: dict) -> dict:
    _log("approve start")
    answer = outlast.interrupt({"question": "send it?", "text": state["text"]})
    _log(f"approve got {answer}")
    return {"trail": "approve", "approved": answer == "yes"}


ask.edge(outlast.START, "draft")
ask.edge("draft", "approve")
ask.edge("approve", outlast.END)


def loop_graph(app: outlast.App, name: str = "loop", **options: Any) -> outlast.Graph:
    """A graph that plans, searches ``state["rounds"]`` times in a loop, then writes."""
    graph = app.graph(name, reducers={"log": outlast.append}, **options)

    @graph.node
    def plan(state: dict) -> dict:
        return {"log": "plan", "n": 0}

    @graph.node
    def search(state: dict) -> dict:
        return {"log": f"search{state['n']}", "n": state["n"] + 1}

    @graph.node
    def write(state: dict) -> dict:
        return {"log": "write", "done": True}

    graph.edge(outlast.START, "plan")
    graph.edge("plan", "search")
    graph.route("search", lambda s: "write" if s["n"] >= s["rounds"] else "search", ["search", "write"])
    graph.edge("write", outlast.END)
    return graph


if __name__ == "__main__":
    app.use(sys.argv[1])
    graph = chain if sys.argv[3] == "chain" else ask
    if graph is ask:
        handle = app.start(ask, {"topic": "acme"}, run_id=sys.argv[2])
        while handle.status not in ("suspended", "completed", "failed"):
            time.sleep(0.05)
        print(handle.status, flush=True)
    else:
        print(json.dumps(app.run(chain, {"total": 0}, run_id=sys.argv[2])), flush=True)
