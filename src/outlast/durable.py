"""The one durable-call path: identity, replay or run, entry, fenced write, fault rule.

Every durable primitive (steps, transaction steps, at-most-once intents, timers, events,
children, graph nodes, model calls, ``ctx.now/uuid/random``) goes through one
:class:`DurableCall`, obtained from :meth:`outlast.context.RunState.begin`::

    call = state.begin("timer", "sleep")          # identity from the journal (may diverge)
    if call.replayed:
        return call.value()                       # recorded value, or raise recorded error
    value = compute()
    call.complete(value)                          # serialized, journaled, fenced
    return value

``begin`` checks for cancellation and lost leases, and asks the pure :class:`~outlast.journal.
Journal` for the call's position, key and recorded entry. Entries are built here and in the
stores only, by keyword. Every write goes through :meth:`RunState.write`, which applies the
fault rule once for all primitives (see :mod:`outlast.store.faults`).

This object is where tracing, payload codecs and patch markers hook in: they see every call
with its kind, name, key, whether it was replayed, and its outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import serde, serde_errors
from .errors import SerializationError
from .store.base import Entry

if TYPE_CHECKING:
    from .context import RunState

__all__ = ["DurableCall"]


class DurableCall:
    """One durable call of a run: its identity, its recorded entry (if any), and how to
    record its outcome."""

    __slots__ = (
        "state", "kind", "name", "key", "position", "occurrence", "args_hash", "entry", "preview"
    )

    def __init__(
        self,
        state: RunState,
        kind: str,
        name: str,
        key: str,
        position: int,
        occurrence: int,
        args_hash: str | None,
        entry: Entry | None,
        preview: Callable[[], str] | None = None,
    ) -> None:
        self.state = state
        self.kind = kind
        self.name = name
        #: the call's identity in the run (``"{name}:{n}"`` or ``"{name}:{explicit key}"``)
        self.key = key
        self.position = position
        self.occurrence = occurrence
        self.args_hash = args_hash
        #: the recorded entry, or None for a call made for the first time
        self.entry = entry
        #: makes the arguments' preview (see :mod:`outlast.previews`), kept in the entry's facts
        self.preview = preview

    # -- what the journal says ---------------------------------------------------------------

    @property
    def replayed(self) -> bool:
        """True when the journal holds this call's outcome (completed or failed)."""
        return self.entry is not None and self.entry.status != "intent"

    @property
    def has_intent(self) -> bool:
        """True when only an at-most-once intent is recorded: the effect may have happened."""
        return self.entry is not None and self.entry.status == "intent"

    def value(self, *, what: str | None = None, blobs: bool = True) -> Any:
        """The recorded value; raises the recorded error of a failed call."""
        entry = self.entry
        assert entry is not None and entry.status != "intent", "value() of an unrecorded call"
        if entry.status == "failed":
            raise serde_errors.load_error(entry.output or b"null", step=self.name)
        return serde.loads(
            entry.output or b"null",
            what=what or f"recorded {self.kind} {self.name!r} ({self.key}) of run {self.state.run_id!r}",
            blobs=self.state.store.get_blobs if blobs else None,
        )

    # -- recording ---------------------------------------------------------------------------

    def make_entry(
        self,
        status: str,
        output: bytes | None = None,
        *,
        attempts: int = 1,
        started: float | None = None,
        ended: float | None = None,
        meta: str | None = None,
    ) -> Entry:
        """The journal entry for this call's outcome (``ended`` None for an intent), as
        :meth:`record` builds it (kept in step with it)."""
        now = time.time()
        if meta is None and self.preview is not None:
            meta = json.dumps({"args": self.preview()}, ensure_ascii=False)
        return Entry(
            key=self.key,
            position=self.position,
            kind=self.kind,
            name=self.name,
            status=status,
            output=output,
            args_hash=self.args_hash,
            attempts=attempts,
            started_at=now if started is None else started,
            ended_at=None if status == "intent" else (now if ended is None else ended),
            meta=meta,
        )

    def record(
        self,
        status: str,
        output: bytes | None = None,
        *,
        blobs: Mapping[str, bytes] | None = None,
        attempts: int = 1,
        started: float | None = None,
        ended: float | None = None,
        meta: str | None = None,
    ) -> Entry:
        """Journal this call's outcome (already serialized), fenced, through the fault rule."""
        entry = self.make_entry(
            status, output, attempts=attempts, started=started, ended=ended, meta=meta
        )
        state = self.state
        state.write_entry(entry, blobs or None, step=self.name)
        if state.telemetry.active:
            state.telemetry.recorded(self, status)
        return entry

    def intent(self) -> None:
        """Journal an at-most-once intent before the effect runs (committed and fenced)."""
        self.record("intent")

    def complete(
        self,
        value: Any,
        *,
        attempts: int = 1,
        started: float | None = None,
        meta: str | None = None,
        what: str | None = None,
        large: bool = True,
    ) -> Any:
        """Serialize and journal ``value`` as this call's result, and return it.

        ``large``: values past the blob threshold store their big parts as content-addressed
        blobs (shared across the run's calls). A value that cannot be stored fails the call
        with that SerializationError, recorded, so a replay fails the same way.
        """
        what = what or f"result of {self.kind} {self.name!r}"
        blobs: dict[str, bytes] = {}
        try:
            output = serde.dumps(value, what=what)
            if large and len(output) >= serde.BLOB_THRESHOLD:
                output = serde.pack(serde.dumps(value, what=what, blobs=blobs))
        except SerializationError as bad:
            self.fail(bad, attempts=attempts, started=started)
            raise
        self.record(
            "completed", output, blobs=blobs, attempts=attempts, started=started, meta=meta
        )
        return value

    def fail(
        self, exc: BaseException, *, attempts: int = 1, started: float | None = None,
        meta: str | None = None,
    ) -> None:
        """Journal ``exc`` as this call's outcome, so a replay raises it again."""
        self.record(
            "failed", serde_errors.dump_error(exc), attempts=attempts, started=started, meta=meta
        )

    def __repr__(self) -> str:
        state = "replayed" if self.replayed else "intent" if self.has_intent else "new"
        return f"<DurableCall {self.kind} {self.key!r} @{self.position} {state}>"
