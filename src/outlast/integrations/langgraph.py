"""A LangGraph checkpointer that keeps checkpoints in outlast's store, with linear storage.

::

    from outlast.integrations.langgraph import OutlastSaver

    saver = OutlastSaver("sqlite:///agent.db")          # or a postgresql:// URL, or an App
    graph = builder.compile(checkpointer=saver)
    graph.invoke(inputs, {"configurable": {"thread_id": "t-1"}})

Values go through LangGraph's own serializer (``self.serde``, JsonPlusSerializer by default),
then through :mod:`outlast.serde`'s content-addressed blobs: a channel value (or pending write)
of 1 KB or more is stored once however many checkpoints hold it, and a list-valued channel is
split into one blob per item, its list of item references cut into content-defined chunks, so a
messages channel that grew by one message shares every chunk but the last with the previous
checkpoint. N checkpoints of a conversation growing by one message each store O(N) bytes, not
O(N^2). Blobs are referenced under the thread (``lg:<thread_id>``); :meth:`delete_thread`,
:meth:`delete_for_runs` and :meth:`prune` free those no remaining checkpoint uses.

Needs ``pip install 'outlast[langgraph]'``. See docs/langgraph.md.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import json
import weakref
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from .. import serde
from ..serde import _cut
from ..store import Store, open_store
from ..store.checkpoints import SavedCheckpoint, SavedWrite, checkpoint_store
from ._rows import pack_row as _pack
from ._rows import reachable
from ._rows import unpack_row as _unpack

if TYPE_CHECKING:
    from ..app import App

__all__ = ["OutlastSaver"]

_CHUNK_MASK = 15  # a content-defined cut after one element (or hash) in 16, as in serde
_TOP = 4  # hashes kept inline at the top of a list tree; more are grouped into blobs


def _list_tree(texts: list[str], blobs: dict[str, bytes]) -> Any:
    """A list whose elements are the JSON ``texts``, as an :mod:`outlast.serde` ``"lc"`` node.

    serde's own list chunking keeps up to ~30 chunk hashes inline, which each checkpoint of a
    long conversation would repeat; here the hash list is grouped until at most ``_TOP`` are
    left, so an append writes O(log n) bytes of hashes. The format is serde's: its loader
    reads it back unchanged.
    """
    if sum(map(len, texts)) + len(texts) < serde.BLOB_THRESHOLD:
        return None  # small: stays inline as a plain list

    def put(data: bytes) -> str:
        blobs.setdefault(h := serde.fingerprint(data), data)
        return h

    keys = [zlib.crc32(t.encode()) for t in texts]
    hashes = [put(("[" + ",".join(p) + "]").encode()) for p in _cut(texts, keys, _CHUNK_MASK)]
    while len(hashes) > _TOP:
        groups = _cut(hashes, [int(h[:8], 16) for h in hashes], _CHUNK_MASK)
        hashes = [put(json.dumps({"__o": "lc", "h": g}, separators=(",", ":")).encode())
                  for g in groups]
    return {"__o": "lc", "h": hashes}


class OutlastSaver(BaseCheckpointSaver[int]):
    """LangGraph ``BaseCheckpointSaver`` on an outlast store (SQLite or PostgreSQL).

    ``store``: a store URL (the saver opens it and :meth:`close` closes it), an
    :class:`outlast.App` (its store, left open), or a :class:`~outlast.store.Store`.
    ``serde``: LangGraph's serializer protocol (default JsonPlusSerializer).
    Async methods run the sync ones in a worker thread.
    """

    def __init__(self, store: str | App | Store, *, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        self._owned = isinstance(store, str)
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if isinstance(store, str):
            self.store: Store = open_store(store)
            # Closes the store when the saver is collected or at interpreter exit; it holds
            # the store, not the saver.
            self._finalizer = weakref.finalize(self, self.store.close)
        elif isinstance(store, Store):
            self.store = store
        else:
            self.store = store.store
        #: the same store, as a checkpoint store (its own protocol, store/checkpoints.py)
        self.checkpoints = checkpoint_store(self.store)

    def close(self) -> None:
        """Close the store if this saver opened it from a URL; safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> OutlastSaver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- encoding -------------------------------------------------------------------------

    def _typed(self, value: Any) -> bytes:
        kind, data = self.serde.dumps_typed(value)
        return kind.encode() + b"\0" + data

    def _untyped(self, data: bytes) -> Any:
        kind, _, body = data.partition(b"\0")
        return self.serde.loads_typed((kind.decode(), body))

    def _enc(self, value: Any, blobs: dict[str, bytes], what: str) -> str:
        """JSON text (outlast.serde format) of a value: its LangGraph bytes, moved to a blob
        when large. A list is stored item by item (see :func:`_list_tree`), so an appended
        list shares every item and all but its last chunks with its previous version."""
        if type(value) is not list:
            return serde.dumps(self._typed(value), what=what, blobs=blobs).decode()
        texts = [serde.dumps(self._typed(x), what=what, blobs=blobs).decode() for x in value]
        tree = _list_tree(texts, blobs)
        return "[" + ",".join(texts) + "]" if tree is None else json.dumps(tree, separators=(",", ":"))

    def _dec(self, enc: Any) -> Any:
        return [self._untyped(x) for x in enc] if type(enc) is list else self._untyped(enc)

    def _load(self, data: bytes, what: str) -> Any:
        return serde.loads(_unpack(data), what=what, blobs=self.store.get_blobs)

    # -- sync API -------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` under the thread and namespace of ``config`` (whose
        ``checkpoint_id``, if any, is its parent); returns the config naming it."""
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        rest = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        what = f"checkpoint {checkpoint['id']} of thread {thread_id!r}"
        try:  # versions and ids are plain data: outlast's JSON is smaller than base64 msgpack
            head = serde.dumps(rest, what=what).decode()
        except serde.SerializationError:
            head = serde.dumps(self._typed(rest), what=what).decode()
        blobs: dict[str, bytes] = {}
        # [head, [[channel, value], ...]], written as text: the values are already encoded
        values = ",".join(f"[{json.dumps(k)},{self._enc(v, blobs, f'channel {k!r} of {what}')}]"
                          for k, v in checkpoint["channel_values"].items())
        data = _pack(f"[{head},[{values}]]".encode())
        meta = get_checkpoint_metadata(config, metadata)
        run_id = meta.get("run_id")
        self.checkpoints.put_checkpoint(
            SavedCheckpoint(thread_id, ns, checkpoint["id"], conf.get("checkpoint_id"),
                            None if run_id is None else str(run_id), data, self._typed(meta)),
            blobs,
        )
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes under the checkpoint named by ``config``."""
        conf = config["configurable"]
        thread_id, ns, cid = str(conf["thread_id"]), conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
        blobs: dict[str, bytes] = {}
        rows = [
            SavedWrite(thread_id, ns, cid, task_id, WRITES_IDX_MAP.get(channel, i), channel,
                       _pack(self._enc(value, blobs, f"write to {channel!r}").encode()),
                       task_path)
            for i, (channel, value) in enumerate(writes)
        ]
        self.checkpoints.put_writes(rows, blobs)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config`` (its thread's latest without a
        ``checkpoint_id``), with its pending writes, or None."""
        conf = config["configurable"]
        rows = self.checkpoints.get_checkpoints(str(conf["thread_id"]), ns=conf.get("checkpoint_ns", ""),
                                          checkpoint_id=get_checkpoint_id(config), limit=1)
        return next(self._tuples(rows), None)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of the thread (and namespace, and id) in ``config``, or of
        every thread; with ``metadata`` matching ``filter``; older than ``before``."""
        conf = config["configurable"] if config else {}
        rows = self.checkpoints.get_checkpoints(
            str(conf["thread_id"]) if "thread_id" in conf else None,
            ns=conf.get("checkpoint_ns"),
            checkpoint_id=get_checkpoint_id(config) if config else None,
            before=get_checkpoint_id(before) if before else None,
            limit=None if filter else limit,  # metadata is filtered here, after loading
        )
        tuples = self._tuples(rows, filter)
        yield from tuples if limit is None else itertools.islice(tuples, max(limit, 0))

    def _tuples(self, rows: builtins.list[SavedCheckpoint],
                filter: Mapping[str, Any] | None = None) -> Iterator[CheckpointTuple]:
        writes: dict[tuple[str, str], dict[str, list[SavedWrite]]] = {}
        for row in rows:
            metadata = self._untyped(row.metadata)
            if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                continue
            group = (row.thread_id, row.ns)
            if group not in writes:  # one query for every checkpoint of this thread/namespace
                writes[group] = {}
                ids = [r.checkpoint_id for r in rows if (r.thread_id, r.ns) == group]
                for w in self.checkpoints.get_writes(row.thread_id, row.ns, ids):
                    writes[group].setdefault(w.checkpoint_id, []).append(w)
            doc = self._load(row.checkpoint, f"checkpoint {row.checkpoint_id} of thread "
                                             f"{row.thread_id!r}")
            head, values = doc
            checkpoint = {**(self._untyped(head) if type(head) is bytes else head),
                          "channel_values": {k: self._dec(v) for k, v in values}}
            pending = [(w.task_id, w.channel, self._dec(self._load(w.value, f"write to {w.channel!r}")))
                       for w in writes[group].get(row.checkpoint_id, [])]
            yield CheckpointTuple(
                config=_config(row.thread_id, row.ns, row.checkpoint_id),
                checkpoint=checkpoint,  # type: ignore[arg-type]
                metadata=metadata,
                parent_config=_config(row.thread_id, row.ns, row.parent_id) if row.parent_id else None,
                pending_writes=pending,
            )

    def delete_thread(self, thread_id: str) -> None:
        """Delete the thread's checkpoints and writes, and free blobs nothing else uses."""
        self.checkpoints.delete_checkpoints(thread_id=str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) made by these LangGraph runs."""
        self.checkpoints.delete_checkpoints(run_ids=[str(r) for r in run_ids], reachable=reachable)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest",
              keep: int = 1) -> None:
        """``"keep_latest"``: keep the ``keep`` newest checkpoints of each namespace of each
        thread (with their writes); ``"delete"``: delete the threads. Frees unused blobs.

        Not for graphs using LangGraph's beta ``DeltaChannel``: see docs/langgraph.md."""
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in thread_ids:
            self.checkpoints.delete_checkpoints(
                thread_id=str(thread_id), keep=keep if strategy == "keep_latest" else 0,
                reachable=reachable,
            )

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread to another. Blobs are shared, not
        copied: the target only gains references to them."""
        src, dst = str(source_thread_id), str(target_thread_id)
        rows = self.checkpoints.get_checkpoints(src)
        for row in reversed(rows):  # oldest first, as they were made
            writes = self.checkpoints.get_writes(src, row.ns, [row.checkpoint_id])
            used = reachable([row.checkpoint, *(w.value for w in writes)], self.store.get_blobs)
            blobs = self.store.get_blobs(used)
            self.checkpoints.put_checkpoint(replace(row, thread_id=dst), blobs)
            self.checkpoints.put_writes([replace(w, thread_id=dst) for w in writes], blobs)

    # -- async twins: the sync methods in a worker thread ----------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple`."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list` (the page is loaded in a worker thread, then yielded)."""
        tuples = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for tup in tuples:
            yield tup

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        """Async :meth:`put`."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        """Async :meth:`put_writes`."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`delete_for_runs`."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest",
                     keep: int = 1) -> None:
        """Async :meth:`prune`."""
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy, keep=keep))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)


def _config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                             "checkpoint_id": checkpoint_id}}
