"""CLI for graph runs: the checkpoint table of ``outlast show``, and ``outlast fork``."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from . import jsonview
from .app import App
from .graph import NODE_KIND
from .timetravel import checkpoints

#: seconds between looks at what a forked run executed with --wait is waiting for
WAIT_STEP = 1.0


def show_checkpoints(console: Any, app: App, run_id: str) -> None:
    """Print the checkpoint table of a graph run (nothing for other runs)."""
    record = app.store.get_run(run_id)
    if record is None:
        return
    has_nodes = any(e.kind == NODE_KIND for e in app.store.load_journal(run_id))
    if not has_nodes and b'"fork"' not in record.input:
        return
    from rich.table import Table

    table = Table(title="checkpoints (outlast fork MODULE:APP RUN_ID CHECKPOINT)")
    for col in ("id", "node", "run", "at", "update", "next"):
        table.add_column(col)
    from .cli_common import lit

    for cp in checkpoints(app, run_id):
        table.add_row(
            lit(cp.id), lit(cp.node), lit(cp.run_id if cp.run_id != run_id else ""),
            time.strftime("%H:%M:%S", time.localtime(cp.at)), lit(cp.summary), lit(cp.next),
        )
    console.print(table)


@click.command()
@click.argument("args", nargs=-1, required=True, metavar="[MODULE:APP] RUN_ID CHECKPOINT")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help="Store URL (default: $OUTLAST_DATABASE_URL, else sqlite:///outlast.db).")
@click.option("--update", "update_json", help="Graph runs: a JSON object applied to the state first (through the reducers).")
@click.option("--new-run-id", "--run-id", "new_run_id", help="The new run's id (default: random).")
@click.option("--wait", is_flag=True, help="Execute the fork here and print its result (needs MODULE:APP).")
def fork(
    args: tuple[str, ...], db: str | None, update_json: str | None, new_run_id: str | None,
    wait: bool,
) -> None:
    """Start a new run from CHECKPOINT of run RUN_ID (see `outlast checkpoints RUN_ID`).

    The new run keeps RUN_ID's journal up to and including the checkpoint (blobs shared) and
    executes the rest with the current code; RUN_ID is not touched. A graph run forks from
    the checkpoint's state (edited by --update) and needs MODULE:APP. The fork is recorded
    for `outlast worker MODULE:APP`, or executed here with --wait.
    """
    from .cli_common import _app, load_app

    if len(args) not in (2, 3):
        raise click.UsageError("expected [MODULE:APP] RUN_ID CHECKPOINT")
    target, (run_id, checkpoint) = (args[0] if len(args) == 3 else None), args[-2:]
    if wait and target is None:
        raise click.UsageError("--wait executes the fork here: give MODULE:APP first")
    app = load_app(target, db) if target is not None else _app(db)
    update = None
    if update_json is not None:
        try:
            update = json.loads(update_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"--update is not JSON: {exc}") from exc
        if not isinstance(update, dict):
            raise click.BadParameter("--update must be a JSON object of state keys")
    handle = app.fork(run_id, checkpoint, update, new_run_id, execute=False)
    click.echo(f"forked {run_id} at checkpoint {checkpoint} as run {handle.run_id}")
    if wait:
        click.echo(jsonview.dumps(_wait(app, handle.run_id)))


def _asked(app: App, run_id: str) -> str:
    """What the run's latest ``outlast.interrupt(value)`` asked, for people ('' if none)."""
    from . import serde

    asked = [e for e in app.store.load_journal(run_id) if e.kind == "interrupt"]
    if not asked:
        return ""
    try:
        value = serde.loads(asked[-1].output or b"null", what="interrupt value")
    except Exception:  # a value this process cannot read is still waited for
        return ""
    return f" (it asks: {json.dumps(value, default=repr, ensure_ascii=False)})"


def _wait(app: App, run_id: str) -> object:
    """Execute the run here until it ends, saying once per wait what it is waiting for."""
    from .errors import Timeout

    told = None
    while True:
        try:
            return app.handle(run_id).result(timeout=WAIT_STEP)
        except Timeout:
            record = app.store.get_run(run_id)
            event = record.wait_event if record is not None else None
            if record is None or record.status != "suspended" or event is None or event == told:
                continue
            told = event
            click.echo(
                f"run {run_id} is waiting for event {event!r}{_asked(app, run_id)}; answer with "
                f"`outlast send {run_id} {event} JSON` (Ctrl-C stops waiting; the run keeps "
                "its place)",
                err=True,
            )
