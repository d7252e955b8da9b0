"""Recording a new run: its id, its encoded arguments, and the answer when the id exists.

Shared by ``app.run/start/enqueue`` and child workflows. Creating is idempotent per run id:
the same id with the same workflow and arguments names the same run (so a caller that
crashed and calls again resumes it); another workflow or other arguments are a RunConflict.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from . import calls, serde
from .errors import ConfigurationError, RunConflict
from .store.base import NewRun, RunRecord

if TYPE_CHECKING:
    from .app import App
    from .workflow import Workflow

__all__ = ["claimed", "create", "deferrable", "here", "new_run_id", "prepare"]

#: the longest run id accepted (ids go into every journal row and index)
MAX_RUN_ID = 200


def new_run_id() -> str:
    """A fresh run id: 32 hex digits, time-ordered (milliseconds first, then 80 random bits).

    Ordered ids keep the journal's (run_id, key) index appending at its end instead of
    writing into random pages: a random uuid4 made each step's commit about twice as dear.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def create(
    app: App,
    wf: Workflow[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    run_id: str | None,
    queue: str | None,
    priority: int | None,
    concurrency_key: str | None,
    claim: bool,
    parent_id: str | None = None,
) -> tuple[RunRecord, bool, bool]:
    """Store the run unless its id exists: ``(stored run, claimed by this caller, created)``.

    With ``claim`` a new run outside a flow-controlled queue is created already claimed by
    ``app`` (it starts here); a run in a limited queue waits for its turn through claim().
    """
    new = prepare(
        wf, args, kwargs, run_id=run_id, queue=queue, priority=priority,
        concurrency_key=concurrency_key, parent_id=parent_id,
    )
    owned = claim and new.queue not in app.queues
    record, created = app.store.create_run(
        new, owner=app.owner if owned else None, lease=app.lease
    )
    if not created:
        _check_same(record, new, wf.name)
    return record, created and owned, created


def prepare(
    wf: Workflow[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    run_id: str | None,
    queue: str | None,
    priority: int | None,
    concurrency_key: str | None,
    parent_id: str | None = None,
) -> NewRun:
    """The run to record, checked (its id, its arguments against the workflow) and encoded."""
    if run_id is not None and (not isinstance(run_id, str) or not run_id or len(run_id) > MAX_RUN_ID):
        raise ConfigurationError(
            f"run_id must be a non-empty string of at most {MAX_RUN_ID} characters, got {run_id!r}"
        )
    calls.check_arguments(wf, args, kwargs)  # before anything is recorded: the id stays free
    data = serde.encode_args(args, kwargs, what=f"arguments of workflow {wf.name!r}")
    # positional, in NewRun's field order (a class called with keywords costs CPython 3.11
    # ~400 instructions more per keyword: this runs for every run)
    return NewRun(
        run_id or new_run_id(),  # run_id
        wf.name,  # workflow
        data,  # input
        serde.fingerprint(data),  # input_hash
        queue or wf.queue,  # queue
        wf.priority if priority is None else priority,  # priority
        concurrency_key,  # concurrency_key
        parent_id,  # parent_id
    )


def here(
    app: App, wf: Workflow[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
    run_id: str | None, queue: str | None, priority: int | None, concurrency_key: str | None,
) -> tuple[RunRecord, bool, NewRun | None]:
    """A run for ``app.run`` to execute in this process: ``(run, claimed here, unrecorded)``.

    A fresh id (see :func:`deferrable`) is not stored yet: ``unrecorded`` is recorded with
    the run's first journal entry, in one commit. Otherwise the run is created (or found)."""
    if deferrable(app, wf, run_id, queue):
        new = prepare(
            wf, args, kwargs, run_id=None, queue=queue, priority=priority,
            concurrency_key=concurrency_key,
        )
        return claimed(new, app.owner, app.lease), True, new
    record, owned = app._create(
        wf, args, kwargs, run_id=run_id, queue=queue, priority=priority,
        concurrency_key=concurrency_key, claim=True,
    )
    return record, owned, None


def deferrable(app: App, wf: Workflow[Any, Any], run_id: str | None, queue: str | None) -> bool:
    """Whether ``app.run`` may record this run with its first journal entry (one commit less):
    a fresh id (nobody else knows it, so nobody else can create, claim or cancel it) outside
    flow-controlled queues."""
    return run_id is None and (queue or wf.queue) not in app.queues and not app.readonly


def claimed(new: NewRun, owner: str, lease: float) -> RunRecord:
    """The run ``new`` as :meth:`~outlast.store.base.Store.create_run` stores it claimed by
    ``owner``, built here for a run whose creation is deferred."""
    now = time.time()
    return RunRecord(
        new.run_id, new.workflow, "running", new.input, new.input_hash, None, None, new.queue,
        new.priority, new.concurrency_key, new.parent_id, owner, 1, now + lease, None, None,
        None, None, None, None, 0, now, now, None,
    )


def _check_same(record: RunRecord, new: NewRun, workflow: str) -> None:
    rid = new.run_id
    if record.workflow != workflow:
        raise RunConflict(
            f"run id {rid!r} already names a run of workflow {record.workflow!r}, not "
            f"{workflow!r}; choose another run id",
            run_id=rid,
        )
    if record.input_hash != new.input_hash:
        raise RunConflict(
            f"run {rid!r} of {workflow!r} already exists with other arguments "
            f"({_show(record.input)} recorded, {_show(new.input)} now); resume it with the "
            "same arguments, or choose another run id",
            run_id=rid,
        )


def _show(data: bytes, limit: int = 200) -> str:
    text = data.decode("utf-8", "backslashreplace")
    return text if len(text) <= limit else text[: limit - 3] + "..."
