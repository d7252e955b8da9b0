"""What callers get back about runs: the :class:`Run` handle and :class:`RunInfo` snapshots."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import serde
from .store.base import Entry, RunRecord

if TYPE_CHECKING:
    from .app import App

__all__ = ["Run", "RunInfo", "StepInfo"]

R = TypeVar("R")


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
                exc = serde.load_error(entry.output, step=entry.name)
                error = f"{type(exc).__name__}: {exc}"
            except Exception as bad:  # a corrupted row must not hide the rest of the run
                error = f"<unreadable error: {bad}>"
        meta = json.loads(entry.meta) if entry.meta else {}
        return cls(
            entry.name, entry.kind, entry.key, entry.position, entry.status, entry.attempts,
            entry.started_at, entry.ended_at, error, meta,
        )


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
        return serde.load_error(self._error)

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
        return cls(
            run.run_id, run.workflow, run.status, run.created_at, run.started_at, run.ended_at,
            run.queue, run.parent_id, run.reason, run.recoveries,
            json.loads(run.stats) if run.stats else {},
            [StepInfo.from_entry(e) for e in entries or []],
            run.output, run.error, blobs,
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
