"""State graphs: nodes that return state updates, joined by edges and routes.

A graph runs as an ordinary workflow on the same engine and store (leases, fencing, workers,
cancel and the CLI all apply). Every node boundary is a checkpoint: after a node returns, its
update is recorded as a journal entry of kind ``"node"`` (stored through content-addressed
blobs, so a message appended to a long list costs the message, not the list), with a full
snapshot every ``snapshot_every`` nodes so rebuilding the state reads a bounded number of
entries. A resumed run rebuilds its state from those entries (no node runs again) and
re-enters the graph at the next node; steps called inside a node are journaled as usual, so a
node interrupted by a crash does not redo its completed steps.

    graph = app.graph("research", reducers={"messages": outlast.append})

    @graph.node
    def plan(state: dict) -> dict: ...

    graph.edge(outlast.START, "plan")
    graph.route("plan", lambda s: outlast.END if s["done"] else "plan")
    final_state = app.run(graph, {"topic": "acme"}, run_id="g-1")
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import serde, telemetry, waits
from .context import Context, RunState, current_run
from .errors import ConfigurationError
from .store.base import Entry, entry_meta
from .workflow import Workflow, _takes_ctx

if TYPE_CHECKING:
    from .app import App

__all__ = ["END", "FORK", "START", "Graph", "append", "interrupt"]

#: The virtual node a graph starts from (``graph.edge(outlast.START, "first")``).
START = "__start__"
#: The virtual node that ends a graph run.
END = "__end__"
#: The node name of the checkpoint a fork starts from.
FORK = "__fork__"
#: Journal entry kind of a node's recorded update.
NODE_KIND = "node"

Reducer = Callable[[Any, Any], Any]


def append(current: Any, update: Any) -> list[Any]:
    """Reducer: add ``update`` (a list, or a single item) to the end of the list ``current``."""
    base = [] if current is None else list(current)
    return base + (list(update) if isinstance(update, list | tuple) else [update])


@dataclass(frozen=True, slots=True)
class _Node:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    takes_ctx: bool


@dataclass(frozen=True, slots=True)
class _Route:
    fn: Callable[[dict[str, Any]], str]
    targets: tuple[str, ...] | None


class Graph(Workflow[Any, dict[str, Any]]):
    """A state graph declared with ``app.graph(name, reducers=...)``; run it with ``app.run``.

    ``reducers`` maps a state key to ``f(current, update) -> new`` (default: the update
    replaces the value). ``snapshot_every``: nodes between full snapshots. ``max_nodes``:
    node executions a run may make before it fails (a loop that never reaches END).
    """

    def __init__(
        self,
        app: App,
        name: str,
        *,
        reducers: Mapping[str, Reducer] | None = None,
        snapshot_every: int = 10,
        max_nodes: int = 1000,
        queue: str = "default",
    ) -> None:
        if snapshot_every < 1 or max_nodes < 1:
            raise ConfigurationError(
                f"graph {name!r}: snapshot_every and max_nodes must be >= 1, got "
                f"{snapshot_every} and {max_nodes}"
            )
        super().__init__(app, self._entry, name=name, queue=queue)
        self.__doc__ = type(self).__doc__
        self.reducers: dict[str, Reducer] = dict(reducers or {})
        self.snapshot_every = snapshot_every
        self.max_nodes = max_nodes
        self.nodes: dict[str, _Node] = {}
        self.edges: dict[str, str] = {}
        self.routes: dict[str, _Route] = {}
        self._valid = False

    # -- building -----------------------------------------------------------------------------

    def node(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
        """Declare a node: ``@graph.node`` or ``@graph.node(name=...)``.

        The function takes the state (a dict; or ``ctx, state``) and returns an update dict
        (or None), sync or async. The node gets a deep copy of the state: changing it in place
        has no effect (and so cannot make a resumed run differ); return updates.
        """

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            node_name = name or f.__name__
            if node_name in (START, END, FORK) or not node_name or node_name.startswith("@"):
                raise ConfigurationError(f"graph {self.name!r}: {node_name!r} is reserved; name the node otherwise")
            if node_name in self.nodes and self.nodes[node_name].fn is not f:
                raise ConfigurationError(
                    f"graph {self.name!r} already has a node named {node_name!r}; "
                    "give one another name with @graph.node(name=...)"
                )
            is_async = inspect.iscoroutinefunction(f)
            self.nodes[node_name] = _Node(node_name, f, is_async, _takes_ctx(f))
            self.is_async = any(n.is_async for n in self.nodes.values())
            self._valid = False
            return f

        return decorate(fn) if fn is not None else decorate

    def edge(self, source: str, target: str) -> None:
        """After ``source`` (a node or START) comes ``target`` (a node or END)."""
        self._check_source(source)
        self.edges[source] = target
        self._valid = False

    def route(
        self,
        source: str,
        choose: Callable[[dict[str, Any]], str],
        targets: Iterable[str] | None = None,
    ) -> None:
        """After ``source``, go where ``choose(state)`` says (a node name or END).

        ``targets`` (optional) lists the names ``choose`` may return, so a graph whose END
        cannot be reached is rejected before it runs.
        """
        self._check_source(source)
        self.routes[source] = _Route(choose, None if targets is None else tuple(targets))
        self._valid = False

    def _check_source(self, source: str) -> None:
        if source == END:
            raise ConfigurationError(f"graph {self.name!r}: END has no outgoing edges")
        if source in self.edges or source in self.routes:
            raise ConfigurationError(
                f"graph {self.name!r}: {source!r} already has an outgoing edge or route; a node "
                "has one successor (use graph.route to choose between several)"
            )

    def validate(self) -> None:
        """Check the graph; raise ConfigurationError naming the problem and the fix."""
        if self._valid:
            return
        known = set(self.nodes)
        where = f"graph {self.name!r}"
        names = ", ".join(sorted(known)) or "none"
        if not known:
            raise ConfigurationError(f"{where} has no nodes; declare them with @graph.node")
        if START not in self.edges and START not in self.routes:
            raise ConfigurationError(f"{where} has no entry: add graph.edge(outlast.START, <first node>)")
        for source in [*self.edges, *self.routes]:
            if source != START and source not in known:
                raise ConfigurationError(f"{where}: an edge leaves unknown node {source!r} (nodes: {names})")
        for source, target in self.edges.items():
            if target != END and target not in known:
                raise ConfigurationError(
                    f"{where}: edge {source!r} -> {target!r} goes to an unknown node (nodes: {names})"
                )
        for source, r in self.routes.items():
            for target in r.targets or ():
                if target != END and target not in known:
                    raise ConfigurationError(
                        f"{where}: route from {source!r} lists unknown target {target!r} (nodes: {names})"
                    )
        for n in sorted(known):
            if n not in self.edges and n not in self.routes:
                raise ConfigurationError(
                    f"{where}: node {n!r} has no outgoing edge; add graph.edge({n!r}, outlast.END) "
                    "or a route"
                )
        reach = self._reachable(START)
        unreachable = sorted(known - reach)
        if unreachable:
            raise ConfigurationError(f"{where}: node(s) {', '.join(map(repr, unreachable))} cannot be reached from START")
        for n in sorted(reach - {END}):
            if END not in self._reachable(n):
                raise ConfigurationError(
                    f"{where}: END cannot be reached from node {n!r}; the run would loop forever. "
                    "Add an edge or route target leading to outlast.END"
                )
        self._valid = True

    def _successors(self, source: str) -> set[str]:
        if source in self.edges:
            return {self.edges[source]}
        route = self.routes.get(source)
        if route is None:
            return set()
        # A route without declared targets may go anywhere.
        return set(route.targets) if route.targets is not None else {*self.nodes, END}

    def _reachable(self, source: str) -> set[str]:
        seen: set[str] = set()
        todo = [source]
        while todo:
            for nxt in self._successors(todo.pop()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    # -- state --------------------------------------------------------------------------------

    def apply(self, state: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
        """The state after ``update``, through the reducers."""
        new = dict(state)
        for key, value in update.items():
            reducer = self.reducers.get(key)
            new[key] = value if reducer is None else reducer(state.get(key), value)
        return new

    def successor(self, source: str, state: Mapping[str, Any], run_id: str) -> str:
        """The node after ``source`` given ``state`` (END when the run is done)."""
        if source in self.edges:
            return self.edges[source]
        route = self.routes.get(source)
        if route is None:
            raise ConfigurationError(f"graph {self.name!r}: node {source!r} has no outgoing edge")
        target = route.fn(detached(state))
        allowed = set(route.targets) if route.targets is not None else {*self.nodes, END}
        if not isinstance(target, str) or target not in allowed:
            names = ", ".join(sorted(allowed))
            raise ConfigurationError(
                f"run {run_id!r}: the route after node {source!r} of graph {self.name!r} returned "
                f"{target!r}, which is not one of its targets ({names}); return a node name or "
                "outlast.END"
            )
        return target

    # -- executing ----------------------------------------------------------------------------

    def _entry(self, ctx: Context, state: dict[str, Any] | None = None, *, fork: dict[str, Any] | None = None) -> Any:
        self.validate()
        rs = current_run()
        assert rs is not None
        execution = _Execution(self, rs, ctx, state or {}, fork)
        return execution.run_async() if self.is_async else execution.run_sync()

    def __repr__(self) -> str:
        return f"<outlast graph {self.name!r}>"


_ATOMS = frozenset({str, int, float, bool, type(None), bytes})


def detached(state: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``state`` for a node or a route, so that changing it in place cannot
    reach the live state. Plain dicts and lists are copied and immutable atoms shared (3 to 20
    times faster than ``copy.deepcopy`` on a chat history); other objects are deep-copied."""
    return {k: _detached(v) for k, v in state.items()}


