"""OutlastCheckpointStorage, the Agent Framework CheckpointStorage on outlast's store: the
protocol's semantics (checked beside the framework's own InMemoryCheckpointStorage, which
defines them), round trips of the framework's types and the user's, a clear error at save for
a value outlast cannot store, linear storage of a growing conversation, and retention.
SQLite and PostgreSQL. (The framework's test suite is not shipped in its packages, so it
cannot be pointed at this storage: these tests stand in for it.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agent_framework")

import pydantic  # noqa: E402
from agent_framework import (  # noqa: E402
    InMemoryCheckpointStorage,
    Message,
    WorkflowCheckpoint,
    WorkflowCheckpointException,
    WorkflowEvent,
)
from agent_framework._workflows._runner_context import WorkflowMessage  # noqa: E402

from outlast.integrations._rows import reachable  # noqa: E402
from outlast.integrations.agent_framework import OutlastCheckpointStorage  # noqa: E402
from outlast.store import Store, open_store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Ticket:
    """A user dataclass in executor state and in a pending request."""

    title: str
    tags: tuple[str, ...] = ()


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Plan(pydantic.BaseModel):
    steps: list[str]
    due: datetime


class Opaque:
    """Neither a dataclass, a pydantic model nor a framework type: outlast cannot store it."""


@pytest.fixture(params=["outlast", "memory"])
def storage(request: pytest.FixtureRequest, store_url: str) -> Iterator[Any]:
    """Ours on both stores, and the framework's in-memory storage: the reference."""
    if request.param == "memory":
        yield InMemoryCheckpointStorage()
        return
    with OutlastCheckpointStorage(store_url) as ours:
        yield ours


@pytest.fixture
def ours(store_url: str) -> Iterator[OutlastCheckpointStorage]:
    with OutlastCheckpointStorage(store_url) as storage:
        yield storage


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def at(seconds: float) -> str:
    return (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).isoformat()


def checkpoint(name: str = "wf", *, ts: float = 0, cid: str | None = None,
               history: int = 2, **fields: Any) -> WorkflowCheckpoint:
    messages = [Message(role="user" if i % 2 == 0 else "assistant", contents=[f"turn {i}"])
                for i in range(history)]
    extra = {"checkpoint_id": cid} if cid else {}
    return WorkflowCheckpoint(
        workflow_name=name, graph_signature_hash="sig", timestamp=at(ts), **extra,
        messages={"a": [WorkflowMessage(data=messages, source_id="a", target_id="b")]},
        state={"_executor_state": {"a": {"n": 1}}}, **fields)


def texts(cp: WorkflowCheckpoint) -> list[str]:
    return [m.text for m in cp.messages["a"][0].data]


# -- the protocol (ours and the reference alike) -----------------------------------------------


def test_save_and_load_are_copies(storage: Any) -> None:
    cp = checkpoint()
    assert run(storage.save(cp)) == cp.checkpoint_id
    cp.state["_executor_state"]["a"]["n"] = 99  # changed after saving: not in the store
    cp.messages["a"][0].data.append(Message(role="user", contents=["late"]))
    first = run(storage.load(cp.checkpoint_id))
    assert first is not cp
    assert first.state["_executor_state"]["a"] == {"n": 1}
    assert texts(first) == ["turn 0", "turn 1"]
    first.state["_executor_state"]["a"]["n"] = 7  # changing a loaded copy changes no other
    assert (run(storage.load(cp.checkpoint_id))).state["_executor_state"]["a"] == {"n": 1}


def test_unknown_id_raises_and_delete_reports_what_it_did(storage: Any) -> None:
    with pytest.raises(WorkflowCheckpointException, match="No checkpoint found with ID nope"):
        run(storage.load("nope"))
    cp = checkpoint()
    run(storage.save(cp))
    assert run(storage.delete(cp.checkpoint_id)) is True
    assert run(storage.delete(cp.checkpoint_id)) is False
    assert run(storage.delete("nope")) is False
    with pytest.raises(WorkflowCheckpointException):
        run(storage.load(cp.checkpoint_id))
    assert run(storage.get_latest(workflow_name="wf")) is None


