"""A store whose payloads are encrypted at rest: wraps a backend, seals on the way in, opens
on the way out (see :mod:`outlast.encryption` and docs/security.md).

Sealed, each bound by associated data to its place (so a ciphertext copied elsewhere fails
authentication): a run's input (``run``, run id, ``input``), output, error and snapshot; a
journal entry's output (run id and entry key); an event's payload (run id only, since
:meth:`take_event` moves the sent payload into the journal as it is: an entry's output is
also accepted under its run's event binding); blobs (their keyed address, by :class:`~outlast.store.blobs.BlobCodec`). Run
entry's ``meta`` (model call facts, a graph node's state summary) is sealed too, as base64
text. Framework checkpoint rows are sealed by the backend (:mod:`.checkpoint_seal`), which
this sets up. Run ids, names, statuses, times and ``stats`` stay in the clear. Values written before
encryption was switched on are read as they are.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..encryption import Encryption, open_sealed, sealed_kid
from ..errors import SerializationError, UnreadableValue
from .base import (
    SEALED_META,
    Entry,
    NewRun,
    Page,
    QueueSpec,
    QueueStats,
    RunQuery,
    RunRecord,
    Store,
)
from .blobs import BlobCodec, compress, decompress
from .checkpoint_seal import CheckpointSeal

__all__ = ["META", "SealedStore", "entry_aad", "event_aad", "key_aad", "run_aad"]

#: how a sealed ``meta`` (a text column) begins: then the base64 of the sealed value
META = SEALED_META


def run_aad(run_id: str, column: str) -> bytes:
    return b"outlast run\x00" + run_id.encode("utf-8", "surrogatepass") + b"\x00" + column.encode()


def entry_aad(run_id: str, entry: Entry) -> bytes:
    return key_aad(run_id, entry.key)


def key_aad(run_id: str, key: str) -> bytes:
    """Where a journal entry's output belongs: its run and key."""
    return (b"outlast entry\x00" + run_id.encode("utf-8", "surrogatepass") + b"\x00"
            + key.encode("utf-8", "surrogatepass"))


def event_aad(run_id: str) -> bytes:
    # bound to the run only: take_event moves the payload into a journal entry as it is
    return b"outlast event\x00" + run_id.encode("utf-8", "surrogatepass")