def _detached(value: Any) -> Any:
    t = type(value)
    if t in _ATOMS:
        return value
    if t is dict:
        return {k: _detached(v) for k, v in value.items()}
    if t is list:
        return [_detached(v) for v in value]
    return copy.deepcopy(value)


def node_meta(entry: Entry) -> dict[str, Any]:
    """The facts a node entry carries (seq, next, journal mark, summary, snapshot flag)."""
    return entry_meta(entry)


def fold(graph: Graph, base: dict[str, Any], entries: list[Entry], fetch: serde.Blobs) -> dict[str, Any]:
    """The state after ``entries`` (node entries in order), starting from ``base``: the last
    full snapshot among them, then the updates recorded after it."""
    start = 0
    for i in range(len(entries) - 1, -1, -1):
        if node_meta(entries[i]).get("snap"):
            start = i
            break
    state = base
    for i, entry in enumerate(entries[start:], start):
        data = serde.loads(entry.output or b"{}", what=f"checkpoint {entry.key} of graph {graph.name!r}", blobs=fetch)
        state = data["s"] if i == start and "s" in data else graph.apply(state, data.get("u") or {})
    return state


def summarize(update: Mapping[str, Any], limit: int = 80) -> str:
    """A one-line description of an update, for checkpoint listings."""
    parts = []
    for key, value in update.items():
        text = repr(value)
        parts.append(f"{key}={text if len(text) <= 40 else text[:37] + '...'}")
    line = ", ".join(parts) or "(no change)"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def interrupt(value: Any = None) -> Any:
    """Suspend the run until ``app.send(run_id, "resume", answer)``; return the answer.

    Call it inside a graph node (or any workflow). ``value`` (what the run asks) is recorded,
    so ``outlast show`` lists it. The run hibernates (no thread, no lease) and resumes on any
    process when the answer arrives: the node runs again from its start, its completed steps
    replay, and this call returns the answer. In an async graph, ``await`` it.
    """
    rs = current_run()
    if rs is None:
        raise ConfigurationError(
            "outlast.interrupt() was called outside a run: call it inside a graph node or a "
            "workflow executing under app.run/app.start"
        )
    rs.durable_value("interrupt", lambda: value)
    return waits.wait_for(rs, "resume")