def test_latest_is_by_timestamp_per_workflow_name(storage: Any) -> None:
    for ts, cid in ((5, "b"), (9, "c"), (1, "a")):  # saved out of time order
        run(storage.save(checkpoint(ts=ts, cid=cid)))
    run(storage.save(checkpoint("other", ts=100, cid="z")))
    latest = run(storage.get_latest(workflow_name="wf"))
    assert latest is not None and latest.checkpoint_id == "c"
    assert sorted(run(storage.list_checkpoint_ids(workflow_name="wf"))) == ["a", "b", "c"]
    assert sorted(c.checkpoint_id for c in run(storage.list_checkpoints(workflow_name="wf"))) == [
        "a", "b", "c"]
    assert run(storage.list_checkpoint_ids(workflow_name="missing")) == []
    assert run(storage.get_latest(workflow_name="missing")) is None


def test_saving_an_id_again_replaces_it(storage: Any) -> None:
    run(storage.save(checkpoint(ts=1, cid="x", history=1)))
    run(storage.save(checkpoint(ts=2, cid="y")))
    run(storage.save(checkpoint(ts=3, cid="x", history=3)))  # same id, later time, more turns
    assert sorted(run(storage.list_checkpoint_ids(workflow_name="wf"))) == ["x", "y"]
    latest = run(storage.get_latest(workflow_name="wf"))
    assert latest is not None and latest.checkpoint_id == "x" and len(texts(latest)) == 3


# -- values -------------------------------------------------------------------------------------


def test_framework_and_user_types_round_trip(ours: OutlastCheckpointStorage) -> None:
    due = datetime(2026, 5, 1, 12, tzinfo=UTC)
    request = WorkflowEvent.request_info("req-1", "reviewer", Ticket("refund", ("billing",)), str)
    cp = checkpoint(
        pending_request_info_events={"req-1": request},
        metadata={"superstep": 3},
        iteration_count=3,
    )
    cp.state["user"] = {
        "ticket": Ticket("t", ("a", "b")), "priority": Priority.HIGH,
        "plan": Plan(steps=["x", "y"], due=due), "ids": {1, 2}, "by_int": {1: "one"},
        "__maf": "a user key that is our tag", "when": due, "blob": b"\x00\x01",
    }
    run(ours.save(cp))
    back = run(ours.load(cp.checkpoint_id))
    assert back.state == cp.state
    assert [m.to_dict() for m in back.messages["a"][0].data] == [
        m.to_dict() for m in cp.messages["a"][0].data]
    assert type(back.messages["a"][0]) is WorkflowMessage
    event = back.pending_request_info_events["req-1"]
    assert type(event) is WorkflowEvent and event.type == "request_info"
    assert (event.request_id, event.source_executor_id) == ("req-1", "reviewer")
    assert event.data == Ticket("refund", ("billing",))
    assert (event.request_type, event.response_type) == (Ticket, str)
    assert (back.metadata, back.iteration_count, back.timestamp) == (
        {"superstep": 3}, 3, cp.timestamp)


def test_a_value_outlast_cannot_store_fails_at_save_naming_it(
    ours: OutlastCheckpointStorage,
) -> None:
    cp = checkpoint()
    cp.state["_executor_state"]["a"]["handle"] = Opaque()
    with pytest.raises(WorkflowCheckpointException) as info:
        run(ours.save(cp))
    text = str(info.value)
    assert cp.checkpoint_id in text and "'wf'" in text
    assert "test_agent_framework_storage.Opaque" in text and "['handle']" in text
    assert run(ours.list_checkpoint_ids(workflow_name="wf")) == []  # nothing written


def test_a_bad_timestamp_fails_at_save(ours: OutlastCheckpointStorage) -> None:
    cp = checkpoint()
    cp.timestamp = "yesterday"
    with pytest.raises(WorkflowCheckpointException, match="'yesterday' is not an ISO 8601"):
        run(ours.save(cp))


# -- many processes, linear storage, retention ---------------------------------------------------


def test_two_storages_on_one_store_share_checkpoints(store_url: str) -> None:
    with OutlastCheckpointStorage(store_url) as a, OutlastCheckpointStorage(store_url) as b:
        async def save_all() -> None:
            await asyncio.gather(*(s.save(checkpoint(ts=i, cid=f"c{i}"))
                                   for i, s in enumerate([a, b] * 10)))

        run(save_all())
        assert sorted(run(b.list_checkpoint_ids(workflow_name="wf"))) == sorted(
            f"c{i}" for i in range(20))
        latest = run(a.get_latest(workflow_name="wf"))
        assert latest is not None and latest.checkpoint_id == "c19"
        assert run(b.delete("c3")) and not run(a.delete("c3"))


