"""CLI commands for waiting runs: ``outlast send``, ``outlast prune``, ``outlast serve``."""

from __future__ import annotations

import json
import re
import threading
import time

import click

from .app import App

# Not imported from .cli: cli.py imports this module at its bottom, also when run as __main__.
from .cli_common import DB_HELP

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` (or plain seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise click.BadParameter(f"expected an age like 30d, 12h, 90m, 45s or 2w, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@click.command()
@click.argument("run_id")
@click.argument("name")
@click.argument("payload", default="null")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
def send(run_id: str, name: str, payload: str, db: str | None) -> None:
    """Send event NAME with a JSON PAYLOAD to run RUN_ID (read by ctx.wait_for)."""
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"PAYLOAD must be JSON (quote strings: '\"yes\"'): {exc}") from None
    (App(db) if db else App()).send(run_id, name, value)
    click.echo(f"sent {name} to {run_id}")


@click.command()
@click.option("--older-than", "older_than", required=True, help="Age, e.g. 30d, 12h, 90m.")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option("--batch", default=5000, show_default=True, type=click.IntRange(min=1),
              help="Runs deleted per transaction.")
def prune(older_than: str, db: str | None, batch: int) -> None:
    """Delete finished runs (completed, failed, cancelled) that ended longer ago than the age,
    with their journals, events and the blobs nothing else refers to. Never a run that is
    still going, nor a finished child whose parent is still going (the parent may not have
    read its result yet). Agent Framework checkpoints older than the age go too, except each
    workflow's newest.

    Runs go in batches, oldest first, each its own short transaction, so workers carry on
    meanwhile; progress is printed to stderr, and an interrupted prune resumes where it
    stopped when run again."""
    from .integrations._maf_rows import prune_checkpoints
    from .store.checkpoints import checkpoint_store

    cutoff = time.time() - parse_age(older_than)
    with App(db) if db else App() as app:
        count = _prune_runs(app, cutoff, batch)
        checkpoints = prune_checkpoints(checkpoint_store(app.store), older_than=cutoff, keep=1)
    click.echo(f"pruned {count} run(s)")
    if checkpoints:
        click.echo(f"pruned {checkpoints} agent-framework checkpoint(s)")


def _prune_runs(app: App, cutoff: float, batch: int) -> int:
    """Batches until one comes back short; a progress line at most every 2 seconds."""
    total, started, shown = 0, time.monotonic(), time.monotonic()
    while True:
        count = app.store.prune(cutoff, batch)
        total += count
        now = time.monotonic()
        if count < batch:
            return total
        if now - shown >= 2.0:
            shown = now
            rate = total / max(now - started, 1e-9)
            click.echo(f"pruned {total} run(s) so far ({rate:.0f} runs/s)", err=True)


@click.command()
@click.argument("target")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8155, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", envvar="OUTLAST_SERVE_TOKEN", help="Bearer token (required beyond 127.0.0.1).")
@click.option("--worker/--no-worker", default=True, show_default=True,
              help="Also run a worker in this process, so started and woken runs execute here.")
@click.option("--concurrency", "-c", default=4, show_default=True, type=click.IntRange(min=1),
              help="Worker's runs at once.")
@click.option("--allow-host", "allow_hosts", multiple=True,
              help="Another name the Host header may carry (a proxy's or DNS name); repeatable.")
def serve(
    target: str, db: str | None, host: str, port: int, token: str | None, worker: bool, concurrency: int,
    allow_hosts: tuple[str, ...],
) -> None:
    """Serve the HTTP endpoint of the app MODULE:APP (needs the serve extra)."""
    from .cli_common import load_app
    from .server import check_binding, create_app

    check_binding(host, token)
    app = load_app(target, db)
    try:
        import uvicorn
    except ImportError:
        raise click.ClickException("outlast serve needs uvicorn: pip install 'outlast[serve]'") from None
    runner = None
    if worker:
        from .worker import Worker

        runner = Worker(app, concurrency=concurrency)
        threading.Thread(target=runner.run, name="outlast-serve-worker", daemon=True).start()
    try:
        asgi = create_app(app, token=token, allowed_hosts=allow_hosts, bind=(host, port))
        uvicorn.run(asgi, host=host, port=port, log_level="info")
    finally:
        if runner is not None:
            runner.stop()
