"""A store whose payloads are encrypted at rest: wraps a backend, seals on the way in, opens
on the way out (see :mod:`outlast.encryption` and docs/security.md).

Sealed, each bound by associated data to its place (so a ciphertext copied elsewhere fails
authentication): a run's input (``run``, run id, ``input``), output, error and snapshot; a
journal entry's output (run id and entry key); an event's payload (run id only, since
:meth:`take_event` moves the sent payload into the journal as it is: an entry's output is
also accepted under its run's event binding); blobs (their keyed address, by :class:`~outlast.store.blobs.BlobCodec`). Run
entry's ``meta`` (model call facts, a graph node's state summary) is sealed too, as base64
text. Run ids, names, statuses, times and ``stats`` stay in the clear. Values written before
encryption was switched on are read as they are.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..encryption import Encryption, open_sealed, sealed_kid
from ..errors import ConfigurationError, SerializationError, UnreadableValue
from .base import Entry, NewRun, Page, QueueSpec, QueueStats, RunQuery, RunRecord, Store
from .blobs import BlobCodec, compress, decompress

__all__ = ["SealedStore", "entry_aad", "run_aad"]

#: how a sealed ``meta`` (a text column) begins: then the base64 of the sealed value
_META = "~sealed:"


def run_aad(run_id: str, column: str) -> bytes:
    return b"outlast run\x00" + run_id.encode("utf-8", "surrogatepass") + b"\x00" + column.encode()


def entry_aad(run_id: str, entry: Entry) -> bytes:
    return (b"outlast entry\x00" + run_id.encode("utf-8", "surrogatepass") + b"\x00"
            + entry.key.encode("utf-8", "surrogatepass"))


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
            meta = _META + base64.b64encode(sealed).decode("ascii")
        place = event_aad(run_id) if e.kind == "event" else aad
        return dataclasses.replace(e, output=self._seal_opt(e.output, place), meta=meta)

    def _open_entry(self, run_id: str, e: Entry) -> Entry:
        sealed_meta = e.meta is not None and e.meta.startswith(_META)
        if not sealed_meta and (e.output is None or sealed_kid(e.output) is None):
            return e
        what = f"journal entry {e.key!r} of run {run_id!r}"
        aad = entry_aad(run_id, e)
        meta = e.meta
        if sealed_meta and meta is not None:
            raw = self.open(base64.b64decode(meta[len(_META) :]), aad + b"\x00meta", what)
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
              in_queues: Iterable[str] | None = None) -> list[RunRecord]:
        runs = self.inner.claim(owner, lease, run_id=run_id, steal_from=steal_from,
                                workflows=workflows, queues=queues, limit=limit,
                                in_queues=in_queues)
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

    def set_trace_context(self, run_id: str, epoch: int, context: str) -> None:
        self.inner.set_trace_context(run_id, epoch, context)

    # -- evolution -------------------------------------------------------------------------

    def fork_run(self, source_id: str, new_run_id: str, upto: int, stats: str | None) -> RunRecord:
        # The copied payloads are bound to the source run: they would not open under the fork.
        raise ConfigurationError(
            f"cannot fork run {source_id!r}: forking a run whose payloads are encrypted is not "
            "supported yet (the copied values are bound to the run they were written for); "
            "retry the run instead (`outlast retry`), or start a new one"
        )

    def retry_run(self, run_id: str, cut: int | None, stats: str | None) -> RunRecord:
        return self._run(self.inner.retry_run(run_id, cut, stats))

    def close(self) -> None:
        self.inner.close()

    def browse_runs(self, query: RunQuery) -> list[RunRecord]:
        return [self._run(r) for r in self.inner.browse_runs(query)]

    def count_runs(self, query: RunQuery) -> dict[str, int]:
        return self.inner.count_runs(query)

    def count_entries(self, run_ids: Sequence[str]) -> dict[str, int]:
        return self.inner.count_entries(run_ids)
