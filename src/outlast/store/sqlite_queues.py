"""Queue limits for SQLite claims: counted inside the claiming IMMEDIATE transaction.

SQLite's write lock serializes claimers across processes, so counts read in the claim
transaction stay exact until it commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from .base import QueueSpec


class Admission:
    """Queue limits for one claim transaction (the write lock makes the counts exact)."""

    def __init__(
        self, conn: sqlite3.Connection, owner: str, specs: Mapping[str, QueueSpec], now: float
    ) -> None:
        self.conn, self.owner, self.specs, self.now = conn, owner, specs, now
        self.counts: dict[tuple[str, str], int] = {}

    def _count(self, label: str, sql: str, params: tuple[Any, ...]) -> int:
        if (label, repr(params)) not in self.counts:
            self.counts[(label, repr(params))] = int(self.conn.execute(sql, params).fetchone()[0])
        return self.counts[(label, repr(params))]

    def take(self, queue: str, key: str | None) -> bool:
        spec = self.specs.get(queue)
        if spec is None:
            return True
        checks: list[tuple[str, str, tuple[Any, ...], int]] = []
        running = "SELECT count(*) FROM outlast_runs WHERE status = 'running' AND lease_expires_at >= ? AND queue = ?"
        if spec.concurrency is not None:
            checks.append(("q", running, (self.now, queue), spec.concurrency))
        if spec.worker_concurrency is not None:
            checks.append(("w", running + " AND owner = ?", (self.now, queue, self.owner), spec.worker_concurrency))
        if spec.key_concurrency is not None and key is not None:
            checks.append(("k", running + " AND concurrency_key = ?", (self.now, queue, key), spec.key_concurrency))
        if spec.rate_limit is not None:
            checks.append((
                "r",
                "SELECT count(*) FROM outlast_queue_starts WHERE queue = ? AND started_at > ?",
                (queue, self.now - spec.rate_period),
                spec.rate_limit,
            ))
        for label, sql, params, limit in checks:
            if self._count(label, sql, params) >= limit:
                return False
        for label, _sql, params, _limit in checks:
            self.counts[(label, repr(params))] += 1
        return True

    def started(self, queue: str) -> None:
        spec = self.specs.get(queue)
        if spec is not None and spec.rate_limit is not None:
            self.conn.execute(
                "INSERT INTO outlast_queue_starts (queue, started_at) VALUES (?, ?)", (queue, self.now)
            )
            self.conn.execute(
                "DELETE FROM outlast_queue_starts WHERE queue = ? AND started_at < ?",
                (queue, self.now - spec.rate_period * 2),
            )
