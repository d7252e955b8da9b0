"""Microsoft Agent Framework checkpoint storage on outlast's store, with linear storage.

::

    from agent_framework import WorkflowBuilder
    from outlast.integrations.agent_framework import OutlastCheckpointStorage

    storage = OutlastCheckpointStorage("sqlite:///agent.db")   # or postgresql://..., or an App
    workflow = WorkflowBuilder(name="report", start_executor=plan,
                               checkpoint_storage=storage).add_chain([plan, write]).build()
    latest = await storage.get_latest(workflow_name="report")
    await workflow.run(checkpoint_id=latest.checkpoint_id)          # resume after a crash

:class:`OutlastCheckpointStorage` implements the framework's ``CheckpointStorage`` protocol
(``save``, ``load``, ``list_checkpoints``, ``list_checkpoint_ids``, ``get_latest``,
``delete``) with the semantics of its in-memory storage: copies in and out,
``WorkflowCheckpointException`` for an unknown id, ``delete`` returning False for a missing
id, latest by timestamp per workflow name. Every write is one store transaction, so any
number of processes and workers can share the store (SQLite file or PostgreSQL).

Values go through :mod:`outlast.serde` (no pickle): the framework's own objects (messages,
contents, sessions, pending requests) and the user's dataclasses, pydantic models, enums and
datetimes round-trip; anything else fails at ``save`` with a ``WorkflowCheckpointException``
naming the checkpoint, where the value sits and its type. Large values are content-addressed
blobs, so a conversation that grows superstep by superstep is stored once, not once per
checkpoint. Needs ``pip install 'outlast[agent-framework]'``. See docs/agent-framework.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from agent_framework import WorkflowCheckpoint, WorkflowCheckpointException

from .. import serde
from ..store import Store, open_store
from ..store.checkpoints import SavedCheckpoint, checkpoint_store
from ._maf_codec import from_stored, to_stored
from ._maf_rows import THREAD_PREFIX, prune_checkpoints, row_key, thread_of
from ._rows import pack_row, reachable, unpack_row

if TYPE_CHECKING:
    from ..app import App

__all__ = ["OutlastCheckpointStorage"]

T = TypeVar("T")


class OutlastCheckpointStorage:
    """Agent Framework ``CheckpointStorage`` on an outlast store (SQLite or PostgreSQL).

    ``store``: a store URL (opened here; :meth:`close` closes it), an :class:`outlast.App`
    (its store, left open) or a :class:`~outlast.store.Store`. The async methods run the
    store's calls in a worker thread; encoding happens before, on the caller's thread, so the
    saved copy is the checkpoint as it was when ``save`` was called.
    """

    def __init__(self, store: str | App | Store) -> None:
        self._owned = isinstance(store, str)
        if isinstance(store, str):
            self.store: Store = open_store(store)
        elif isinstance(store, Store):
            self.store = store
        else:
            self.store = store.store
        #: the same store, as a checkpoint store (its own protocol, store/checkpoints.py)
        self.checkpoints = checkpoint_store(self.store)

    def close(self) -> None:
        """Close the store if this storage opened it from a URL."""
        if self._owned:
            self.store.close()

    def __enter__(self) -> OutlastCheckpointStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the CheckpointStorage protocol ---------------------------------------------------

    async def save(self, checkpoint: WorkflowCheckpoint) -> str:
        """Store a copy of ``checkpoint`` (replacing one with the same id); return its id.

        Raises WorkflowCheckpointException, before anything is written, for a value outlast
        cannot store or a timestamp that is not ISO 8601."""
        row, blobs = self._encode(checkpoint)
        await self._call(self._save, row, blobs)
        return checkpoint.checkpoint_id

    async def load(self, checkpoint_id: str) -> WorkflowCheckpoint:
        """A copy of the checkpoint ``checkpoint_id``; WorkflowCheckpointException if none."""
        row = await self._call(self._find, checkpoint_id)
        if row is None:
            raise WorkflowCheckpointException(f"No checkpoint found with ID {checkpoint_id}")
        return await self._call(self._decode, row)

    async def list_checkpoints(self, *, workflow_name: str) -> list[WorkflowCheckpoint]:
        """Copies of the workflow's checkpoints, oldest first."""
        rows = await self._call(self.checkpoints.get_checkpoints, thread_of(workflow_name))
        return await self._call(lambda: [self._decode(r) for r in reversed(rows)])

    async def list_checkpoint_ids(self, *, workflow_name: str) -> list[str]:
        """The workflow's checkpoint ids, oldest first (nothing is decoded)."""
        rows = await self._call(self.checkpoints.get_checkpoints, thread_of(workflow_name))
        return [r.run_id for r in reversed(rows) if r.run_id is not None]

    async def get_latest(self, *, workflow_name: str) -> WorkflowCheckpoint | None:
        """A copy of the workflow's checkpoint with the latest timestamp, or None."""
        rows = await self._call(self.checkpoints.get_checkpoints, thread_of(workflow_name), limit=1)
        return await self._call(self._decode, rows[0]) if rows else None

    async def delete(self, checkpoint_id: str) -> bool:
        """Delete the checkpoint and free the blobs no other checkpoint of its workflow uses;
        False if there was none."""
        return await self._call(self._delete, checkpoint_id)

    # -- retention ------------------------------------------------------------------------

    def prune(self, *, older_than: float | None = None, workflow_name: str | None = None,
              keep: int = 0) -> int:
        """Delete the checkpoints of ``workflow_name`` (every workflow: None) whose timestamp
        is before ``older_than`` (seconds since the epoch; None: any age), except the ``keep``
        newest of each workflow, and free their unused blobs. Returns the number deleted.
        ``outlast prune --older-than AGE`` does this for every workflow with ``keep=1``."""
        return prune_checkpoints(self.checkpoints, older_than=older_than,
                                 workflow_name=workflow_name, keep=keep)

    # -- sync work, in a worker thread ----------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _find(self, checkpoint_id: str) -> SavedCheckpoint | None:
        rows = self.checkpoints.find_checkpoints(run_id=checkpoint_id, thread_prefix=THREAD_PREFIX)
        return rows[0] if rows else None

    def _save(self, row: SavedCheckpoint, blobs: dict[str, bytes]) -> None:
        old = self._find(str(row.run_id))
        if old is not None and (old.thread_id, old.checkpoint_id) != (row.thread_id, row.checkpoint_id):
            # the same id saved again under another workflow name or timestamp: its row moves
            self.checkpoints.delete_checkpoints(thread_id=old.thread_id, run_ids=[str(row.run_id)],
                                          reachable=reachable)
        self.checkpoints.put_checkpoint(row, blobs)

    def _delete(self, checkpoint_id: str) -> bool:
        row = self._find(checkpoint_id)
        if row is None:
            return False
        return self.checkpoints.delete_checkpoints(thread_id=row.thread_id, run_ids=[checkpoint_id],
                                             reachable=reachable) > 0

    # -- encoding -------------------------------------------------------------------------

    def _encode(self, checkpoint: WorkflowCheckpoint) -> tuple[SavedCheckpoint, dict[str, bytes]]:
        cid, name = checkpoint.checkpoint_id, checkpoint.workflow_name
        what = f"checkpoint {cid} of workflow {name!r}"
        try:
            key = row_key(checkpoint.timestamp, cid)
        except (TypeError, ValueError) as exc:
            raise WorkflowCheckpointException(
                f"cannot save {what}: its timestamp {checkpoint.timestamp!r} is not an ISO 8601 "
                f"time ({exc})") from None
        blobs: dict[str, bytes] = {}
        try:
            # field by field, so the row keeps its small fields (deflated) and only large
            # values become blobs: the checkpoint as one value would be one blob of its own
            data = ("{" + ",".join(
                f"{json.dumps(f.name)}:"
                + serde.dumps(to_stored(getattr(checkpoint, f.name)), what=what,
                              blobs=blobs).decode("utf-8", "surrogatepass")
                for f in dataclasses.fields(checkpoint)) + "}").encode("utf-8", "surrogatepass")
        except serde.SerializationError as exc:
            raise WorkflowCheckpointException(
                f"{exc}. Agent Framework types, dataclasses and pydantic models are stored as "
                "they are; give the executor state or message another type") from exc
        row = SavedCheckpoint(thread_of(name), "", key, checkpoint.previous_checkpoint_id, cid,
                              pack_row(data), b"")
        return row, blobs

    def _decode(self, row: SavedCheckpoint) -> WorkflowCheckpoint:
        what = f"checkpoint {row.run_id} of workflow {row.thread_id[len(THREAD_PREFIX):]!r}"
        try:
            doc = serde.loads(unpack_row(row.checkpoint), what=what, blobs=self.store.get_blobs)
        except serde.SerializationError as exc:
            raise WorkflowCheckpointException(f"cannot load {what}: {exc}") from exc
        return WorkflowCheckpoint.from_dict({k: from_stored(v) for k, v in doc.items()})
