"""How Agent Framework checkpoints sit in outlast's checkpoint table, and their retention.

No ``agent_framework`` import here, so ``outlast prune`` can clear these checkpoints without
the extra installed. One workflow name is one checkpointer thread ``maf:<workflow_name>``
(namespace ``""``): its blobs are referenced once under that thread, however many
checkpoints use them. The row's ``checkpoint_id`` is the checkpoint's UTC timestamp,
fixed width, then ``|`` and the framework's id, so ids sort by time (the framework's
"latest" is the newest timestamp); the framework's id itself is kept in ``run_id``, which is
indexed, so a checkpoint is found by its id alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from ..store.checkpoints import CheckpointStore
from ._rows import reachable

__all__ = ["THREAD_PREFIX", "prune_checkpoints", "row_key", "thread_of", "time_key"]

#: The thread id prefix of every Agent Framework workflow's checkpoints.
THREAD_PREFIX = "maf:"
_BATCH = 500  # framework ids per delete, well under every backend's parameter limit


def thread_of(workflow_name: str) -> str:
    """The checkpointer thread holding ``workflow_name``'s checkpoints."""
    return THREAD_PREFIX + workflow_name


def time_key(moment: datetime) -> str:
    """``moment`` in UTC, fixed width, so that keys sort as times do (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def row_key(timestamp: str, checkpoint_id: str) -> str:
    """The row's ``checkpoint_id`` for a checkpoint of this ISO 8601 timestamp and id."""
    return f"{time_key(datetime.fromisoformat(timestamp))}|{checkpoint_id}"


def prune_checkpoints(
    store: CheckpointStore,
    *,
    older_than: float | None = None,
    workflow_name: str | None = None,
    keep: int = 0,
) -> int:
    """Delete Agent Framework checkpoints, freeing the blobs no remaining one uses.

    Selected: those of ``workflow_name`` (every workflow: None) whose timestamp is before
    ``older_than`` (seconds since the epoch; None: any age), except the ``keep`` newest of
    each workflow. One transaction per workflow (and per 500 checkpoints). Returns the
    number deleted.
    """
    if older_than is None and workflow_name is not None:
        # a whole workflow, or all but its newest: one delete, no listing
        return store.delete_checkpoints(thread_id=thread_of(workflow_name), keep=max(keep, 0),
                                        reachable=reachable)
    before = None if older_than is None else time_key(
        datetime.fromtimestamp(older_than, UTC))
    if workflow_name is None:
        rows = store.find_checkpoints(thread_prefix=THREAD_PREFIX, before=before)
    else:
        rows = store.get_checkpoints(thread_of(workflow_name), before=before)
    doomed: dict[str, list[str]] = {}
    for row in rows:
        if row.run_id is not None:
            doomed.setdefault(row.thread_id, []).append(row.run_id)
    count = 0
    for thread, ids in sorted(doomed.items()):
        for batch in _batches(ids):
            count += store.delete_checkpoints(thread_id=thread, run_ids=batch,
                                              keep=max(keep, 0), reachable=reachable)
    return count


def _batches(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]
