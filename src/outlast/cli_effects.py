"""``outlast resolve``: an operator's decision on a run paused with an unknown outcome."""

from __future__ import annotations

import json

import click

# Not imported from .cli: cli.py imports this module at its bottom, also when run as __main__.
from .cli_common import DB_HELP


@click.command()
@click.argument("run_id")
@click.option("--done", "done", metavar="JSON", help="The effect happened: record this JSON as the step's result.")
@click.option("--redo", is_flag=True, help="The effect did not happen: run the step again.")
@click.option("--retry", is_flag=True, help="Decide nothing: ask the step's reconcile function again.")
@click.option("--step", "key", metavar="KEY", help="The step's key, when several await an outcome.")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
def resolve(
    run_id: str, done: str | None, redo: bool, retry: bool, key: str | None, db: str | None
) -> None:
    """Resolve a paused run (give one of --done JSON, --redo, --retry); it then resumes."""
    if (done is not None) + redo + retry != 1:
        raise click.UsageError("give exactly one of --done JSON, --redo, --retry")
    options: dict[str, object] = {"redo": redo, "retry": retry, "key": key}
    if done is not None:
        try:
            options["done"] = json.loads(done)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--done") from exc
    from .app import App

    info = (App(db) if db else App()).resolve(run_id, **options)  # type: ignore[arg-type]
    what = "recorded the result" if done is not None else "the step runs again" if redo else "reconcile is asked again"
    click.echo(f"run {info.run_id} is {info.status}: {what}; a worker (or app.run) resumes it")
