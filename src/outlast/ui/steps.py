"""Journal entries as the dashboard shows them: decoded once, through the JSON view, and cached.

A step's values are decoded (:mod:`outlast.serde`) and turned into the JSON view
(:mod:`outlast.jsonview`) here, once per entry: the API writes the result as it is and the
pages pretty-print it, so neither views a value twice. Recorded outcomes never change (an
entry is replaced only while it is an intent, and then its status differs), so a viewed
entry is cached under its identity and outcome; opening a 10,000-step run again decodes
nothing.

Replayed vs executed: every entry keeps the epoch of the execution that wrote it
(:attr:`~outlast.store.base.Entry.epoch`). An entry written before the run's last execution
was answered from the journal by the later ones ("replayed"); the others were "executed" by
the last one. Entries from before outlast 0.2.0 have no epoch and carry no mark.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from .. import jsonview, serde
from ..errors import OutlastError, UnreadableValue
from ..store.base import Entry, RunRecord, Store, entry_meta

#: statuses whose run's epoch is that of an execution (claim bumps it; finish keeps it)
EXECUTING = frozenset({"running", "completed", "failed"})


def error_doc(data: bytes) -> dict[str, Any]:
    """A recorded error as ``{"type", "message", "args"?}`` (not yet viewed)."""
    try:
        doc = serde.loads(data, what="recorded error")
    except OutlastError as exc:
        return {"type": "unreadable", "message": str(exc)}
    if not isinstance(doc, dict):
        return {"type": "unknown", "message": str(doc)}
    out = {"type": str(doc.get("c", "")).replace(":", "."), "message": str(doc.get("m", ""))}
    if "a" in doc:
        out["args"] = doc["a"]
    return out


def decode(data: bytes | None, store: Store, what: str) -> Any:
    """A stored value decoded (its blobs fetched), or ``{"unreadable": why}``."""
    if data is None:
        return None
    try:
        return serde.loads(data, what=what, blobs=store.get_blobs)
    except OutlastError as exc:
        return {"unreadable": str(exc)}


def last_execution(record: RunRecord, journal: Iterable[Entry]) -> int | None:
    """The epoch of the run's last execution that is known: the latest that wrote an entry,
    or the run's own epoch while it runs or once it ended by finishing."""
    epochs = [e.epoch for e in journal if e.epoch is not None]
    if record.status in EXECUTING:
        epochs.append(record.epoch)
    return max(epochs) if epochs else None


def mark(entry: Entry, last: int | None) -> str | None:
    """``"replayed"``, ``"executed"``, or None when the entry's epoch is unknown."""
    if entry.epoch is None or last is None:
        return None
    return "replayed" if entry.epoch < last else "executed"


class StepCache:
    """Viewed steps by entry identity and outcome, least recently used first out.

    Bounded by entry count and by the stored size of the cached outputs (a few large
    payloads do not pin memory); a bigger output is never cached. Thread-safe (the routes
    decode in a thread pool).
    """

    def __init__(self, entries: int = 50_000, size: int = 64 << 20, largest: int = 1 << 20) -> None:
        self.entries, self.size, self.largest = entries, size, largest
        self._items: OrderedDict[tuple[Any, ...], tuple[dict[str, Any], int]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, run_id: str, entry: Entry, store: Store) -> dict[str, Any]:
        """The viewed step for ``entry`` (a fresh dict: callers may add keys to it)."""
        if entry.status == "intent":  # not an outcome yet: it will change
            return step_view(entry, store)
        ident = (
            run_id,
            entry.key,
            entry.position,
            entry.status,
            entry.attempts,
            entry.started_at,
            entry.ended_at,
            entry.epoch,
            len(entry.output or b""),
        )
        with self._lock:
            hit = self._items.get(ident)
            if hit is not None:
                self._items.move_to_end(ident)
                return dict(hit[0])
        step = step_view(entry, store)
        cost = len(entry.output or b"") + len(entry.meta or "")
        if cost <= self.largest:
            with self._lock:
                if ident not in self._items:
                    self._items[ident] = (step, cost)
                    self._held += cost
                while len(self._items) > self.entries or self._held > self.size:
                    _, (_, freed) = self._items.popitem(last=False)
                    self._held -= freed
        return dict(step)

    def __len__(self) -> int:
        return len(self._items)


def step_view(entry: Entry, store: Store) -> dict[str, Any]:
    """One journal entry as the API and the waterfall show it, values in the JSON view."""
    try:
        meta = entry_meta(entry)
    except UnreadableValue as exc:  # sealed under a key this dashboard was not given
        meta = {"unreadable": str(exc)}
    except ValueError:
        meta = {"unreadable": entry.meta}
    step: dict[str, Any] = {
        "key": entry.key,
        "position": entry.position,
        "name": entry.name,
        "kind": entry.kind,
        "status": entry.status,
        "attempts": entry.attempts,
        "started_at": entry.started_at,
        "ended_at": entry.ended_at,
        "epoch": entry.epoch,
        "meta": jsonview.to_json(meta),
        "result": None,
        "error": None,
    }
    if entry.status == "failed" and entry.output is not None:
        step["error"] = jsonview.to_json(error_doc(entry.output))
    elif entry.status == "completed":
        value = decode(entry.output, store, f"step {entry.key}")
        if entry.kind == "llm" and isinstance(value, dict) and "request" in value:
            step["input"] = jsonview.to_json(_llm_request(value.get("request"), store))
            value = {k: v for k, v in value.items() if k != "request"}
        step["result"] = jsonview.to_json(value)
    # key and name come from the database as text: JSON-safe unless they hold a lone surrogate
    for field in ("key", "name", "kind"):
        if not step[field].isascii():
            step[field] = jsonview.to_json(step[field])
    return step


def _llm_request(request: Any, store: Store) -> Any:
    if isinstance(request, str):  # kept as encoded text by outlast.llm: decode it to show
        try:
            return serde.loads(
                request.encode("utf-8", "surrogatepass"),
                what="model request",
                blobs=store.get_blobs,
            )
        except OutlastError as exc:
            return {"unreadable": str(exc)}
    return request
