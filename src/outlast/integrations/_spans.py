"""Spans of the work the framework adapters execute (see :mod:`outlast.telemetry`).

The adapters call outlast's telemetry hooks only for units they run: a unit answered from
the journal reaches none of this, so a resumed run reports only its new work. No framework
or OpenTelemetry import here: with telemetry off every hook is the shared no-op.
"""

from __future__ import annotations

from typing import Any

from ..telemetry import executing

__all__ = ["executing", "gen_ai_meta"]


def gen_ai_meta(
    meta: dict[str, Any], response_id: object = None, finish_reason: object = None
) -> dict[str, Any]:
    """A journaled model call's ``meta`` with what its span reports beside it: the response's
    id and finish reason (read from the framework's response, not journaled in ``meta``)."""
    out = dict(meta)
    if isinstance(response_id, str) and response_id:
        out["response_id"] = response_id
    if isinstance(finish_reason, str) and finish_reason:
        out["finish_reasons"] = [finish_reason]
    return out
