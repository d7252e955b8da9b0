"""What callers get back about runs: the :class:`Run` handle and :class:`RunInfo` snapshots."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import serde, serde_errors
from .errors import UnreadableValue
from .store.base import Entry, RunRecord, entry_meta

if TYPE_CHECKING:
    from .app import App

__all__ = ["Run", "RunInfo", "StepInfo"]

R = TypeVar("R")
#: the journal kind of a recorded model call (outlast.llm.record.KIND)
LLM_KIND = "llm"
#: stats that count things, shown as ints
#: keys of a run's stats that are not figures: the engine's frontier (outlast.journal), and
#: a fork's origin (outlast.evolution)
FRONTIER, FORKED_FROM = "frontier", "forked_from"
COUNTS = ("llm_calls", "last_llm_calls", "tokens", "last_tokens", "saved_steps", "saved_tokens",
          "recoveries_seen")


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One journal entry of a run, as shown by ``outlast show``."""

    name: str
    kind: str
    key: str
    position: int
    status: str
    attempts: int
    started_at: float
    ended_at: float | None
    error: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        """Seconds from the first attempt's start to the recorded outcome."""
        return None if self.ended_at is None else max(0.0, self.ended_at - self.started_at)

    @classmethod
    def from_entry(cls, entry: Entry) -> StepInfo:
        error = None
        if entry.status == "failed" and entry.output is not None:
            try:
                exc = serde_errors.load_error(entry.output, step=entry.name)
                error = f"{type(exc).__name__}: {exc}"
            except Exception as bad:  # a corrupted row must not hide the rest of the run
                error = f"<unreadable error: {bad}>"
        try:
            meta = entry_meta(entry)
        except UnreadableValue as exc:  # encrypted, read without the key: the rest still shows
            meta = {"unreadable": str(exc)}
        return cls(
            entry.name, entry.kind, entry.key, entry.position, entry.status, entry.attempts,
            entry.started_at, entry.ended_at, error, meta,
        )


def accounting(stored: str | None, entries: list[Entry] | None) -> dict[str, Any]:
    """The run's stats, with one definition of what it spent on model calls.

    ``llm_calls``, ``tokens``, ``cost``: what the run spent in all, summed over the model
    calls recorded in its journal (completed or failed, whatever became of the execution that
    made them: a SIGKILLed one never wrote its figures). Computed here when the journal is
    loaded (``app.get_run``, ``outlast show``); without it (``list_runs``), the totals written
    when the last execution ended. ``last_llm_calls``, ``last_tokens``, ``last_cost``: what
    the last execution that ended spent. Counts are ints.
    """
    stats: dict[str, Any] = json.loads(stored) if stored else {}
    calls = [e for e in entries or () if e.kind == LLM_KIND]
    if calls or (entries is not None and "llm_calls" in stats):
        stats["llm_calls"] = len(calls)
        stats["tokens"] = stats["cost"] = 0
        for entry in calls:
            try:
                meta = entry_meta(entry)
            except UnreadableValue:  # encrypted, read without the key
                continue
            for name in ("tokens", "cost"):
                if isinstance(meta.get(name), int | float):
                    stats[name] += meta[name]
    for name in COUNTS:
        if isinstance(stats.get(name), float) and stats[name].is_integer():
            stats[name] = int(stats[name])
    return stats


def shown_stats(
    stored: str | None, entries: list[Entry] | None = None
) -> tuple[dict[str, Any], str | None, str | None]:
    """The run's stats as people and scripts see them, and its fork origin.

    The stats column also holds bookkeeping that is not a figure: the engine's frontier
    (dropped here) and a fork's origin ``{"run", "checkpoint"}`` (returned apart, as
    ``forked_from`` and ``forked_at``). The one reader of that column for :class:`RunInfo`,
    ``outlast show --json``, ``outlast serve`` and ``outlast ui``. Figures: :func:`accounting`.
    """
    try:
        stats = accounting(stored, entries)
    except (ValueError, TypeError, AttributeError):  # an unreadable column must not hide the run
        stats = {}
    stats.pop(FRONTIER, None)
    origin = stats.pop(FORKED_FROM, None)
    if not isinstance(origin, dict):
        return stats, None, None
    run, at = origin.get("run"), origin.get("checkpoint")
    return stats, run if isinstance(run, str) else None, None if at is None else str(at)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as stored, with its steps when loaded by ``app.get_run``."""

    run_id: str
    workflow: str
    status: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    queue: str
    parent_id: str | None
    reason: str | None
    recoveries: int
    stats: dict[str, Any]
    steps: list[StepInfo]
    _output: bytes | None
    _error: bytes | None
    #: fetches blobs a large result refers to (the store's ``get_blobs``)
    _blobs: Callable[[Iterable[str]], Mapping[str, bytes]] | None = None
    #: the run this one was forked from (``app.fork``), and at which checkpoint
    forked_from: str | None = None
    forked_at: str | None = None

    @property
    def result(self) -> Any:
        """The result of a completed run (None otherwise)."""
        if self.status != "completed":
            return None
        return serde.loads(
            self._output or b"null", what=f"result of run {self.run_id!r}", blobs=self._blobs
        )

    @property
    def error(self) -> BaseException | None:
        """The error a failed run ended with (rebuilt when its class is loaded)."""
        if self.status != "failed" or self._error is None:
            return None
        return serde_errors.load_error(self._error)

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or __import__("time").time()) - self.started_at

    @classmethod
    def from_record(
        cls,
        run: RunRecord,
        entries: list[Entry] | None = None,
        blobs: Callable[[Iterable[str]], Mapping[str, bytes]] | None = None,
    ) -> RunInfo:
        stats, forked_from, forked_at = shown_stats(run.stats, entries)
        return cls(
            run.run_id, run.workflow, run.status, run.created_at, run.started_at, run.ended_at,
            run.queue, run.parent_id, run.reason, run.recoveries, stats,
            [StepInfo.from_entry(e) for e in entries or []],
            run.output, run.error, blobs, forked_from, forked_at,
        )


class Run(Generic[R]):
    """A handle on a run: ``run_id``, ``status``, and ``result()`` to wait for its outcome
    (typed by the workflow's result)."""

    __slots__ = ("app", "run_id")

    def __init__(self, app: App, run_id: str) -> None:
        self.app = app
        self.run_id = run_id

    @property
    def status(self) -> str:
        """The run's current status, read from the store."""
        return self.app.get_run(self.run_id, steps=False).status

    def info(self) -> RunInfo:
        """The run as stored now, with its steps."""
        return self.app.get_run(self.run_id)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the run's result (executing it here when it is runnable and unowned).

        Raises what the run ended with, RunPaused, or Timeout after ``timeout`` seconds.
        """
        from .engine import drive

        return drive(self.app, None, self.run_id, timeout=timeout)[1]  # type: ignore[no-any-return]

    async def result_async(self, timeout: float | None = None) -> R:
        """:meth:`result` for async callers."""
        from .engine import drive_async

        return await drive_async(self.app, None, self.run_id, timeout=timeout)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<Run {self.run_id!r}>"
