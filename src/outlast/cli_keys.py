"""``outlast rekey``: re-encrypt stored payloads under the active key after a rotation."""

from __future__ import annotations

import click

# Not imported from .cli: cli.py imports this module at its bottom, also when run as __main__.
from .cli_common import DB_HELP


@click.command()
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option("--batch", default=500, show_default=True, type=click.IntRange(min=1),
              help="Rows re-encrypted per transaction.")
def rekey(db: str | None, batch: int) -> None:
    """Re-encrypt every payload not under the active key of $OUTLAST_ENCRYPTION_KEYS (the
    first key; list the older ones after it so old values can be read), and seal values
    stored in the clear. Safe while workers run (each rewrite is a compare-and-swap), and
    resumable: if it stops, run it again. Once it reports nothing left, drop the old keys."""
    from .app import App
    from .rekey import rekey as run_rekey

    with App(db) if db else App() as app:
        report = run_rekey(app.store, batch=batch, progress=lambda line: click.echo(line))
    click.echo(f"rekey done: {report.total} value(s) re-encrypted"
               + (f", {report.skipped} changed by a writer meanwhile (run again)"
                  if report.skipped else ""))
