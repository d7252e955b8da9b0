"""The checkpoint store: what framework checkpointers (the LangGraph saver, the Agent
Framework storage) keep in outlast's database, beside runs and journals.

A protocol of its own, apart from the journal store's contract (:mod:`outlast.store.base`):
the built-in backends implement both (``SQLiteStore``, ``PostgresStore``). Checkpoints share
the content-addressed blob table with journals, so a conversation repeated in every
checkpoint is stored once. The docstrings are the contract, checked by
``tests/test_store_contract.py`` on every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "CheckpointStore",
    "Reachable",
    "SavedCheckpoint",
    "SavedWrite",
    "checkpoint_owner",
    "checkpoint_store",
]


@dataclass(frozen=True, slots=True)
class SavedCheckpoint:
    """A checkpoint kept for a framework's checkpointer (the LangGraph saver), as stored.

    Keyed by ``(thread_id, ns, checkpoint_id)``; ids sort in creation order within a thread.
    ``checkpoint`` and ``metadata`` are the saver's bytes. ``run_id`` is the framework's run
    id (to delete one run's checkpoints), not an outlast run.
    """

    thread_id: str
    ns: str
    checkpoint_id: str
    parent_id: str | None
    run_id: str | None
    checkpoint: bytes
    metadata: bytes


@dataclass(frozen=True, slots=True)
class SavedWrite:
    """A pending write of a checkpointer task, kept under its checkpoint. Unique per
    ``(thread_id, ns, checkpoint_id, task_id, idx)``."""

    thread_id: str
    ns: str
    checkpoint_id: str
    task_id: str
    idx: int
    channel: str
    value: bytes
    task_path: str = ""


#: ``reachable(payloads, fetch)``: every blob hash the payloads use, reading blobs with
#: ``fetch(hashes) -> {hash: bytes}`` (see :meth:`Store.delete_checkpoints`).
Reachable = Callable[[list[bytes], Callable[[list[str]], Mapping[str, bytes]]], Iterable[str]]


def checkpoint_owner(thread_id: str) -> str:
    """The ``blob_refs`` owner key of a checkpointer thread's blobs."""
    return "lg:" + thread_id


class CheckpointStore(abc.ABC):
    """Framework checkpoints and their pending writes, keyed by thread."""

    # Blobs a thread's rows use are referenced under the owner key checkpoint_owner(thread_id),
    # so prune() never frees them, and delete_checkpoints() frees those no row uses any more.

    @abc.abstractmethod
    def put_checkpoint(self, checkpoint: SavedCheckpoint, blobs: Mapping[str, bytes]) -> None:
        """Store ``checkpoint`` (replacing one with the same key) and ``blobs`` (hash ->
        bytes, each stored once), referenced from its thread, in one transaction.
        ``blobs`` must hold every blob the checkpoint's bytes use."""

    @abc.abstractmethod
    def put_writes(self, writes: Sequence[SavedWrite], blobs: Mapping[str, bytes]) -> None:
        """Store ``writes`` and ``blobs`` as :meth:`put_checkpoint` does, in one transaction.
        A write whose key exists replaces it when its ``idx`` is negative (special writes:
        errors, interrupts) and is ignored otherwise (a retried task's first writes win)."""

    @abc.abstractmethod
    def get_checkpoints(
        self,
        thread_id: str | None,
        *,
        ns: str | None = None,
        checkpoint_id: str | None = None,
        before: str | None = None,
        limit: int | None = None,
    ) -> list[SavedCheckpoint]:
        """Checkpoints of ``thread_id`` (every thread: None), newest id first, optionally of
        one namespace, one id, or ids lower than ``before``; at most ``limit``."""

    @abc.abstractmethod
    def get_writes(self, thread_id: str, ns: str, checkpoint_ids: Sequence[str]) -> list[SavedWrite]:
        """The writes of those checkpoints, by checkpoint id, then ``(task_path, task_id, idx)``."""

    @abc.abstractmethod
    def delete_checkpoints(
        self,
        *,
        thread_id: str | None = None,
        run_ids: Sequence[str] | None = None,
        keep: int = 0,
        reachable: Reachable | None = None,
    ) -> int:
        """Delete checkpoints with their writes and free their blobs, in one transaction.

        Selected: checkpoints of ``thread_id`` (every thread: None) whose ``run_id`` is in
        ``run_ids`` (any: None), except the ``keep`` newest of each (thread, namespace). Then,
        for each thread that lost checkpoints, blob references its remaining checkpoints and
        writes do not use are dropped: ``reachable(payloads, fetch)`` names those used (all
        references of a thread with nothing left are dropped; without ``reachable`` none are),
        ``fetch`` reading inside the transaction. Last, blobs nobody references are deleted.
        Concurrent ``put_*`` of the same thread cannot lose a blob. Returns the number of
        checkpoints deleted."""

    @abc.abstractmethod
    def find_checkpoints(
        self, *, run_id: str | None = None, thread_prefix: str = "", before: str | None = None
    ) -> list[SavedCheckpoint]:
        """Framework checkpoints of every thread whose id starts with ``thread_prefix``,
        newest id first: only those whose ``run_id`` is ``run_id`` (an indexed lookup), or
        whose id is lower than ``before``. For a checkpointer that names checkpoints by an id
        of its own (the Agent Framework storage keeps it in ``run_id``) and prunes by age."""


def checkpoint_store(store: Any) -> CheckpointStore:
    """``store`` as a checkpoint store, or a ConfigurationError naming what is missing."""
    # an encrypted store (store/sealed.py) keeps checkpoints in its backend, which it gave
    # its keys: the backend seals blobs and rows (store/checkpoint_seal.py)
    store = getattr(store, "inner", store)
    if not isinstance(store, CheckpointStore):
        raise ConfigurationError(
            f"store {getattr(store, 'url', store)!r} ({type(store).__name__}) keeps no framework "
            "checkpoints: use a built-in store (sqlite:/// or postgresql://)"
        )
    return store
