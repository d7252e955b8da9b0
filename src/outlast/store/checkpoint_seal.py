"""Sealing of framework checkpoint rows (the LangGraph saver, the Agent Framework storage).

The checkpoint backends (:mod:`outlast.store.sqlite_saver`, :mod:`outlast.store.postgres_saver`)
pass every row through their ``rowseal`` attribute: :meth:`CheckpointSeal.seal_checkpoint` /
:meth:`~CheckpointSeal.seal_write` on the way in, the ``open_*`` twins on the way out, and
also before the walk that decides which blobs a thread still uses (``delete_checkpoints``),
which sees each row with its key. Without encryption (the default, a class attribute of the
backends) values pass through, and a sealed one raises :class:`~outlast.errors.UnreadableValue`
naming its key, so a delete never mistakes unreadable rows for rows that use no blobs.
:class:`~outlast.store.sealed.SealedStore` sets one with its keys on the backend it wraps.

A sealed column is the format of :mod:`outlast.encryption`, bound (associated data) to its
row's key and column: ``checkpoint`` and ``metadata`` of ``(thread_id, ns, checkpoint_id)``,
a write's ``value`` of ``(thread_id, ns, checkpoint_id, task_id, idx)``. Empty values (the
Agent Framework's unused ``metadata``) stay empty.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..encryption import open_sealed, sealed_kid
from .blobs import compress, decompress
from .checkpoints import SavedCheckpoint, SavedWrite

if TYPE_CHECKING:
    from ..encryption import Encryption

__all__ = ["CheckpointSeal", "checkpoint_aad", "seal_value", "write_aad"]


def _parts(*parts: str) -> bytes:
    return b"\x00".join(p.encode("utf-8", "surrogatepass") for p in parts)


def checkpoint_aad(thread_id: str, ns: str, checkpoint_id: str, column: str) -> bytes:
    """Where a checkpoint row's ``checkpoint`` or ``metadata`` belongs."""
    return b"outlast checkpoint\x00" + _parts(thread_id, ns, checkpoint_id, column)


def write_aad(thread_id: str, ns: str, checkpoint_id: str, task_id: str, idx: int) -> bytes:
    """Where a pending write's ``value`` belongs."""
    return b"outlast write\x00" + _parts(thread_id, ns, checkpoint_id, task_id, str(int(idx)))


def seal_value(encryption: Encryption, data: bytes, aad: bytes) -> bytes:
    """``data`` compressed (when it pays) and sealed, as :class:`SealedStore` seals payloads."""
    framed = compress(data)
    return encryption.seal(framed if framed is not data else b"-" + data, aad)


class CheckpointSeal:
    """Seals and opens checkpoint rows under ``encryption`` (None: rows stay in the clear)."""

    def __init__(self, encryption: Encryption | None = None) -> None:
        self.encryption = encryption

    def _seal(self, data: bytes, aad: bytes) -> bytes:
        if self.encryption is None or not data:
            return data
        return seal_value(self.encryption, data, aad)

    def open(self, data: bytes, aad: bytes, what: str) -> bytes:
        """The stored ``data`` in the clear: as it is when it was written in the clear."""
        data = bytes(data)
        if sealed_kid(data) is None:
            return data
        inner = open_sealed(self.encryption, data, aad, what)
        return inner[1:] if inner[:1] == b"-" else decompress(inner[1], inner[2:])

    def seal_checkpoint(self, c: SavedCheckpoint) -> SavedCheckpoint:
        if self.encryption is None:
            return c
        key = (c.thread_id, c.ns, c.checkpoint_id)
        return replace(c, checkpoint=self._seal(c.checkpoint, checkpoint_aad(*key, "checkpoint")),
                       metadata=self._seal(c.metadata, checkpoint_aad(*key, "metadata")))

    def open_checkpoint(self, c: SavedCheckpoint) -> SavedCheckpoint:
        key = (c.thread_id, c.ns, c.checkpoint_id)
        what = f"checkpoint {c.checkpoint_id} of thread {c.thread_id!r}"
        checkpoint = self.open(c.checkpoint, checkpoint_aad(*key, "checkpoint"), what)
        metadata = self.open(c.metadata, checkpoint_aad(*key, "metadata"), f"metadata of {what}")
        if checkpoint is c.checkpoint and metadata is c.metadata:
            return c
        return replace(c, checkpoint=checkpoint, metadata=metadata)

    def seal_write(self, w: SavedWrite) -> SavedWrite:
        if self.encryption is None:
            return w
        aad = write_aad(w.thread_id, w.ns, w.checkpoint_id, w.task_id, w.idx)
        return replace(w, value=self._seal(w.value, aad))

    def open_write(self, w: SavedWrite) -> SavedWrite:
        aad = write_aad(w.thread_id, w.ns, w.checkpoint_id, w.task_id, w.idx)
        what = f"write {w.task_id}/{w.idx} to checkpoint {w.checkpoint_id} of thread {w.thread_id!r}"
        value = self.open(w.value, aad, what)
        return w if value is w.value else replace(w, value=value)
