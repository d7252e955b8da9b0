"""Adapters for the peers the suite compares with: DBOS and LangGraph.

Both are optional (the ``bench`` extra); every function imports its peer lazily and the
``*_missing`` helpers say why a peer cannot run. DBOS keeps one global instance per process,
so its measurements run in a child process (``python bench/peers.py dbos-steps ...``) that
prints one JSON line; LangGraph runs in-process.

Settings are the same as outlast's: SQLite files in WAL mode with the same ``synchronous``
value (DBOS's own default is a rollback journal with full sync; we give it WAL so the
comparison is about the library, not the file mode), PostgreSQL in a throwaway schema.
"""

from __future__ import annotations

import importlib.util
import json
import operator
import os
import random
import sqlite3
import string
import subprocess
import sys
import time
import uuid
from typing import Annotated, Any, TypedDict

PG = "postgresql://postgres@127.0.0.1:5432/test"
MESSAGE = 2048


def missing(*modules: str) -> str | None:
    """Why a peer cannot run ("<module> is not installed"), or None when it can.

    ``OUTLAST_BENCH_PEERS=0`` (``bench/run.py --no-peers``) runs outlast's own figures only.
    """
    if os.environ.get("OUTLAST_BENCH_PEERS", "1") == "0":
        return "not run (--no-peers)"
    for name in modules:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            return f"{name} is not installed (pip install -e '.[bench]')"
        try:
            if importlib.util.find_spec(name) is None:
                return f"{name} is not installed (pip install -e '.[bench]')"
        except ModuleNotFoundError:
            return f"{name} is not installed (pip install -e '.[bench]')"
    return None


def failed(peer: str, exc: BaseException) -> str:
    """The table cell for a peer that was installed but failed to import or start here.

    A peer's own bug (DBOS on Python 3.13, say) must not fail the case or the test suite: the
    figure is reported missing, with why.
    """
    # A child's traceback: its first line says what failed, its last error line why.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    errors = [line for line in lines[1:] if "Error" in line.split(":", 1)[0]]
    why = errors[-1] if errors else lines[-1]
    text = lines[0][:100] + (f" ... {why[:200]}" if len(lines) > 1 else "")
    return f"not available: {peer} failed ({type(exc).__name__}: {text})"


def message(i: int, role: str = "assistant") -> str:
    """The i-th 2 KB message of a conversation: distinct per turn, and pseudo-random letters
    so PostgreSQL's TOAST compression does not flatter a store that repeats them."""
    rng = random.Random(f"{role}{i}")
    return "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(MESSAGE))


def pg_schema_url(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def pg_create_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")


def pg_drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def pg_schema_bytes(url: str, schema: str) -> int:
    """Bytes of every row (pg_column_size of the row) in every table of a schema."""
    return _per_table(url, schema, 'SELECT sum(pg_column_size(x.*)) FROM {table} x')


def pg_schema_disk(url: str, schema: str) -> int:
    """What a schema takes on disk: ``pg_total_relation_size`` (heap, TOAST, indexes) of
    every table, after ``VACUUM``."""
    return _per_table(url, schema, "SELECT pg_total_relation_size('{table}')", vacuum=True)


def _per_table(url: str, schema: str, query: str, vacuum: bool = False) -> int:
    """The sum of ``query`` (``{table}``: each table of the schema, quoted) over its tables."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()]
        total = 0
        for t in tables:
            table = f'"{schema}"."{t}"'
            if vacuum:
                conn.execute(f"VACUUM {table}")
            row = conn.execute(query.format(table=table)).fetchone()
            total += int(row[0] or 0) if row else 0
        return total


def sqlite_bytes(db: str) -> tuple[int, int]:
    """(bytes in every text/blob column of every table, file bytes after a checkpoint)."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        total = 0
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )]
        for t in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')]
            if cols:
                expr = " + ".join(f'coalesce(length("{c}"), 0)' for c in cols)
                total += int(conn.execute(f'SELECT sum({expr}) FROM "{t}"').fetchone()[0] or 0)
    return total, os.path.getsize(db)


# -- LangGraph --------------------------------------------------------------------------------