class SealedStore(Store):
    """``inner`` with every payload sealed under ``encryption``'s active key."""

    def __init__(self, inner: Store, encryption: Encryption) -> None:
        self.inner = inner
        self.encryption = encryption
        self.dialect = inner.dialect
        self.url = inner.url
        # the backend's blob rows: keyed addresses and sealed data
        inner.blobs = BlobCodec(encryption)  # type: ignore[attr-defined]
        # rows a fork copies are bound again to the new run, in the fork's transaction
        inner.after_fork = self.rebind_fork  # type: ignore[attr-defined]
        # framework checkpoint rows (LangGraph saver, Agent Framework storage): see
        # checkpoint_seal.py; the backend seals and opens them, knowing each row's key
        inner.rowseal = CheckpointSeal(encryption)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:  # backend extras (checkpoints, internals)
        return getattr(self.inner, name)

    # -- sealing ---------------------------------------------------------------------------

    def seal(self, data: bytes, aad: bytes) -> bytes:
        framed = compress(data)
        return self.encryption.seal(framed if framed is not data else b"-" + data, aad)

    def open(self, data: bytes | None, aad: bytes, what: str) -> bytes | None:
        if data is None or sealed_kid(data) is None:
            return data  # written before encryption was switched on
        inner = open_sealed(self.encryption, bytes(data), aad, what)
        return inner[1:] if inner[:1] == b"-" else decompress(inner[1], inner[2:])

    def reseal(self, value: Any, places: Sequence[tuple[bytes, bytes]], what: str, *,
               clear: bool | None = None, moving: bool = False) -> bytes | None:
        """A stored ``value`` sealed again under the active key, or None when nothing changes.

        ``places`` are ``(where it may be bound now, where it is bound after)`` pairs, tried in
        turn. A value not yet under the active key is opened and sealed again (``outlast
        rekey``); with ``moving`` (a fork copying rows to a new run) every sealed value is
        bound to its new place. A value in the clear (``clear``, default: when it is not sealed)
        is sealed at the first place when not ``moving``, else left as it is.
        """
        data = bytes(value)
        kid = None if clear else sealed_kid(data)
        if kid is None:
            return None if moving else self.seal(data, places[0][1])
        if kid == self.encryption.active and not moving:
            return None
        for i, (now, after) in enumerate(places):
            try:
                inner = open_sealed(self.encryption, data, now, what)
            except SerializationError as exc:
                if i == len(places) - 1 or isinstance(exc, UnreadableValue):
                    raise
                continue
            plain = inner[1:] if inner[:1] == b"-" else decompress(inner[1], inner[2:])
            return self.seal(plain, after)
        return None  # pragma: no cover - the loop returns or raises

    def _seal_opt(self, data: bytes | None, aad: bytes) -> bytes | None:
        return None if data is None else self.seal(data, aad)

    def _run(self, r: RunRecord) -> RunRecord:
        rid = r.run_id
        return dataclasses.replace(
            r,
            input=self.open(r.input, run_aad(rid, "input"), f"input of run {rid!r}") or b"",
            output=self.open(r.output, run_aad(rid, "output"), f"result of run {rid!r}"),
            error=self.open(r.error, run_aad(rid, "error"), f"error of run {rid!r}"),
            snapshot=self.open(r.snapshot, run_aad(rid, "snapshot"), f"snapshot of run {rid!r}"),
        )

    def _seal_entry(self, run_id: str, e: Entry) -> Entry:
        if e.output is None and e.meta is None:
            return e
        aad = entry_aad(run_id, e)
        meta = e.meta
        if meta is not None:  # model call facts, a graph node's state summary: JSON text
            sealed = self.seal(meta.encode("utf-8", "surrogatepass"), aad + b"\x00meta")
            meta = META + base64.b64encode(sealed).decode("ascii")
        place = event_aad(run_id) if e.kind == "event" else aad
        return dataclasses.replace(e, output=self._seal_opt(e.output, place), meta=meta)

    def _open_entry(self, run_id: str, e: Entry) -> Entry:
        sealed_meta = e.meta is not None and e.meta.startswith(META)
        if not sealed_meta and (e.output is None or sealed_kid(e.output) is None):
            return e
        what = f"journal entry {e.key!r} of run {run_id!r}"
        aad = entry_aad(run_id, e)
        meta = e.meta
        if sealed_meta and meta is not None:
            raw = self.open(base64.b64decode(meta[len(META) :]), aad + b"\x00meta", what)
            meta = (raw or b"").decode("utf-8", "surrogatepass")
        if e.kind == "event":
            output = self.open(e.output, event_aad(run_id), what)
        else:
            try:
                output = self.open(e.output, aad, what)
            except SerializationError as exc:  # an event payload taken into the journal
                if getattr(exc, "key_id", None) is None or isinstance(exc, UnreadableValue):
                    raise
                output = self.open(e.output, event_aad(run_id), what)
        return dataclasses.replace(e, output=output, meta=meta)

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: NewRun, *, owner: str | None = None, lease: float = 0.0,
                   first: Entry | None = None,
                   blobs: Mapping[str, bytes] | None = None) -> tuple[RunRecord, bool]:
        sealed = dataclasses.replace(run, input=self.seal(run.input, run_aad(run.run_id, "input")))
        if first is not None:
            first = self._seal_entry(run.run_id, first)
        record, created = self.inner.create_run(sealed, owner=owner, lease=lease, first=first,
                                                blobs=blobs)
        return self._run(record), created

    def get_run(self, run_id: str) -> RunRecord | None:
        record = self.inner.get_run(run_id)
        return None if record is None else self._run(record)

    def list_runs(self, page: Page) -> list[RunRecord]:
        return [self._run(r) for r in self.inner.list_runs(page)]

    def claim(self, owner: str, lease: float, *, run_id: str | None = None,
              steal_from: str | None = None, workflows: Iterable[str] | None = None,
              queues: Mapping[str, QueueSpec] | None = None, limit: int = 1,
              in_queues: Iterable[str] | None = None, grace: float = 0.0) -> list[RunRecord]:
        runs = self.inner.claim(owner, lease, run_id=run_id, steal_from=steal_from,
                                workflows=workflows, queues=queues, limit=limit,
                                in_queues=in_queues, grace=grace)
        return [self._run(r) for r in runs]

    def heartbeat(self, owner: str, run_ids: Sequence[str], lease: float) -> set[str]:
        return self.inner.heartbeat(owner, run_ids, lease)

    def finish(self, run_id: str, epoch: int, status: str, *, output: bytes | None = None,
               error: bytes | None = None, stats: str | None = None,
               blobs: Mapping[str, bytes] | None = None) -> None:
        self.inner.finish(
            run_id, epoch, status, output=self._seal_opt(output, run_aad(run_id, "output")),
            error=self._seal_opt(error, run_aad(run_id, "error")), stats=stats, blobs=blobs)

    def release(self, run_id: str, epoch: int, status: str, *, wake_at: float | None = None,
                wait_event: str | None = None, reason: str | None = None,
                stats: str | None = None) -> None:
        self.inner.release(run_id, epoch, status, wake_at=wake_at, wait_event=wait_event,
                           reason=reason, stats=stats)

    def fork_run(self, source_id: str, new_run_id: str, upto: int, stats: str | None) -> RunRecord:
        # the copied rows are bound to the source run: the backend calls rebind_fork (below)
        # inside its fork transaction, so a fork is whole or absent, never half rebound
        return self._run(self.inner.fork_run(source_id, new_run_id, upto, stats))

    def retry_run(self, run_id: str, cut: int | None, stats: str | None) -> RunRecord:
        return self._run(self.inner.retry_run(run_id, cut, stats))

    def rebind_fork(self, execute: Callable[..., Any], table: Callable[[str], str],
                    source: str, new: str) -> None:
        """Bind the payloads a fork copied from run ``source`` to run ``new`` (``execute``
        runs SQL written with ``?`` in the fork's transaction; ``table`` names a table)."""
        runs, journal = table("runs"), table("journal")
        row = execute(f"SELECT input, snapshot FROM {runs} WHERE run_id = ?", (new,)).fetchone()
        for column, value in zip(("input", "snapshot"), row or (), strict=False):
            moved = None if value is None else self.reseal(
                value, [(run_aad(source, column), run_aad(new, column))],
                f"{column} of run {source!r}", moving=True)
            if moved is not None:
                execute(f"UPDATE {runs} SET {column} = ? WHERE run_id = ?", (moved, new))
        rows = execute(f"SELECT key, kind, output, meta FROM {journal} WHERE run_id = ?",
                       (new,)).fetchall()
        for key, kind, output, meta in rows:
            what = f"journal entry {key!r} of run {source!r}"
            events = (event_aad(source), event_aad(new))
            places = [events] if kind == "event" else [(key_aad(source, key), key_aad(new, key)),
                                                        events]
            out = None if output is None else self.reseal(output, places, what, moving=True)
            new_meta = None
            if meta is not None and str(meta).startswith(META):
                tag = b"\x00meta"
                moved = self.reseal(
                    base64.b64decode(str(meta)[len(META):]),
                    [(key_aad(source, key) + tag, key_aad(new, key) + tag)], what, moving=True)
                new_meta = None if moved is None else META + base64.b64encode(moved).decode()
            if out is not None or new_meta is not None:
                execute(f"UPDATE {journal} SET output = COALESCE(?, output), "
                        "meta = COALESCE(?, meta) WHERE run_id = ? AND key = ?",
                        (out, new_meta, new, key))

    def set_trace_context(self, run_id: str, epoch: int, context: str) -> None:
        self.inner.set_trace_context(run_id, epoch, context)

    def cancel(self, run_id: str) -> list[str]:
        return self.inner.cancel(run_id)

    def resolve(self, run_id: str, entry: Entry | None, drop_key: str | None = None) -> RunRecord:
        sealed = None if entry is None else self._seal_entry(run_id, entry)
        return self._run(self.inner.resolve(run_id, sealed, drop_key))

    # -- journal ---------------------------------------------------------------------------

    def load_journal(self, run_id: str) -> list[Entry]:
        return [self._open_entry(run_id, e) for e in self.inner.load_journal(run_id)]

    def record(self, run_id: str, epoch: int, entry: Entry,
               blobs: Mapping[str, bytes] | None = None) -> None:
        self.inner.record(run_id, epoch, self._seal_entry(run_id, entry), blobs)

    def get_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        return self.inner.get_blobs(hashes)

    def stash(self, run_id: str, epoch: int, snapshot: bytes, position: int) -> None:
        self.inner.stash(run_id, epoch, self.seal(snapshot, run_aad(run_id, "snapshot")), position)

    def transaction(self, run_id: str, epoch: int, work: Callable[[Any], Entry]) -> Entry:
        plain: list[Entry] = []

        def sealed_work(conn: Any) -> Entry:
            plain[:] = [work(conn)]
            return self._seal_entry(run_id, plain[0])

        self.inner.transaction(run_id, epoch, sealed_work)
        return plain[0]

    # -- events ----------------------------------------------------------------------------

    def send_event(self, run_id: str, name: str, payload: bytes) -> int:
        return self.inner.send_event(run_id, name, self.seal(payload, event_aad(run_id)))

    def take_event(self, run_id: str, epoch: int, name: str, entry: Entry) -> Entry | None:
        taken = self.inner.take_event(run_id, epoch, name, self._seal_entry(run_id, entry))
        return None if taken is None else self._open_entry(run_id, taken)

    # -- maintenance and browsing ------------------------------------------------------------

    def queue_stats(self) -> list[QueueStats]:
        return self.inner.queue_stats()

    def prune(self, older_than: float, limit: int | None = None) -> int:
        return self.inner.prune(older_than, limit)

    def wait_for_work(self, timeout: float, group: str = "") -> bool:
        return self.inner.wait_for_work(timeout, group)

    def wake_waiters(self) -> None:
        self.inner.wake_waiters()

    def attach(self, owner: str, on_cancel: Callable[[str], None]) -> str:
        return self.inner.attach(owner, on_cancel)

    def dead_owners(self) -> list[str] | None:
        return self.inner.dead_owners()

    def close(self) -> None:
        self.inner.close()

    def browse_runs(self, query: RunQuery) -> list[RunRecord]:
        return [self._run(r) for r in self.inner.browse_runs(query)]

    def count_runs(self, query: RunQuery) -> dict[str, int]:
        return self.inner.count_runs(query)

    def count_entries(self, run_ids: Sequence[str]) -> dict[str, int]:
        return self.inner.count_entries(run_ids)
