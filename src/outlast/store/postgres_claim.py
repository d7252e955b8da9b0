"""Claiming runs on PostgreSQL: ``FOR UPDATE SKIP LOCKED``, and queue limits held fleet-wide.

A mixin of :class:`~outlast.store.postgres.PostgresStore` (it uses the store's ``_run``
retry wrapper, its queries ``_q`` and its ``schema``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .base import QueueSpec, RunRecord
from .postgres_sql import RUNNABLE, Queries, QueueLoad, blocked_by_limits, has_limits

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[tuple[Any, ...]]

T = TypeVar("T")


class PostgresClaims:
    """``claim()`` for the PostgreSQL store."""

    _q: Queries
    schema: str

    if TYPE_CHECKING:

        def _run(self, op: Callable[[Conn, bool], T]) -> T: ...

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
    ) -> list[RunRecord]:
        if limit < 1:
            return []
        where = [RUNNABLE]
        if steal_from is not None:
            where = [f"({RUNNABLE} OR (status = 'running' AND owner = %(steal_from)s))"]
        if run_id is not None:
            where.append("run_id = %(run_id)s")
        if workflows is not None:
            where.append("workflow = ANY(%(workflows)s::text[])")
        names = list(workflows) if workflows is not None else None
        params = {"owner": owner, "lease": float(lease), "limit": limit, "workflows": names}
        params.update(run_id=run_id, steal_from=steal_from)
        limited = {name: spec for name, spec in (queues or {}).items() if has_limits(spec)}
        if limited:
            rows = self._run(lambda c, _: self._claim_limited(c, where, params, limited))
        else:
            sql = self._q.claim_simple.replace("{where}", " AND ".join(where))
            rows = self._run(lambda c, _: c.execute(sql, params).fetchall())
        claimed = [RunRecord(*row) for row in rows]
        claimed.sort(key=lambda r: (-r.priority, r.created_at, r.run_id))
        return claimed

    def _claim_limited(
        self,
        conn: Conn,
        where: list[str],
        params: dict[str, Any],
        specs: dict[str, QueueSpec],
    ) -> list[tuple[Any, ...]]:
        """Claim under queue limits: the limited queues are locked (in name order, so two
        claimers cannot deadlock) for the whole transaction, so the counts stay exact until
        the claims commit and two workers cannot both take a queue's last slot."""
        q = self._q
        names = sorted(specs)
        periods = [specs[n].rate_period for n in names]
        with conn.transaction():
            conn.execute(q.lock_queues, {"schema": self.schema, "names": names})
            loads = {name: QueueLoad(specs[name]) for name in names}
            running = conn.execute(q.queue_running, {"names": names, "owner": params["owner"]})
            for queue, key, count, mine in running.fetchall():
                loads[queue].add(key, count, mine)
            if any(spec.rate_limit is not None for spec in specs.values()):
                starts = conn.execute(q.queue_starts, {"names": names, "periods": periods})
                for queue, count in starts.fetchall():
                    loads[queue].starts = count
            picked: list[str] = []
            started: list[str] = []
            seen: list[str] = []
            # Each batch excludes what the limits already block; a batch row refused because
            # an earlier row of the same batch filled its slot is excluded from the next one.
            while len(picked) < params["limit"]:
                blocked, keys = blocked_by_limits(loads)
                filters = where + [
                    "run_id <> ALL(%(seen)s::text[])",
                    "queue <> ALL(%(blocked)s::text[])",
                    """NOT EXISTS (SELECT 1 FROM unnest(%(bq)s::text[], %(bk)s::text[]) AS b(q, k)
                        WHERE b.q = runs.queue AND b.k = runs.concurrency_key)""",
                ]
                sql = q.claim_candidates.replace("{where}", " AND ".join(filters))
                more = {"limit": params["limit"] - len(picked), "seen": seen, "blocked": blocked}
                more.update(bq=[k[0] for k in keys], bk=[k[1] for k in keys])
                batch = conn.execute(sql, {**params, **more}).fetchall()
                if not batch:
                    break
                for candidate, queue, key in batch:
                    seen.append(candidate)
                    load = loads.get(queue)
                    if load is None:
                        picked.append(candidate)
                    elif load.admit(key):
                        picked.append(candidate)
                        if load.spec.rate_limit is not None:
                            started.append(queue)
            if not picked:
                return []
            rows = conn.execute(q.claim_ids, {**params, "ids": picked}).fetchall()
            if started:
                conn.execute(q.record_starts, {"queues": started})
                conn.execute(q.forget_starts, {"names": names, "periods": periods})
            return rows