def stored_bytes(store: Store, workflow: str) -> int:
    rows = store.get_checkpoints("maf:" + workflow)
    blobs = store.get_blobs(reachable([r.checkpoint for r in rows], store.get_blobs))
    return sum(len(r.checkpoint) for r in rows) + sum(map(len, blobs.values()))


def growing(steps: int, size: int) -> Iterator[WorkflowCheckpoint]:
    """One checkpoint per superstep, each carrying the whole conversation so far."""
    history: list[Message] = []
    for i in range(steps):
        history = [*history, Message(role="assistant", contents=[f"{i:04d} " + "x" * size])]
        yield WorkflowCheckpoint(
            workflow_name="grow", graph_signature_hash="sig", timestamp=at(i),
            messages={"a": [WorkflowMessage(data=history, source_id="a", target_id="a")]},
            state={"_executor_state": {"a": {"history": history}}}, iteration_count=i)


def test_a_growing_conversation_is_stored_once(ours: OutlastCheckpointStorage) -> None:
    steps, size = 50, 1024
    for cp in growing(steps, size):
        run(ours.save(cp))
    unique = steps * size
    # every message once, plus a rewritten tail chunk per superstep (2.1x measured, see
    # docs/agent-framework.md); one full copy per checkpoint would be 25x
    assert stored_bytes(ours.store, "grow") <= 2.5 * unique, stored_bytes(ours.store, "grow")
    middle = run(ours.load(run(ours.list_checkpoint_ids(workflow_name="grow"))[24]))
    assert len(middle.state["_executor_state"]["a"]["history"]) == 25


def test_prune_by_age_by_workflow_and_keep(ours: OutlastCheckpointStorage) -> None:
    for cp in growing(10, 2048):
        run(ours.save(cp))
    for i in range(3):
        run(ours.save(checkpoint("other", ts=i, cid=f"o{i}")))
    before = stored_bytes(ours.store, "grow")
    cutoff = datetime.fromisoformat(at(5)).timestamp()  # checkpoints 0-4 of each are older
    assert ours.prune(older_than=cutoff, workflow_name="grow") == 5
    assert len(run(ours.list_checkpoint_ids(workflow_name="grow"))) == 5
    assert stored_bytes(ours.store, "grow") < before  # their unshared blobs went too
    oldest = (run(ours.list_checkpoints(workflow_name="grow")))[0]
    assert len(oldest.state["_executor_state"]["a"]["history"]) == 6  # the rest still reads
    assert ours.prune(older_than=time.time(), keep=1) == 4 + 2  # every workflow, newest kept
    assert run(ours.list_checkpoint_ids(workflow_name="other")) == ["o2"]
    assert ours.prune(workflow_name="grow") == 1
    assert stored_bytes(ours.store, "grow") == 0


def test_core_prune_and_another_framework_leave_them_alone(store_url: str) -> None:
    store = open_store(store_url)
    try:
        storage = OutlastCheckpointStorage(store)
        for cp in growing(3, 2048):
            run(storage.save(cp))
        store.prune(time.time() + 3600)
        assert len(run(storage.list_checkpoints(workflow_name="grow"))) == 3
    finally:
        store.close()


def test_outlast_prune_clears_old_checkpoints_but_each_workflows_newest(store_url: str) -> None:
    with OutlastCheckpointStorage(store_url) as storage:
        for cp in growing(3, 2048):  # timestamps in January 2026
            run(storage.save(cp))
        run(storage.save(checkpoint("other", ts=0, cid="o0")))
        fresh = checkpoint("other", cid="o1")
        fresh.timestamp = datetime.now(UTC).isoformat()
        run(storage.save(fresh))
        done = subprocess.run(
            [sys.executable, "-m", "outlast.cli", "prune", "--older-than", "1d", "--db", store_url],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["pruned 0 run(s)", "pruned 3 agent-framework checkpoint(s)"]
        assert len(run(storage.list_checkpoint_ids(workflow_name="grow"))) == 1
        assert run(storage.list_checkpoint_ids(workflow_name="other")) == ["o1"]


def test_the_storage_benchmark_runs_at_a_tiny_size() -> None:
    done = subprocess.run([sys.executable, "bench/agent_framework_storage.py", "--steps", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    row = done.stdout.splitlines()[-1].split("|")
    assert row[1].strip() == "3" and all(cell.strip() for cell in row[2:6])
