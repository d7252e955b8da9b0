"""``ctx.patched`` and ``ctx.deprecate_patch``: changing a workflow while runs are in flight.

A patch marker is a durable call of kind ``"patch"`` whose key is ``patch:{id}``. The
decision is the journal's (:meth:`outlast.journal.Journal.patch`): a run that reaches the
patched point for the first time takes the new path and journals the marker; a run whose
journal was written before the patch (another call recorded at that position, or a point
an earlier execution already passed) keeps the old path, consuming nothing. See
docs/versioning.md for the whole life of a patch (add, deploy, deprecate, remove).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .context import RunState

__all__ = ["deprecate_patch", "patched"]

#: the longest patch id accepted (it goes into a journal key)
MAX_PATCH_ID = 100


def _check_id(patch_id: object, what: str) -> str:
    if not isinstance(patch_id, str) or not patch_id or len(patch_id) > MAX_PATCH_ID:
        raise ConfigurationError(
            f"{what}: the patch id must be a non-empty string of at most {MAX_PATCH_ID} "
            f'characters naming the change (e.g. "audit-before-wait"), got {patch_id!r}'
        )
    return patch_id


def patched(state: RunState, patch_id: str) -> bool:
    """``ctx.patched``: see :meth:`~outlast.Context.patched`."""
    taken, call = state.begin_patch(_check_id(patch_id, "ctx.patched"))
    if call is not None and not call.replayed:
        call.complete(True, large=False)
    return taken


def deprecate_patch(state: RunState, patch_id: str) -> None:
    """``ctx.deprecate_patch``: see :meth:`~outlast.Context.deprecate_patch`."""
    _check_id(patch_id, "ctx.deprecate_patch")
    state.check()
    state.journal.deprecated_patch(patch_id)
