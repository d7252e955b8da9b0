"""Queue-limit arithmetic for a claim: what one limited queue runs now, and which queues and
concurrency keys have no slot left. Pure (no I/O); the SQLite store counts with it inside its
claim transaction. (PostgreSQL does the same arithmetic server-side, in ``claim_limited``.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .base import QueueSpec


@dataclass(slots=True)
class QueueLoad:
    """What one limited queue runs now, counted and then updated within a claim."""

    spec: QueueSpec
    running: int = 0
    mine: int = 0
    starts: int = 0
    keys: dict[str, int] = field(default_factory=dict)

    def add(self, key: str | None, count: int, mine: int) -> None:
        self.running += count
        self.mine += mine
        if key is not None:
            self.keys[key] = count

    def full(self) -> bool:
        spec = self.spec
        return (
            (spec.concurrency is not None and self.running >= spec.concurrency)
            or (spec.worker_concurrency is not None and self.mine >= spec.worker_concurrency)
            or (spec.rate_limit is not None and self.starts >= spec.rate_limit)
        )

    def key_full(self, key: str | None) -> bool:
        limit = self.spec.key_concurrency
        return key is not None and limit is not None and self.keys.get(key, 0) >= limit

    def admit(self, key: str | None) -> bool:
        if self.full() or self.key_full(key):
            return False
        self.running += 1
        self.mine += 1
        self.starts += 1
        if key is not None:
            self.keys[key] = self.keys.get(key, 0) + 1
        return True


def blocked_by_limits(loads: Mapping[str, QueueLoad]) -> tuple[list[str], list[tuple[str, str]]]:
    """Queues with no slot left, and (queue, concurrency key) pairs with none left."""
    queues = [name for name, load in loads.items() if load.full()]
    keys = [(name, key) for name, load in loads.items() for key in load.keys if load.key_full(key)]
    return queues, keys


def has_limits(spec: QueueSpec) -> bool:
    return any(
        limit is not None
        for limit in (
            spec.concurrency,
            spec.worker_concurrency,
            spec.rate_limit,
            spec.key_concurrency,
        )
    )


