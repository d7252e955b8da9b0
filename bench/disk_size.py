"""On-disk size of outlast's database beside the payload it holds, on SQLite and PostgreSQL.

Two workloads, each with 2 KB messages of two kinds of text:

- ``conversation``: N turns through ``outlast.llm.wrap`` (the real openai SDK against the
  local FakeLLMServer): each turn appends a 2 KB user message, sends the whole history and
  appends the model's 2 KB reply.
- ``graph``: an ``app.graph`` of N nodes, each appending one 2 KB message to the state.

Text kinds: ``random`` (random letters and digits: about 6 bits a character, so zlib saves
~20%, the hard case) and ``english`` (English-like words, as model text: compresses 3-4x).

The payload is the unique text: each message once, as JSON. The size is what a user sees:
the SQLite file after ``PRAGMA wal_checkpoint(TRUNCATE)`` (WAL folded in, truncated), and on
PostgreSQL ``pg_total_relation_size`` summed over outlast's tables (heap, TOAST, indexes) after
``VACUUM``, of a schema holding this one run only.

    python bench/disk_size.py                     # conversation 60 turns, graph 100 nodes
    python bench/disk_size.py --turns 10 50 200   # the table in docs/benchmarks.md
    python bench/disk_size.py --sqlite-only
    python bench/disk_size.py --turns 10 50 200 --peers   # + LangGraph SqliteSaver, DBOS

``--peers``: the same conversation (a 2 KB user message and a 2 KB reply per turn, pseudo-random
letters: bench/peers.py) through LangGraph's SqliteSaver and DBOS (SQLite system database),
their file after the same checkpoint, and (unless ``--sqlite-only``) LangGraph's
PostgresSaver and DBOS on PostgreSQL, their schema measured as ours, beside the same unique
payload (turns x 2 x 2,048). Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import outlast

MESSAGE = 2048
PG = os.environ.get("OUTLAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_WORDS = ["the", "of", "and", "to", "in", "is", "that", "it", "was", "for", "on", "are", "as", "with", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call", "first", "who", "may", "down", "side", "been", "now", "find", "any", "new", "work", "part", "take", "get", "place", "made", "live", "where", "after", "back", "little", "only", "round", "man", "year", "came", "show", "every", "good", "me", "give", "our", "under", "name", "very", "through", "just", "form", "sentence", "great", "think", "say", "help", "low", "line", "differ", "turn", "cause", "much", "mean", "before", "move", "right", "boy", "old", "too", "same", "tell", "does", "set", "three", "want", "air", "well", "also", "play", "small", "end", "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land", "here", "must", "big", "high", "such", "follow", "act", "why", "ask", "men", "change", "went", "light", "kind", "off", "need", "house", "picture", "try", "us", "again", "animal", "point", "mother", "world", "near", "build", "self", "earth", "father"]


def text(kind: str, seed: int) -> str:
    rng = random.Random(seed)
    if kind == "random":
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        return "".join(rng.choices(alphabet, k=MESSAGE))
    out: list[str] = []
    size = 0
    while size < MESSAGE:
        word = rng.choice(_WORDS[: rng.choice((20, 60, len(_WORDS)))])
        out.append(word + (". " if rng.random() < 0.08 else " "))
        size += len(out[-1])
    return "".join(out)[:MESSAGE]


def conversation(app: outlast.App, turns: int, kind: str) -> Callable[[], int]:
    import openai

    import outlast.llm
    from outlast.testing import FakeLLMServer

    server = FakeLLMServer(
        lambda req: text(kind, 10_000 + len(req.body["messages"])), keep_bodies=False
    )
    server.__enter__()
    llm = outlast.llm.wrap(
        openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
    )

    @app.workflow(name="talk")
    def talk(ctx: outlast.Context, n: int) -> int:
        messages: list[Any] = []
        for turn in range(n):
            messages.append({"role": "user", "content": text(kind, turn)})
            reply = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
            messages.append(reply.choices[0].message)
        return sum(
            len(json.dumps(m if isinstance(m, dict) else m.model_dump(exclude_unset=True)))
            for m in messages
        )

    def go() -> int:
        try:
            return int(app.run(talk, turns, run_id="talk"))
        finally:
            server.__exit__(None, None, None)

    return go


def graph(app: outlast.App, nodes: int, kind: str) -> Callable[[], int]:
    g = app.graph("chat", reducers={"messages": outlast.append})

    @g.node
    def talk(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": {"role": "assistant", "content": text(kind, len(state["messages"]))}}

    g.edge(outlast.START, "talk")
    g.route("talk", lambda s: outlast.END if len(s["messages"]) >= nodes else "talk")

    def go() -> int:
        out = app.run(g, {"messages": []}, run_id="graph")
        return sum(len(json.dumps(m)) for m in out["messages"])

    return go


def sqlite_size(path: str) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return os.path.getsize(path) + (
        os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    )


def pg_size(url: str, schema: str) -> int:
    """The schema's relations after VACUUM (:func:`peers.pg_schema_disk`, as for the peers)."""
    import peers

    return peers.pg_schema_disk(url, schema)


