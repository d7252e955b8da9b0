"""Graphs: node-by-node checkpoints, resume after SIGKILL, routes and loops, interrupts,
validation. Every test runs on SQLite and PostgreSQL where it touches a store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.apps.graphy import loop_graph
from tests.proc import wait_for_line

import outlast
from outlast.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent


def _env(log: Path, hang: int | None = None) -> dict[str, str]:
    env = {**os.environ, "GRAPHY_LOG": str(log), "PYTHONPATH": str(ROOT)}
    env.pop("GRAPHY_HANG", None)
    if hang is not None:
        env["GRAPHY_HANG"] = str(hang)
    return env


def _graphy(store_url: str, run_id: str, which: str, log: Path) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "tests.apps.graphy", store_url, run_id, which]
    return subprocess.run(cmd, cwd=ROOT, env=_env(log), capture_output=True, timeout=60)


@pytest.mark.counts_executions
def test_sigkill_inside_node6_resumes_at_node6(store_url: str, tmp_path: Path) -> None:
    log = tmp_path / "nodes.log"
    cmd = [sys.executable, "-m", "tests.apps.graphy", store_url, "g-kill", "chain"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(log, hang=6))
    wait_for_line(log, "hang 6", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _graphy(store_url, "g-kill", "chain", log)
    assert resumed.returncode == 0, resumed.stderr.decode()
    counts = Counter(log.read_text().splitlines())
    assert all(counts[f"start {i}"] == 1 for i in range(1, 11) if i != 6), counts
    assert counts["start 6"] == 2  # node 6 was interrupted: it runs again...
    assert counts["step 6"] == 1  # ...but its completed step replays from the journal
    assert counts["done 6"] == 1

    clean_log = tmp_path / "clean.log"
    clean = _graphy(store_url, "g-clean", "chain", clean_log)
    assert clean.returncode == 0, clean.stderr.decode()
    final = json.loads(resumed.stdout)
    assert final == json.loads(clean.stdout)
    assert final["trail"] == [f"n{i}" for i in range(1, 11)]
    assert final["total"] == sum(i * 10 for i in range(1, 11))

    app = outlast.App(store_url)
    info = app.get_run("g-kill")
    assert info.status == "completed" and info.recoveries == 1
    from tests.apps import graphy

    graphy.app.use(store_url)
    cps = graphy.app.checkpoints("g-kill")
    assert [c.node for c in cps] == ["__start__", *[f"n{i}" for i in range(1, 11)]]
    app.close()
    graphy.app.close()


def test_routes_and_loops(store_url: str) -> None:
    app = outlast.App(store_url)
    graph = loop_graph(app, snapshot_every=2)
    final = app.run(graph, {"rounds": 4}, run_id="loop-1")
    assert final["log"] == ["plan", "search0", "search1", "search2", "search3", "write"]
    assert final["done"] is True and final["n"] == 4
    cps = app.checkpoints("loop-1")
    assert [c.node for c in cps] == ["__start__", "plan", "search", "search", "search", "search", "write"]
    assert [c.next for c in cps[1:]] == ["search", "search", "search", "search", "write", outlast.END]
    # Every checkpoint's state, rebuilt from deltas and snapshots, is the state at that node.
    assert app.state("loop-1", 3) == {"rounds": 4, "log": ["plan", "search0", "search1"], "n": 2}
    assert app.state("loop-1") == final
    # A finished run returns its stored result without running again.
    assert app.run(graph, {"rounds": 4}, run_id="loop-1") == final
    app.close()


def test_async_nodes_and_steps(sqlite_url: str) -> None:
    import asyncio

    app = outlast.App(sqlite_url)
    graph = app.graph("agraph", reducers={"seen": outlast.append})

    @app.step
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @graph.node
    async def one(state: dict) -> dict:
        return {"seen": await double(state["x"])}

    @graph.node
    def two(state: dict) -> dict:
        return {"seen": state["seen"][-1] + 1}

    graph.edge(outlast.START, "one")
    graph.edge("one", "two")
    graph.edge("two", outlast.END)
    assert graph.is_async
    assert app.run(graph, {"x": 5}) == {"x": 5, "seen": [10, 11]}
    assert asyncio.run(app.run_async(graph, {"x": 1})) == {"x": 1, "seen": [2, 3]}
    app.close()


def test_updates_are_stored_as_deltas(store_url: str) -> None:
    app = outlast.App(store_url)
    graph = app.graph("chat", reducers={"messages": outlast.append}, snapshot_every=5)

    @graph.node
    def talk(state: dict) -> dict:
        i = len(state["messages"])
        return {"messages": {"role": "user", "text": f"{i:04d}" + "x" * 2000}}

    graph.edge(outlast.START, "talk")
    graph.route("talk", lambda s: outlast.END if len(s["messages"]) >= 12 else "talk")
    final = app.run(graph, {"messages": []}, run_id="chat-1")
    assert len(final["messages"]) == 12
    entries = [e for e in app.store.load_journal("chat-1") if e.kind == "node"]
    assert len(entries) == 12
    # Each entry holds references, never the 2 KB messages themselves, snapshots included.
    assert max(len(e.output or b"") for e in entries) < 1500
    snaps = [json.loads(e.meta or "{}")["snap"] for e in entries]
    assert snaps == [i % 5 == 4 for i in range(12)]
    assert app.state("chat-1", 7)["messages"] == final["messages"][:7]
    app.close()


@pytest.mark.counts_executions
def test_interrupt_across_process_restart(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "ask.log"
    monkeypatch.setenv("GRAPHY_LOG", str(log))  # the resumed node logs from this process
    first = _graphy(store_url, "ask-1", "ask", log)
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout.decode().strip() == "suspended"
    from tests.apps import graphy

    graphy.app.use(store_url)
    try:
        assert graphy.app.get_run("ask-1").status == "suspended"
        graphy.app.send("ask-1", "resume", "yes")
        final = graphy.app.run(graphy.ask, {"topic": "acme"}, run_id="ask-1")
    finally:
        graphy.app.close()
    assert final == {"topic": "acme", "trail": ["draft", "approve"], "text": "email about acme", "approved": True}
    counts = Counter(log.read_text().splitlines())
    assert counts["draft"] == 1  # the node before the interrupt did not run again
    assert counts["approve start"] == 2 and counts["approve got yes"] == 1


def test_interrupt_outside_a_run_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="outside a run"):
        outlast.interrupt("anyone?")


def _bad(app: outlast.App, shape: str) -> outlast.Graph:
    g = app.graph(f"bad_{shape}")

    def a(state: dict) -> dict:
        return {}

    def b(state: dict) -> dict:
        return {}

    g.node(a)
    g.node(b)
    if shape == "no_start":
        g.edge("a", "b")
        g.edge("b", outlast.END)
    elif shape == "unknown_target":
        g.edge(outlast.START, "a")
        g.edge("a", "c")
        g.edge("b", outlast.END)
    elif shape == "dead_end":
        g.edge(outlast.START, "a")
        g.edge("a", "b")
    elif shape == "unreachable":
        g.edge(outlast.START, "a")
        g.edge("a", outlast.END)
        g.edge("b", outlast.END)
    elif shape == "no_end":
        g.edge(outlast.START, "a")
        g.edge("a", "b")
        g.edge("b", "a")
    elif shape == "route_targets":
        g.edge(outlast.START, "a")
        g.route("a", lambda s: "b", targets=["b", "zzz"])
        g.edge("b", outlast.END)
    return g


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("no_start", "no entry: add graph.edge\\(outlast.START"),
        ("unknown_target", "edge 'a' -> 'c' goes to an unknown node \\(nodes: a, b\\)"),
        ("dead_end", "node 'b' has no outgoing edge; add graph.edge\\('b', outlast.END\\)"),
        ("unreachable", "node\\(s\\) 'b' cannot be reached from START"),
        ("no_end", "END cannot be reached from node 'a'"),
        ("route_targets", "route from 'a' lists unknown target 'zzz'"),
    ],
)
def test_bad_graphs_are_rejected_before_a_run_is_recorded(sqlite_url: str, shape: str, message: str) -> None:
    app = outlast.App(sqlite_url)
    graph = _bad(app, shape)
    with pytest.raises(ConfigurationError, match=message):
        app.run(graph, {}, run_id="bad")
    assert app.list_runs() == []
    app.close()


def test_bad_declarations_fail_at_once(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    g = app.graph("decl")
    with pytest.raises(ConfigurationError, match="reserved"):
        g.node(lambda s: {}, name=outlast.END)
    g.node(lambda s: {}, name="a")
    g.edge(outlast.START, "a")
    with pytest.raises(ConfigurationError, match="already has an outgoing edge"):
        g.route(outlast.START, lambda s: "a")
    with pytest.raises(ConfigurationError, match="END has no outgoing edges"):
        g.edge(outlast.END, "a")
    with pytest.raises(ConfigurationError, match="no nodes"):
        app.graph("empty").validate()
    with pytest.raises(ConfigurationError, match="two workflows are named 'decl'"):
        app.graph("decl")
    app.close()


def test_runtime_errors_name_run_node_and_fix(store_url: str) -> None:
    app = outlast.App(store_url)
    g = app.graph("wrong")

    @g.node
    def a(state: dict) -> Any:
        return state.get("ret", {})

    g.edge(outlast.START, "a")
    g.route("a", lambda s: s.get("go", outlast.END))
    with pytest.raises(ConfigurationError, match=r"run 'r1': the route after node 'a' of graph 'wrong' returned 'nowhere'"):
        app.run(g, {"go": "nowhere"}, run_id="r1")
    with pytest.raises(ConfigurationError, match=r"node 'a' of graph 'wrong' returned a list"):
        app.run(g, {"ret": [1]}, run_id="r2")
    assert app.get_run("r1").status == "failed"

    loop = loop_graph(app, "forever", max_nodes=5)
    with pytest.raises(ConfigurationError, match="ran 5 nodes without reaching END"):
        app.run(loop, {"rounds": 100}, run_id="r3")
    app.close()


class _Crash(BaseException):
    """Stands for the process dying inside a node (the run is left pending)."""


def test_in_place_mutation_cannot_make_a_crash_change_the_final_state(store_url: str) -> None:
    # Issue 22: a node that appends to state["messages"] in place and also returns the message
    # as an update doubled it in an uninterrupted run only: {"messages": [user, hi, hi], "n": 3}
    # against {"messages": [user, hi], "n": 2} after a crash and resume.
    app = outlast.App(store_url)
    crash = {"on": False}
    graph = app.graph("mutating", reducers={"messages": outlast.append})

    @graph.node
    def reply(state: dict[str, Any]) -> dict[str, Any]:
        msg = {"role": "assistant", "content": "hi"}
        state["messages"].append(msg)
        state["n"] += 100
        return {"messages": [msg], "n": state["n"] - 99}

    @graph.node
    def count(state: dict[str, Any]) -> dict[str, Any]:
        if crash["on"]:
            raise _Crash
        return {"n": len(state["messages"])}

    graph.edge(outlast.START, "reply")
    graph.edge("reply", "count")
    graph.route("count", lambda s: s.setdefault("routed", outlast.END))
    start = {"messages": [{"role": "user", "content": "hello"}], "n": 1}

    clean = app.run(graph, start, run_id="clean")
    crash["on"] = True
    with pytest.raises(_Crash):
        app.run(graph, start, run_id="crashed")
    crash["on"] = False
    resumed = app.run(graph, start, run_id="crashed")
    user, hi = start["messages"][0], {"role": "assistant", "content": "hi"}
    assert clean == resumed == {"messages": [user, hi], "n": 2}
    assert start == {"messages": [user], "n": 1}  # the caller's input is untouched too
    app.close()
