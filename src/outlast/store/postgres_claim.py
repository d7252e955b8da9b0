"""Claiming runs on PostgreSQL: ``FOR UPDATE SKIP LOCKED``, and queue limits held fleet-wide.

Every claim is one statement, so no claim holds a lock across a client round trip: a worker
that freezes or is cut off after sending its claim cannot stop the others (see
:mod:`~outlast.store.postgres_admission` for the limited case).

A mixin of :class:`~outlast.store.postgres.PostgresStore` (it uses the store's ``_run``
retry wrapper, its queries ``_q`` and its ``schema``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .base import QueueSpec, RunRecord
from .postgres_sql import RUNNABLE, Queries
from .queue_limits import has_limits

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

T = TypeVar("T")


class PostgresClaims:
    """``claim()`` for the PostgreSQL store."""

    _q: Queries
    schema: str

    if TYPE_CHECKING:

        def _run(
            self, op: Callable[[Conn, bool], T], *, retry: Callable[[bool], bool] | None = None
        ) -> T: ...

    def claim(
        self,
        owner: str,
        lease: float,
        *,
        run_id: str | None = None,
        steal_from: str | None = None,
        workflows: Iterable[str] | None = None,
        queues: Mapping[str, QueueSpec] | None = None,
        limit: int = 1,
        in_queues: Iterable[str] | None = None,
        grace: float = 0.0,
    ) -> list[RunRecord]:
        if limit < 1:
            return []
        names = list(workflows) if workflows is not None else None
        params: dict[str, Any] = {
            "owner": owner, "lease": float(lease), "limit": limit, "grace": max(0.0, float(grace)),
        }
        only = list(in_queues) if in_queues is not None else None
        params.update(workflows=names, run_id=run_id, steal_from=steal_from, in_queues=only)
        limited = {
            name: spec for name, spec in (queues or {}).items()
            if has_limits(spec) and (only is None or name in only)
        }
        if limited:
            params.update(_limit_params(self.schema, limited))
            sql = self._q.claim_limited
        else:
            where = [RUNNABLE]
            if steal_from is not None:
                where = [f"({RUNNABLE} OR (status = 'running' AND owner = %(steal_from)s))"]
            if run_id is not None:
                where.append("run_id = %(run_id)s")
            if workflows is not None:
                where.append("workflow = ANY(%(workflows)s::text[])")
            if only is not None:
                where.append("queue = ANY(%(in_queues)s::text[])")
            sql = self._q.claim_simple.replace("{where}", " AND ".join(where))
        # Retried through a blip only: after a fault longer than a third of the lease, other
        # owners' leases may have run out while they could not renew them, and a claim made
        # the moment the database is back would take their runs (and their steps in flight)
        # over. The fault goes to the caller instead; a worker then waits a heartbeat first.
        first = time.monotonic()
        rows = self._run(
            lambda c, _: c.execute(sql, params).fetchall(),
            retry=lambda unsent: time.monotonic() - first < lease / 3,
        )
        claimed = [RunRecord(*row) for row in rows]
        claimed.sort(key=lambda r: (-r.priority, r.created_at, r.run_id))
        return claimed


def _limit_params(schema: str, specs: Mapping[str, QueueSpec]) -> dict[str, Any]:
    """``claim_limited``'s arguments: the queues in name order (its lock order), each limit
    as an array that follows the names (NULL: that limit is not set)."""
    names = sorted(specs)
    ordered = [specs[n] for n in names]
    return {
        "schema": schema,
        "names": names,
        "conc": [s.concurrency for s in ordered],
        "worker": [s.worker_concurrency for s in ordered],
        "rate": [s.rate_limit for s in ordered],
        "period": [float(s.rate_period) for s in ordered],
        "keyc": [s.key_concurrency for s in ordered],
    }
