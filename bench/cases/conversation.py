"""Case 2: bytes stored for an agent loop resending its growing history of 2 KB messages.

outlast: ``bench/conversation_storage.py`` (issue 6): a workflow calling a model through
``outlast.llm.wrap`` against the local fake OpenAI server, user and reply messages of 2 KB.
Peers (``bench/peers.py``): LangGraph with a messages reducer, one invoke per turn (SQLite and
PostgreSQL savers); DBOS with one step per model call taking the history (SQLite).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from . import bench_module, result, unavailable

NAME = "conversation"
TITLE = "Conversation storage"
SIZES = {"tiny": [3], "quick": [10, 50], "full": [10, 50, 200]}
MESSAGE = 2048


def run(size: str = "full") -> dict[str, Any]:
    """Stored bytes per competitor and turn count, and their ratio to the unique payload."""
    cs = bench_module("conversation_storage")
    if isinstance(cs, str):
        return unavailable(NAME, TITLE, cs)
    import peers

    from outlast.testing import FakeLLMServer

    competitors: dict[str, Any] = {
        "outlast (SQLite)": None,
        "LangGraph SqliteSaver": peers.missing("langgraph.checkpoint.sqlite")
        or (lambda tmp, n: peers.langgraph_conversation("sqlite", n, path=f"{tmp}/lg-{n}.db")),
        "LangGraph PostgresSaver": peers.missing("langgraph.checkpoint.postgres")
        or (lambda tmp, n: peers.langgraph_conversation("postgres", n)),
        "DBOS (SQLite)": peers.missing("dbos")
        or (lambda tmp, n: peers.dbos_conversation(n, f"{tmp}/dbos-{n}.sqlite")),
    }
    rows, series = [], {}
    out = result(NAME, TITLE, settings=(
        "each turn adds a 2 KB user message and a 2 KB model reply; unique payload = turns x 2 x "
        "2,048 bytes. Bytes are every text/blob column of every table (SQLite) or the size of "
        "every row (PostgreSQL, pg_column_size: after TOAST compression, so peers' messages are "
        "pseudo-random letters, not a repeated character). outlast's figure is its journal "
        "outputs, metadata and blobs (bench/conversation_storage.py). DBOS stores step outputs "
        "(the replies) but not step inputs, so its history is rebuilt by re-running the code."))
    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer(reply_tokens=MESSAGE // 4) as server:
        for n in SIZES[size]:
            unique = n * 2 * MESSAGE
            row: list[Any] = [n, f"{unique:,}"]
            for name, fn in competitors.items():
                if isinstance(fn, str):
                    row.append(fn)
                    continue
                if fn is None:
                    stored = cs.outlast_bytes(Path(tmp), n, server)[1]
                else:
                    try:
                        stored = fn(tmp, n)
                    except Exception as exc:  # the peer's failure, reported in its cell
                        competitors[name] = peers.failed(name, exc)
                        row.append(competitors[name])
                        continue
                row.append(f"{stored:,} ({stored / unique:.2f}x)")
                series.setdefault(name, []).append([n, stored / unique])
                out["headline"][f"{name} x payload at {n} turns"] = round(stored / unique, 2)
            rows.append(row)
    out["tables"].append({"title": "Bytes stored (x unique payload)",
                          "columns": ["turns", "unique payload", *competitors], "rows": rows})
    out["plots"].append({"file": "conversation_storage.png", "title": "Stored bytes / unique payload",
                         "kind": "lines", "xlabel": "turns", "ylabel": "x unique payload (log)",
                         "log": True, "series": series})
    return out
