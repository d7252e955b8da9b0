"""The replay decisions: which recorded entry answers a durable call, or that none does.

Pure logic with no I/O. The engine gives a run's recorded entries to :class:`Journal` when
it starts executing the run, then asks :meth:`Journal.next_call` for every durable call the
workflow makes (a step, ``ctx.now()``, a wait...). The answer is the call's identity
(position, key, occurrence number) and the recorded entry if there is one. When the code
asks for something other than what the journal holds at that point, the answer is a
:class:`~outlast.errors.NonDeterminismError` that names the run, the position, what was
recorded and what was called.

Identity: a call's key is ``"{name}:{n}"`` where ``n`` counts the calls of that name made
without an explicit key, from 1; a caller may give an explicit key instead
(``"{name}:{key}"``, e.g. a tool-call id, or a child's run id for its result), so identity
does not depend on the order in which parallel calls were made, and keyed calls do not shift
the numbering of the others.

Evolution (see docs/versioning.md): the journal also knows the run's *frontier*, the last
unrecorded call an earlier execution stopped at (a ``wait_for`` without timeout records
nothing until its event comes), so a call changed or inserted right there diverges too, and
``ctx.patched`` can tell a run that already passed a point (old path) from one that reaches
it for the first time (new path).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import NonDeterminismError
from .store.base import Entry


@dataclass(slots=True)  # not frozen: built for every durable call, and frozen costs ~1 us
class Call:
    """The identity of one durable call and the entry recorded for it, if any."""

    position: int
    key: str
    occurrence: int
    entry: Entry | None


#: what a divergence message says about the way out (true: the run fails on it)
_FIX = (
    "The run fails with this error. Three ways out (docs/versioning.md): guard the change "
    "with `if ctx.patched(\"change-id\"):` so runs recorded before it keep the old path; "
    "check a deploy against recorded runs first with `outlast replay MODULE:APP`; and for "
    "this run, restore the old code (or add the patch) and `outlast retry {run_id}`, or "
    "start over from an earlier point with `outlast fork {run_id} CHECKPOINT` (see "
    "`outlast checkpoints {run_id}`)"
)

#: the journal kind of a patch marker (``ctx.patched``)
PATCH_KIND = "patch"


@dataclass(frozen=True, slots=True)
class Frontier:
    """The last call an earlier execution of the run made, kept in the run's stats: where
    a replay of new code must still call the same thing even though nothing was recorded."""

    position: int
    kind: str
    name: str
    key: str
    #: an explicitly keyed call (a child's result, a keyed tool call): not order-bound
    keyed: bool = False

    def dump(self) -> list[Any]:
        return [self.position, self.kind, self.name, self.key, self.keyed]

    @classmethod
    def load(cls, data: Any) -> Frontier | None:
        """The frontier stored by :meth:`dump`, or None for anything else."""
        if not isinstance(data, list) or len(data) != 5 or not isinstance(data[0], int):
            return None
        return cls(data[0], str(data[1]), str(data[2]), str(data[3]), bool(data[4]))


class Journal:
    """A run's recorded entries, walked in call order."""

    __slots__ = (
        "run_id", "_by_position", "_by_key", "_counts", "position", "replayed", "_reached",
        "_start", "frontier", "_frontier_at", "last", "_horizon", "_patches",
    )

    def __init__(
        self,
        run_id: str,
        entries: list[Entry],
        start: int = 0,
        counts: dict[str, int] | None = None,
        frontier: Frontier | None = None,
    ) -> None:
        self.run_id = run_id
        self._by_position = {e.position: e for e in entries}
        self._by_key = {e.key: e for e in entries}
        # Resuming from a snapshot: occurrence numbers go on where the snapshot left them.
        self._counts: dict[str, int] = dict(counts or {})
        #: the position the next call gets
        self.position = start
        #: entries answered from the journal so far (what resuming saved)
        self.replayed: list[Entry] = []
        #: keys of recorded entries some call reached (replayed, or an intent taken up)
        self._reached: set[str] = set()
        #: recorded entries before this position are accounted for (a snapshot, a graph seek)
        self._start = start
        #: where an earlier execution stopped (from the run's stats), if known
        self.frontier = frontier
        #: the frontier's position (-1: none), checked by every call made for the first time
        self._frontier_at = -1 if frontier is None else frontier.position
        #: the last call this execution made, as Frontier fields (see :meth:`reached`)
        self.last: tuple[int, str, str, str, bool] | None = None
        #: the furthest position an earlier execution is known to have reached
        self._horizon = max(
            max(self._by_position, default=-1), frontier.position if frontier else -1
        )
        #: ctx.patched decisions of this execution, by patch id
        self._patches: dict[str, bool] = {}

    def next_call(
        self,
        kind: str,
        name: str,
        args_hash: str | None,
        key: str | None = None,
        preview: Callable[[], str] | None = None,
    ) -> Call:
        """Assign the next call its identity and find its recorded entry.

        Raises NonDeterminismError when the entry recorded at this position (or under this
        explicit key) is of another kind or name, or was called with other arguments.
        """
        return Call(*self.take(kind, name, args_hash, key, preview))

    def take(
        self,
        kind: str,
        name: str,
        args_hash: str | None,
        key: str | None = None,
        preview: Callable[[], str] | None = None,
    ) -> tuple[int, str, int, Entry | None]:
        """:meth:`next_call` as a plain ``(position, key, occurrence, entry)`` tuple: the
        hot path of every durable call (:meth:`outlast.context.RunState.begin`), which builds
        its own call object and has no use for a :class:`Call` in between."""
        position = self.position
        self.position = position + 1
        if key is None:
            # Only calls without an explicit key are numbered: a child's result (keyed by the
            # child's id) or a keyed tool call does not shift the next default key.
            occurrence = self._counts.get(name, 0) + 1
            self._counts[name] = occurrence
            full_key = f"{name}:{occurrence}"
            entry = self._by_position.get(position)
            if entry is None:
                if position == self._frontier_at:
                    self._check_frontier(kind, name, full_key)
            elif entry.key != full_key:
                raise self._diverged(position, entry, kind, name, full_key)
        else:
            occurrence = 0
            full_key = f"{name}:{key}"
            entry = self._by_key.get(full_key)
        self.last = (position, kind, name, full_key, key is not None)
        if entry is not None:
            if entry.kind != kind or entry.name != name:
                raise self._diverged(position, entry, kind, name, full_key)
            if args_hash is not None and entry.args_hash is not None and entry.args_hash != args_hash:
                raise self._other_arguments(position, entry, kind, name, full_key, args_hash, preview)
            self._reached.add(full_key)
            if entry.status != "intent":
                self.replayed.append(entry)
        return position, full_key, occurrence, entry

    def _other_arguments(
        self,
        position: int,
        entry: Entry,
        kind: str,
        name: str,
        key: str,
        args_hash: str,
        preview: Callable[[], str] | None,
    ) -> NonDeterminismError:
        was, now = _recorded_preview(entry), preview() if preview is not None else None
        if was is not None and now is not None:
            shown = f"recorded with arguments {was}, but the code passes {now} now"
        elif now is not None:
            shown = (f"recorded with other arguments than {now}, which the code passes now "
                     "(this entry keeps only their fingerprint)")
        else:
            shown = "recorded with other arguments than the code passes now"
        return NonDeterminismError(
            f"run {self.run_id!r} diverged from its journal at position {position}: "
            f"{kind} {name!r} ({key}) was {shown}. Calls must be deterministic given earlier "
            f"results; if the change is intended, start a new run (new run id). {self._fix()}",
            run_id=self.run_id,
            position=position,
            recorded=f"{entry.kind} {entry.name!r}{was or ''} args#{entry.args_hash}",
            called=f"{kind} {name!r}{now or ''} args#{args_hash}",
        )

    def _diverged(
        self, position: int, entry: Entry, kind: str, name: str, key: str
    ) -> NonDeterminismError:
        recorded = f"{entry.kind} {entry.name!r} ({entry.key})"
        called = f"{kind} {name!r} ({key})"
        return NonDeterminismError(
            f"run {self.run_id!r} diverged from its journal at position {position}: the "
            f"journal recorded {recorded} but the code called {called}. The workflow code "
            "changed, or branches on something not recorded (time, randomness, environment: "
            f"use ctx.now(), ctx.random(), or a step). {self._fix()}",
            run_id=self.run_id,
            position=position,
            recorded=recorded,
            called=called,
        )

    def reached(self) -> Frontier | None:
        """The frontier to keep for the next execution: the furthest last call known, this
        execution's or an earlier one's (an execution stopped early, by a shutdown say,
        does not move it back)."""
        last = Frontier(*self.last) if self.last is not None else None
        old = self.frontier
        if last is None or (old is not None and old.position > last.position):
            return old
        return last

    def _fix(self) -> str:
        return _FIX.format(run_id=self.run_id)

    def _check_frontier(self, kind: str, name: str, key: str) -> None:
        """A call with no recorded entry at the position where an earlier execution stopped
        must be the call it stopped at (a keyed call there is not order-bound: no check)."""
        f = self.frontier
        assert f is not None
        if f.keyed or (f.kind, f.name, f.key) == (kind, name, key):
            return
        recorded = f"{f.kind} {f.name!r} ({f.key}), not finished yet"
        called = f"{kind} {name!r} ({key})"
        raise NonDeterminismError(
            f"run {self.run_id!r} diverged from its journal at position {f.position}: its last "
            f"execution stopped there at {recorded}, but the code now calls {called}. A call "
            f"was added, removed or changed before the point where the run waits. {self._fix()}",
            run_id=self.run_id,
            position=f.position,
            recorded=recorded,
            called=called,
        )

    # -- patches (ctx.patched) -----------------------------------------------------------------

    def patch(self, patch_id: str) -> tuple[bool, Call | None]:
        """Decide ``ctx.patched(patch_id)``: ``(taken, call)``.

        A marker recorded at this position: taken, ``call`` is its replay. Another entry
        here, or a point an earlier execution already passed without a marker: not taken
        (the run keeps the old path) and nothing is consumed. New ground: taken, and
        ``call`` is the marker to record. A patch id decided earlier in this execution
        answers the same again and consumes nothing (``call`` None).
        """
        if patch_id in self._patches:
            return self._patches[patch_id], None
        position = self.position
        key = f"{PATCH_KIND}:{patch_id}"
        entry = self._by_position.get(position)
        if entry is not None:
            taken = entry.kind == PATCH_KIND and entry.key == key  # else: another call here
        else:
            taken = position > self._horizon  # else: an earlier execution went past here
        self._patches[patch_id] = taken
        if not taken:
            return False, None
        self.position += 1
        if entry is not None:
            self._reached.add(key)
            self.replayed.append(entry)
        self.last = (position, PATCH_KIND, patch_id, key, False)
        return True, Call(position, key, 0, entry)

    def deprecated_patch(self, patch_id: str) -> Entry | None:
        """``ctx.deprecate_patch(patch_id)``: consume the marker recorded at this position,
        if any (runs that took the patch replay), else nothing (nothing is recorded)."""
        entry = self._by_position.get(self.position)
        key = f"{PATCH_KIND}:{patch_id}"
        if entry is None or entry.kind != PATCH_KIND or entry.key != key:
            return None
        self.position += 1
        self._reached.add(key)
        self.replayed.append(entry)
        return entry

    def skip(self, positions: int, keys: Iterable[str] = ()) -> None:
        """Pass over calls made inside a replayed call that answers for them (a framework
        tool whose result is journaled, with the waits and model calls it made): they keep
        their ``positions``, and the entries of ``keys`` count as reached and replayed."""
        self.position += positions
        for key in keys:
            entry = self._by_key.get(key)
            if entry is not None and key not in self._reached:
                self._reached.add(key)
                if entry.status != "intent":
                    self.replayed.append(entry)

    def counts(self) -> dict[str, int]:
        """Calls made so far per name (saved with a snapshot, so keys stay stable)."""
        return dict(self._counts)

    def recorded(self, kind: str) -> list[Entry]:
        """The recorded entries of ``kind``, in position order (a graph's node entries)."""
        return sorted((e for e in self._by_key.values() if e.kind == kind), key=lambda e: e.position)

    def mark(self) -> tuple[int, dict[str, int]]:
        """Where numbering stands: the next position, and the calls counted per name."""
        return self.position, dict(self._counts)

    def seek(self, position: int, counts: dict[str, int]) -> None:
        """Continue numbering from a :meth:`mark`, skipping calls that will not be made again
        (a resumed graph restores its state instead of re-running its completed nodes)."""
        self.position = position
        self._counts = dict(counts)
        self._start = max(self._start, position)

    def pending_keys(self) -> list[str]:
        """Keys of recorded entries that no call has reached yet (for diagnostics)."""
        return [k for k in self._by_key if k not in self._reached]

    def check_complete(self) -> None:
        """Raise NonDeterminismError when the workflow finished without reaching entries the
        journal recorded (a step removed from the end of the code, say): the recorded run and
        this code disagree, even though no call diverged."""
        left = sorted(
            (e for e in self._by_key.values() if e.key not in self._reached and e.position >= self._start),
            key=lambda e: e.position,
        )
        if not left:
            return
        first = left[0]
        recorded = f"{first.kind} {first.name!r} ({first.key})"
        more = f" and {len(left) - 1} more" if len(left) > 1 else ""
        raise NonDeterminismError(
            f"run {self.run_id!r} diverged from its journal at position {first.position}: the "
            f"journal recorded {recorded}{more} but the workflow finished without calling it. "
            f"The workflow code changed (a call was removed or skipped). {self._fix()}",
            run_id=self.run_id,
            position=first.position,
            recorded=recorded,
            called="the end of the workflow",
        )


def _recorded_preview(entry: Entry) -> str | None:
    """The arguments' preview recorded with ``entry`` (None: none kept, or unreadable)."""
    if not entry.meta or '"args"' not in entry.meta:
        return None
    try:
        found = json.loads(entry.meta).get("args")
    except (ValueError, AttributeError):  # sealed facts without the key, or not an object
        return None
    return found if isinstance(found, str) else None