def measure(
    backend: str, workload: str, n: int, kind: str, folder: str, **app_options: Any
) -> tuple[int, int]:
    """(unique payload bytes, bytes on disk) for one run on a fresh database."""
    if backend == "sqlite":
        path = os.path.join(folder, f"{workload}-{n}-{kind}-{uuid.uuid4().hex[:6]}.db")
        url = f"sqlite:///{path}" + os.environ.get("DISK_SIZE_SQLITE_OPTIONS", "")
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        url = f"{PG}?schema={schema}"
    app = outlast.App(url, **app_options)
    make = conversation if workload == "conversation" else graph
    try:
        payload = make(app, n, kind)()
    finally:
        app.close()
    if backend == "sqlite":
        return payload, sqlite_size(path)
    try:
        return payload, pg_size(PG, schema)
    finally:
        import psycopg

        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--turns",
        type=int,
        nargs="*",
        default=None,
        help="conversation turns = graph nodes (default: 60 turns, 100 nodes)",
    )
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--kinds", nargs="*", default=["random", "english"])
    parser.add_argument("--peers", action="store_true",
                        help="also LangGraph SqliteSaver and DBOS, conversation, SQLite file")
    parser.add_argument("--workloads", nargs="*", default=["conversation", "graph"])
    args = parser.parse_args()
    backends = ["sqlite"] if args.sqlite_only else ["sqlite", "postgres"]
    plan = (
        [(w, n) for w in args.workloads for n in args.turns]
        if args.turns
        else [("conversation", 60), ("graph", 100)]
    )
    print(
        f"{'workload':<13} {'n':>4} {'text':<8} {'backend':<9} {'payload':>9} {'on disk':>10} "
        f"{'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for workload, n in plan:
            for kind in args.kinds:
                for backend in backends:
                    payload, disk = measure(backend, workload, n, kind, folder)
                    print(
                        f"{workload:<13} {n:>4} {kind:<8} {backend:<9} {payload:>9,} "
                        f"{disk:>10,} {disk / payload:>6.2f}",
                        flush=True,
                    )
        if args.peers:
            for n in args.turns or [60]:
                for name, backend, size in peer_sizes(n, folder, postgres=not args.sqlite_only):
                    payload = n * 2 * MESSAGE
                    print(
                        f"{'peer ' + name:<13} {n:>4} {'random':<8} {backend:<9} {payload:>9,} "
                        + (f"{size:>10,} {size / payload:>6.2f}" if size else "  not available"),
                        flush=True,
                    )


def peer_sizes(
    turns: int, folder: str, postgres: bool = True
) -> list[tuple[str, str, int | None]]:
    """(peer, backend, bytes on disk) for the chat: LangGraph's SqliteSaver and DBOS on SQLite
    (the file after a WAL checkpoint), and with ``postgres`` LangGraph's PostgresSaver and DBOS
    on PostgreSQL (their schema's relations after VACUUM, as :func:`pg_size` measures ours)."""
    import peers

    out: list[tuple[str, str, int | None]] = []
    runs: list[tuple[str, str, Callable[[str], int]]] = [
        ("langgraph", "sqlite", lambda p: _file(p, peers.langgraph_conversation("sqlite", turns, path=p))),
        ("dbos", "sqlite", lambda p: _file(p, peers.dbos_conversation(turns, p))),
    ]
    if postgres:
        runs += [
            ("langgraph", "postgres", lambda p: peers.langgraph_conversation("postgres", turns, url=PG, on_disk=True)),
            ("dbos", "postgres", lambda p: peers.dbos_conversation_pg_disk(turns, PG)),
        ]
    for name, backend, run in runs:
        path = os.path.join(folder, f"{name}-{turns}-{uuid.uuid4().hex[:6]}.db")
        try:
            out.append((name, backend, run(path)))
        except Exception as exc:  # a peer missing or failing is reported, not fatal
            print(f"  {name} ({backend}): {peers.failed(name, exc)}", flush=True)
            out.append((name, backend, None))
    return out


def _file(path: str, _rows: int) -> int:
    return sqlite_size(path)


if __name__ == "__main__":
    main()
