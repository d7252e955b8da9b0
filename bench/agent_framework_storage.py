"""Agent Framework checkpoint storage: a workflow of N supersteps carrying a growing message list.

One executor appends a 1 KB assistant message to the conversation and sends it to itself, N
times, then yields it; the framework checkpoints at the end of every superstep, each checkpoint
holding the whole conversation (in the message in flight, and in the executor's state). The
same workflow runs on outlast's ``OutlastCheckpointStorage`` (SQLite) and on the framework's
``FileCheckpointStorage`` (one JSON file per checkpoint), in the same run.

Bytes on disk: the SQLite file after ``PRAGMA wal_checkpoint(TRUNCATE)``, less the empty
store's file (schema pages), beside the total size of the checkpoint files. "payload" is what
outlast's rows and blobs hold (the file adds page overhead and indexes).

    python bench/agent_framework_storage.py               # 10, 50, 200 supersteps
    python bench/agent_framework_storage.py --steps 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
from typing import Any

from agent_framework import (
    Executor,
    FileCheckpointStorage,
    Message,
    WorkflowBuilder,
    WorkflowContext,
    handler,
)

from outlast.integrations._rows import reachable
from outlast.integrations.agent_framework import OutlastCheckpointStorage
from outlast.store import open_store

SIZE = 1024


def text(i: int) -> str:
    body = f"message {i:05d} " + "".join(chr(97 + (i * 7 + k) % 26) for k in range(SIZE))
    return body[:SIZE]


class Turn(Executor):
    """Appends one message per superstep, keeps the conversation in its state, loops."""

    def __init__(self, steps: int) -> None:
        super().__init__(id="turn")
        self.steps = steps
        self.history: list[Message] = []

    @handler
    async def step(self, conversation: list[Message],
                   ctx: WorkflowContext[list[Message], list[Message]]) -> None:
        out = [*conversation, Message(role="assistant", contents=[text(len(conversation))])]
        self.history = out
        if len(out) >= self.steps:
            await ctx.yield_output(out)
        else:
            await ctx.send_message(out)

    async def on_checkpoint_save(self) -> dict[str, Any]:
        return {"history": self.history}

    async def on_checkpoint_restore(self, state: dict[str, Any]) -> None:
        self.history = state.get("history", [])


async def run(storage: Any, steps: int) -> int:
    turn = Turn(steps)
    workflow = WorkflowBuilder(name="grow", start_executor=turn, checkpoint_storage=storage,
                               max_iterations=steps + 5).add_edge(turn, turn).build()
    result = await workflow.run([])
    assert len(result.get_outputs()[0]) == steps
    return len(await storage.list_checkpoint_ids(workflow_name="grow"))


def file_size(db: str) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(db)


def outlast_bytes(folder: str, steps: int) -> tuple[int, int, int]:
    """(checkpoints, payload bytes, file bytes less the empty store's)."""
    empty = os.path.join(folder, "empty.db")
    open_store(f"sqlite:///{empty}").close()
    db = os.path.join(folder, f"outlast-{steps}.db")
    with OutlastCheckpointStorage(f"sqlite:///{db}") as storage:
        count = asyncio.run(run(storage, steps))
        rows = storage.store.get_checkpoints("maf:grow")
        blobs = storage.store.get_blobs(reachable([r.checkpoint for r in rows],
                                                  storage.store.get_blobs))
        payload = sum(len(r.checkpoint) for r in rows) + sum(map(len, blobs.values()))
    return count, payload, file_size(db) - file_size(empty)


def file_storage_bytes(folder: str, steps: int) -> tuple[int, int]:
    """(checkpoints, bytes of the checkpoint files)."""
    path = os.path.join(folder, f"files-{steps}")
    storage = FileCheckpointStorage(path)
    count = asyncio.run(run(storage, steps))
    return count, sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def measure(steps: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as folder:
        count, payload, ours = outlast_bytes(folder, steps)
        file_count, files = file_storage_bytes(folder, steps)
    assert count == file_count
    return {"steps": steps, "checkpoints": count, "unique": steps * SIZE, "payload": payload,
            "outlast": ours, "files": files}


def kb(n: int) -> str:
    return f"{n / 1024:,.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="*", default=[10, 50, 200])
    args = parser.parse_args()
    print("| supersteps | unique text | outlast payload | outlast SQLite file | "
          "FileCheckpointStorage |")
    print("|---:|---:|---:|---:|---:|")
    for steps in args.steps:
        r = measure(steps)
        u = r["unique"]
        print(f"| {steps} | {kb(u)} | {kb(r['payload'])} ({r['payload'] / u:.2f}x) | "
              f"{kb(r['outlast'])} ({r['outlast'] / u:.2f}x) | {kb(r['files'])} "
              f"({r['files'] / u:.1f}x) |")


if __name__ == "__main__":
    main()
