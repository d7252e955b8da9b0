"""What the deep copy a graph node gets of its state costs, for 2 KB messages.

Every node (and route) receives a deep copy of the state (``outlast.graph.detached``) so that changing it in place cannot make an
uninterrupted run differ from a resumed one (docs/graph.md). This measures, for a state
holding N 2 KB messages (plain dicts, as a chat history is kept), the time of that copy and
the time of a whole node (record included) in a graph on a SQLite file whose node appends one
message, so the copy's share of a node is visible.

    python bench/graph_copy.py            # 10, 100, 500 messages
    python bench/graph_copy.py --quick    # 10, 100 messages
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from typing import Any

import outlast
from outlast.graph import detached

MESSAGE = 2048


def message(i: int) -> dict[str, str]:
    body = f"message {i:05d} " + "".join(chr(97 + (i * 7 + k) % 26) for k in range(MESSAGE))
    return {"role": "assistant", "content": body[:MESSAGE]}


def copy_seconds(n: int, repeat: int = 50) -> tuple[float, float]:
    """Median seconds of the copy a node gets of a state of ``n`` messages, and of
    ``copy.deepcopy`` of it for comparison."""
    state = {"messages": [message(i) for i in range(n)], "n": n}
    out = []
    for fn in (detached, copy.deepcopy):
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn(state)
            times.append(time.perf_counter() - started)
        out.append(sorted(times)[len(times) // 2])
    return out[0], out[1]


def node_seconds(n: int, folder: str, nodes: int = 20) -> float:
    """Mean seconds per node of a graph whose state already holds ``n`` messages."""
    app = outlast.App(f"sqlite:///{os.path.join(folder, f'copy-{n}.db')}")
    graph = app.graph("chat", reducers={"messages": outlast.append})

    @graph.node
    def talk(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [message(state["n"])], "n": state["n"] + 1}

    graph.edge(outlast.START, "talk")
    graph.route("talk", lambda s: outlast.END if s["n"] >= n + nodes else "talk")
    start = {"messages": [message(i) for i in range(n)], "n": n}
    began = time.perf_counter()
    app.run(graph, start, run_id=f"copy-{n}")
    elapsed = time.perf_counter() - began
    app.close()
    return elapsed / nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    sizes = (10, 100) if parser.parse_args().quick else (10, 100, 500)
    print("| messages in the state | node's copy | copy.deepcopy | one node (copies, record) "
          "| copies' share |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            c, deep = copy_seconds(n)
            node = node_seconds(n, folder)
            # A node costs two copies: its own, and the route's.
            print(f"| {n} | {c * 1e6:,.0f} us | {deep * 1e6:,.0f} us | {node * 1e3:,.2f} ms "
                  f"| {2 * c / node:.0%} |")


if __name__ == "__main__":
    main()
