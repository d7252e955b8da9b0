"""Snapshots: ``ctx.stash`` with ``@workflow.on_recovered`` (the fiber pattern), and
``ctx.continue_as_new`` (bounded history).

A run's snapshot column holds its restart point, as one serialized document:

- ``continued``: the arguments of the current generation after ``continue_as_new`` (the run's
  stored ``input`` keeps the original arguments, so ``app.run(wf, *original, run_id=...)``
  still names the same run);
- ``stash``: the user's last stashed value, with the journal's per-name call counts at that
  moment (so calls after the stash keep the keys they had when first executed).

``store.stash`` writes the document and deletes the journal entries before its position in
one fenced transaction; that write is the commit point of both operations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from . import serde
from .errors import ConfigurationError, ContinueAsNew, Pause
from .store.base import RunRecord

if TYPE_CHECKING:
    from .context import Context, RunState
    from .workflow import Workflow


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where an execution of a run starts: journal position, call counts, arguments, stash."""

    start: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    continued: list[Any] | None = None  # [args, kwargs] of the current generation
    has_stash: bool = False
    stash: Any = None
    #: 1, plus one per continue_as_new: identities that leave the journal (child run ids,
    #: idempotency keys) carry it, so iterations never repeat one another's
    generation: int = 1


#: where a run without a snapshot starts (shared: a frozen dataclass costs ~10,000
#: instructions to build, and its ``counts`` is only ever copied, by the Journal)
_START = ResumePoint()


def resume_point(run: RunRecord) -> ResumePoint:
    """Read the run's snapshot (none: start at the top with the stored input)."""
    if run.snapshot is None:
        return _START
    doc = serde.loads(run.snapshot, what=f"snapshot of run {run.run_id!r}")
    stash = doc.get("stash")
    return ResumePoint(
        start=run.snapshot_position or 0,
        counts=dict(stash["counts"]) if stash else {},
        continued=doc.get("continued"),
        has_stash=stash is not None,
        stash=stash["value"] if stash else None,
        generation=int(doc.get("generation") or 1),
    )


def entry_point(
    wf: Workflow[Any, Any], run: RunRecord, ctx: Context, point: ResumePoint
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """What the engine calls for this execution: the workflow, or its recovery handler."""
    if point.continued is not None:
        args, kwargs = tuple(point.continued[0]), dict(point.continued[1])
    else:
        args, kwargs = serde.decode_args(run.input)
    if point.has_stash:
        if wf.recovery_handler is None:
            raise Pause(
                f"run {run.run_id!r} stashed a snapshot but workflow {wf.name!r} has no "
                "@workflow.on_recovered handler in this code; register one, then "
                f"`outlast resolve {run.run_id} --redo`",
                reason=f"snapshot without on_recovered handler for {wf.name!r}",
            )
        return wf.recovery_handler, (ctx, point.stash, *args), kwargs
    return wf.fn, ((ctx, *args) if wf.takes_ctx else args), kwargs


def _write(
    state: RunState, continued: list[Any] | None, stash: dict[str, Any] | None, generation: int
) -> None:
    doc = {"continued": continued, "stash": stash, "generation": generation}
    data = serde.dumps(doc, what=f"snapshot of run {state.run_id!r}")
    state.check()
    state.write(state.store.stash, state.run_id, state.epoch, data, state.journal.position)


def stash(state: RunState, value: Any) -> None:
    """``ctx.stash``: see :meth:`~outlast.Context.stash`."""
    wf = state.app._workflow_for(state.run)
    if wf.recovery_handler is None:
        # Stashing compacts the journal, so replaying from the top could no longer work.
        raise ConfigurationError(
            f"ctx.stash in workflow {wf.name!r}: register a recovery handler first "
            f"(@{wf.fn.__name__}.on_recovered), which a resumed run calls with the snapshot"
        )
    serde.dumps(value, what=f"value stashed by run {state.run_id!r}")  # fail before writing
    _write(
        state, resume_point(state.run).continued,
        {"value": value, "counts": state.journal.counts()}, state.generation,
    )


def continue_as_new(state: RunState, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NoReturn:
    """``ctx.continue_as_new``: drop the journal, keep the run id, restart with new arguments."""
    serde.encode_args(args, kwargs, what=f"arguments of continue_as_new in run {state.run_id!r}")
    _write(state, [list(args), kwargs], None, state.generation + 1)
    raise ContinueAsNew(
        f"run {state.run_id!r} continues as new", wake_at=time.time(), run_id=state.run_id
    )
