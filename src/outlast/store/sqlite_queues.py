"""Queue limits for SQLite claims: counted inside the claiming IMMEDIATE transaction.

SQLite's write lock serializes claimers across processes, so counts read in the claim
transaction stay exact until it commits.

Candidates are read in batches that leave out what the limits already block (full queues,
full concurrency keys): a saturated limited queue in front of the claim order must not hide
the runnable runs behind it (head-of-line blocking).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from .base import QueueSpec
from .queue_limits import QueueLoad, blocked_by_limits, has_limits


def pick(
    conn: sqlite3.Connection,
    where: str,
    params: dict[str, Any],
    specs: Mapping[str, QueueSpec],
    limit: int,
) -> list[str]:
    """The ids of up to ``limit`` runs matching ``where`` that the limits in ``specs`` admit,
    in claim order; queues not in ``specs`` (or without limits) are unlimited.

    ``params`` holds ``now``, ``owner`` and, when stealing, ``steal``: the steal victim's runs
    (a dead process on this host) do not count against the limits, or a dead run would hold
    its own slot until its lease expired. Call :func:`started` for the claimed runs.
    """
    loads = _loads(conn, params, {n: s for n, s in specs.items() if has_limits(s)})
    picked: list[str] = []
    seen: list[str] = []
    while len(picked) < limit:
        blocked, keys = blocked_by_limits(loads)
        batch = conn.execute(
            f"SELECT run_id, queue, concurrency_key FROM outlast_runs WHERE {where} "
            "AND run_id NOT IN (SELECT value FROM json_each(:seen)) "
            "AND queue NOT IN (SELECT value FROM json_each(:blocked)) "
            "AND NOT EXISTS (SELECT 1 FROM json_each(:keys) AS b "
            "  WHERE json_extract(b.value, '$[0]') = queue "
            "  AND json_extract(b.value, '$[1]') = concurrency_key) "
            "ORDER BY priority DESC, created_at, run_id LIMIT :batch",
            {**params, "seen": json.dumps(seen), "blocked": json.dumps(blocked),
             "keys": json.dumps(keys), "batch": limit - len(picked)},
        ).fetchall()
        if not batch:
            break
        for run_id, queue, key in batch:
            seen.append(run_id)
            load = loads.get(queue)
            if load is None or load.admit(key):
                picked.append(run_id)
    return picked


def _loads(
    conn: sqlite3.Connection, params: dict[str, Any], specs: Mapping[str, QueueSpec]
) -> dict[str, QueueLoad]:
    loads = {name: QueueLoad(spec) for name, spec in specs.items()}
    if not loads:
        return loads
    names = json.dumps(sorted(loads))
    # an expired lease does not count (past the claim's grace): that run is claimable, and
    # counts once claimed
    rows = conn.execute(
        "SELECT queue, concurrency_key, count(*), sum(owner = :owner) FROM outlast_runs "
        "WHERE status = 'running' AND lease_expires_at >= :expired "
        "AND queue IN (SELECT value FROM json_each(:names)) AND owner IS NOT :steal "
        "GROUP BY queue, concurrency_key",
        {"owner": params["owner"], "expired": params.get("expired", params["now"]),
         "steal": params.get("steal"), "names": names},
    ).fetchall()
    for queue, key, count, mine in rows:
        loads[queue].add(key, int(count), int(mine or 0))
    for name, load in loads.items():
        if load.spec.rate_limit is not None:
            row = conn.execute(
                "SELECT count(*) FROM outlast_queue_starts WHERE queue = ? AND started_at > ?",
                (name, params["now"] - load.spec.rate_period),
            ).fetchone()
            load.starts = int(row[0])
    return loads


def started(
    conn: sqlite3.Connection, specs: Mapping[str, QueueSpec], queues: list[str], now: float
) -> None:
    """Count the claims of runs in ``queues`` against their rate limits (a sliding window;
    starts are kept for two periods)."""
    for queue in queues:
        spec = specs.get(queue)
        if spec is not None and spec.rate_limit is not None:
            conn.execute(
                "INSERT INTO outlast_queue_starts (queue, started_at) VALUES (?, ?)", (queue, now)
            )
            conn.execute(
                "DELETE FROM outlast_queue_starts WHERE queue = ? AND started_at < ?",
                (queue, now - spec.rate_period * 2),
            )