class _Execution:
    """One execution of a graph run: rebuild the state, then run and record node after node."""

    def __init__(self, graph: Graph, rs: RunState, ctx: Context, state: dict[str, Any], fork: dict[str, Any] | None) -> None:
        self.graph, self.rs, self.ctx = graph, rs, ctx
        self.known: set[str] = set()  # blobs this execution already sent with an entry
        entries = rs.journal.recorded(NODE_KIND)
        if entries:
            meta = node_meta(entries[-1])
            self.state = fold(graph, state, entries, rs.store.get_blobs)
            self.seq, self.next = int(meta["seq"]), str(meta["next"])
            self.since_snap = next(
                (k for k, e in enumerate(reversed(entries)) if node_meta(e).get("snap")), len(entries)
            )
            rs.journal.seek(int(meta["pos"]), meta["counts"])
        elif fork is not None:
            self._start_fork(fork)
        else:
            self.state, self.seq, self.since_snap = dict(state), 0, 0
            self.next = graph.successor(START, self.state, rs.run_id)
        # Nodes count across executions: max_nodes bounds the run, not one process's share.
        self.executed = len(entries)

    def _start_fork(self, fork: dict[str, Any]) -> None:
        base, cp = self.rs.app._fork_base(self.graph, fork["run"], fork["checkpoint"])
        update = fork.get("update") or {}
        self.state = self.graph.apply(base, update)
        node = cp.node
        self.next = str(cp.next) if node == FORK else self.graph.successor(node, self.state, self.rs.run_id)
        self.seq, self.since_snap = cp.seq, 0
        summary = f"forked from {fork['run']} at {cp.id}" + (f"; {summarize(update)}" if update else "")
        self._record(FORK, update, time.time(), summary=summary, snap=True)

    def _record(self, node: str, update: Mapping[str, Any], started: float, *, summary: str | None = None, snap: bool = False) -> None:
        self.seq += 1
        snap = snap or self.since_snap + 1 >= self.graph.snapshot_every
        self.since_snap = 0 if snap else self.since_snap + 1
        blobs: dict[str, bytes] = {}
        doc: dict[str, Any] = {"u": dict(update)}
        if snap:
            doc["s"] = self.state
        output = serde.dumps(doc, what=f"state update of node {node!r}", blobs=blobs)
        call = self.rs.begin(NODE_KIND, node, key=f"@{self.seq}")
        position, counts = self.rs.journal.mark()
        meta = {
            "seq": self.seq, "next": self.next, "pos": position, "counts": counts,
            "summary": summary if summary is not None else summarize(update), "snap": snap,
        }
        fresh = {h: b for h, b in blobs.items() if h not in self.known}
        call.record("completed", output, blobs=fresh, started=started, meta=json.dumps(meta))
        self.known.update(fresh)

    def _before(self) -> _Node:
        self.rs.check()
        if self.rs.checking:  # a replay check never runs a node: nodes past the journal
            raise self.rs.end_of_journal(f"node {self.next!r}", self.rs.journal.position)
        if self.executed >= self.graph.max_nodes:
            raise ConfigurationError(
                f"run {self.rs.run_id!r} of graph {self.graph.name!r} ran {self.executed} nodes "
                f"without reaching END (last: {self.next!r}); a loop that never ends? Raise "
                "app.graph(..., max_nodes=) if it is meant to run longer"
            )
        self.executed += 1
        return self.graph.nodes[self.next]

    def _after(self, node: _Node, update: Any, started: float) -> None:
        if update is None:
            update = {}
        if not isinstance(update, Mapping):
            raise ConfigurationError(
                f"run {self.rs.run_id!r}: node {node.name!r} of graph {self.graph.name!r} returned "
                f"a {type(update).__name__}; a node returns a dict of state updates (or None)"
            )
        self.state = self.graph.apply(self.state, update)
        self.next = self.graph.successor(node.name, self.state, self.rs.run_id)
        self._record(node.name, update, started)

    def _args(self, node: _Node) -> tuple[Any, ...]:
        # A deep copy: a node that changed the live state in place (appending to a list in it)
        # would make an uninterrupted run differ from a resumed one, which rebuilds the state
        # from the recorded updates only.
        state = detached(self.state)
        return (self.ctx, state) if node.takes_ctx else (state,)

    def _span(self, node: _Node) -> Any:
        """The span of one executed node (``step {node}``; a no-op unless observed). A node
        rebuilt from the journal never gets here; one re-entered after a crash runs again,
        in the resuming execution, and gets a span there."""
        return telemetry.executing(self.rs.telemetry.step_span(node.name, f"@{self.seq + 1}", 1, NODE_KIND))

    def run_sync(self) -> dict[str, Any]:
        while self.next != END:
            node = self._before()
            started = time.time()
            with self._span(node):
                update = node.fn(*self._args(node))
            self._after(node, update, started)
        return self.state

    async def run_async(self) -> dict[str, Any]:
        while self.next != END:
            node = self._before()
            started = time.time()
            with self._span(node):
                update = node.fn(*self._args(node))
                if inspect.isawaitable(update):
                    update = await update
            self._after(node, update, started)
        return self.state
