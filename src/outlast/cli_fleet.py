"""``outlast queues``: depth, load and limits of each queue, for operators of a worker fleet."""

from __future__ import annotations

import json
from typing import Any

import click

from .store.base import QueueSpec, QueueStats

LIMITS = ("concurrency", "worker_concurrency", "rate_limit", "key_concurrency")


def _limits(spec: QueueSpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    limits: dict[str, Any] = {k: getattr(spec, k) for k in LIMITS if getattr(spec, k) is not None}
    if spec.rate_limit is not None:
        limits["rate_period"] = spec.rate_period
    return limits


def _describe(limits: dict[str, Any]) -> str:
    if not limits:
        return "unlimited"
    parts = []
    for name, value in limits.items():
        if name == "rate_limit":
            parts.append(f"rate {value}/{limits['rate_period']:g}s")
        elif name != "rate_period":
            parts.append(f"{name.replace('_', ' ')} {value}")
    return ", ".join(parts)


def queue_rows(
    stats: list[QueueStats], specs: dict[str, QueueSpec] | None
) -> list[dict[str, Any]]:
    """One row per queue with runs or declared limits, by name. ``specs`` None: the limits
    are unknown (they live in the app's code), and each row says so with ``"limits": null``
    rather than ``{}``, which would read as "unlimited"."""
    by_name = {s.name: s for s in stats}
    rows = []
    for name in sorted(set(by_name) | set(specs or {})):
        s = by_name.get(name)
        limits = None if specs is None else _limits(specs.get(name) or (s.spec if s else None))
        rows.append({
            "queue": name,
            "pending": s.pending if s else 0,
            "running": s.running if s else 0,
            "suspended": s.suspended if s else 0,
            "limits": limits,
        })
    return rows


@click.command()
@click.argument("target", required=False)
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help="Store URL (default: $OUTLAST_DATABASE_URL, else sqlite:///outlast.db).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def queues(target: str | None, db: str | None, as_json: bool) -> None:
    """Show each queue's pending, running and suspended runs. With the app MODULE:APP, also
    the limits it declares (limits live in code, not in the store)."""
    from .app import App
    from .cli_common import load_app

    declared = load_app(target) if target else None
    # A reader of its own: the user's App object is left as it was (also when run in-process).
    reader = App(db or (declared.url if declared else None), readonly=True)
    rows = queue_rows(reader.store.queue_stats(), declared.queues if declared else None)
    reader.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from .cli_common import _console, lit

    table = Table(title=f"{len(rows)} queue(s)")
    for col in ("queue", "pending", "running", "suspended", "limits"):
        table.add_column(col)
    for row in rows:
        limits = "(pass MODULE:APP to show)" if row["limits"] is None else _describe(row["limits"])
        table.add_row(lit(row["queue"]), str(row["pending"]), str(row["running"]),
                      str(row["suspended"]), limits)
    _console().print(table)