def _sqlite_conn(path: str, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    return conn


class _Counter(TypedDict):
    i: int


class _Chat(TypedDict):
    messages: Annotated[list[dict[str, str]], operator.add]


def _chain_graph(steps: int) -> Any:
    from langgraph.graph import END, START, StateGraph

    def node(state: _Counter) -> dict[str, int]:
        return {"i": state["i"] + 1}

    builder = StateGraph(_Counter)
    for k in range(steps):
        builder.add_node(f"n{k}", node)
        builder.add_edge(START if k == 0 else f"n{k - 1}", f"n{k}")
    builder.add_edge(f"n{steps - 1}", END)
    return builder


def langgraph_steps(store: str, runs: int, steps: int, *, path: str = "", sync: str = "normal",
                    url: str = PG) -> float:
    """Seconds per node for ``runs`` invocations of a ``steps``-node chain with a saver."""
    builder = _chain_graph(steps)
    if store == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = _sqlite_conn(path, sync)
        saver = SqliteSaver(conn)
        graph = builder.compile(checkpointer=saver)
        elapsed = _invoke_many(graph, runs)
        conn.close()
        return elapsed / (runs * steps)
    from langgraph.checkpoint.postgres import PostgresSaver

    schema = f"lg_{uuid.uuid4().hex[:10]}"
    pg_create_schema(url, schema)
    try:
        with PostgresSaver.from_conn_string(pg_schema_url(url, schema)) as saver:
            saver.setup()
            graph = builder.compile(checkpointer=saver)
            return _invoke_many(graph, runs) / (runs * steps)
    finally:
        pg_drop_schema(url, schema)


def _invoke_many(graph: Any, runs: int) -> float:
    graph.invoke({"i": 0}, {"configurable": {"thread_id": "warm-up"}})
    start = time.perf_counter()
    for r in range(runs):
        graph.invoke({"i": 0}, {"configurable": {"thread_id": f"t{r}"}})
    return time.perf_counter() - start


def _chat_graph() -> tuple[Any, Any, Any]:
    """LangGraph's side of the chat: (graph builder, config, talk(graph, turns)). Each turn
    invokes the graph with a 2 KB user message and the model node appends a 2 KB reply."""
    from langgraph.graph import END, START, StateGraph

    def model(state: _Chat) -> dict[str, Any]:
        return {"messages": [{"role": "assistant", "content": message(len(state["messages"]) // 2)}]}

    builder = StateGraph(_Chat)
    builder.add_node("model", model)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    config: Any = {"configurable": {"thread_id": "chat"}}

    def talk(graph: Any, turns: int) -> None:
        for turn in range(turns):
            graph.invoke({"messages": [{"role": "user", "content": message(turn, "user")}]}, config)

    return builder, config, talk


def langgraph_conversation(store: str, turns: int, *, path: str = "", url: str = PG,
                           on_disk: bool = False) -> int:
    """Bytes stored by a LangGraph saver for a ``turns``-turn chat (``on_disk``, PostgreSQL
    only: the schema's size on disk, :func:`pg_schema_disk`, instead of its rows' bytes)."""
    builder, _, talk = _chat_graph()
    if store == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = _sqlite_conn(path, "normal")
        talk(builder.compile(checkpointer=SqliteSaver(conn)), turns)
        conn.commit()
        conn.close()
        return sqlite_bytes(path)[0]
    from langgraph.checkpoint.postgres import PostgresSaver

    schema = f"lg_{uuid.uuid4().hex[:10]}"
    pg_create_schema(url, schema)
    try:
        with PostgresSaver.from_conn_string(pg_schema_url(url, schema)) as saver:
            saver.setup()
            talk(builder.compile(checkpointer=saver), turns)
        return pg_schema_disk(url, schema) if on_disk else pg_schema_bytes(url, schema)
    finally:
        pg_drop_schema(url, schema)


# -- DBOS (in a child process: DBOS is a per-process singleton) -------------------------------


def dbos(command: str, **params: Any) -> dict[str, Any]:
    """Run a DBOS measurement in a child process and return its JSON result."""
    proc = subprocess.run(
        [sys.executable, __file__, command, json.dumps(params)],
        capture_output=True, text=True, timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"DBOS child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def _dbos_launch(params: dict[str, Any]) -> Any:
    import sqlalchemy as sa
    from dbos import DBOS

    config: dict[str, Any] = {"name": "bench", "log_level": "ERROR", "application_version": "bench"}
    if params["store"] == "sqlite":
        path = params["path"]
        # WAL persists in the file; synchronous is per connection, set on every connect.
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
        sync = params.get("sync", "normal")

        def pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.execute(f"PRAGMA synchronous = {sync}")

        sa.event.listen(sa.engine.Engine, "connect", pragmas)
        config["system_database_url"] = f"sqlite:///{path}"
    else:
        config["system_database_url"] = params["url"]
        config["dbos_system_schema"] = params["schema"]
    DBOS(config=config)  # type: ignore[arg-type]
    return DBOS


def _dbos_child(command: str, params: dict[str, Any]) -> dict[str, Any]:
    DBOS = _dbos_launch(params)

    @DBOS.step()
    def noop() -> None:
        return None

    @DBOS.workflow()
    def chain(n: int) -> int:
        for _ in range(n):
            noop()
        return n

    @DBOS.step()
    def call_model(history: list[str]) -> str:
        return message(len(history) // 2)

    @DBOS.workflow()
    def chat(turns: int) -> int:
        history: list[str] = []
        for turn in range(turns):
            history.append(message(turn, "user"))
            history.append(call_model(history))
        return len(history)

    DBOS.launch()
    try:
        if command == "dbos-steps":
            chain(1)
            runs, steps = params["runs"], params["steps"]
            start = time.perf_counter()
            for _ in range(runs):
                chain(steps)
            return {"per_step": (time.perf_counter() - start) / (runs * steps)}
        chat(params["turns"])
        return {}
    finally:
        DBOS.destroy()


def dbos_steps(store: str, runs: int, steps: int, *, path: str = "", sync: str = "normal",
               url: str = PG) -> float:
    """Seconds per DBOS step for ``runs`` workflows of ``steps`` no-op steps."""
    if store == "sqlite":
        return float(dbos("dbos-steps", store=store, path=path, sync=sync, runs=runs, steps=steps)["per_step"])
    schema = f"dbos_{uuid.uuid4().hex[:10]}"
    try:
        return float(dbos("dbos-steps", store=store, url=url, schema=schema, runs=runs, steps=steps)["per_step"])
    finally:
        pg_drop_schema(url, schema)


def dbos_conversation(turns: int, path: str) -> int:
    """Bytes DBOS stores (SQLite system database) for a ``turns``-turn agent loop."""
    dbos("dbos-chat", store="sqlite", path=path, turns=turns)
    return sqlite_bytes(path)[0]


def dbos_conversation_pg_disk(turns: int, url: str = PG) -> int:
    """On-disk size of DBOS's system schema (PostgreSQL) after a ``turns``-turn agent loop."""
    schema = f"dbos_{uuid.uuid4().hex[:10]}"
    try:
        dbos("dbos-chat", store="postgres", url=url, schema=schema, turns=turns)
        return pg_schema_disk(url, schema)
    finally:
        pg_drop_schema(url, schema)


if __name__ == "__main__":
    print(json.dumps(_dbos_child(sys.argv[1], json.loads(sys.argv[2]))), flush=True)
