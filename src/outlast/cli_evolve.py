"""CLI for changing code under runs in flight: ``outlast replay``, ``retry``, ``checkpoints``
(``outlast fork`` lives in :mod:`outlast.cli_graph`, for graph and plain runs alike)."""

from __future__ import annotations

import sys
import time

import click

from . import jsonview
from .cli_common import DB_HELP, _app, _console, lit, load_app
from .replaycheck import DEFAULT_STATUSES, ReplayResult, describe
from .store.base import STATUSES


@click.command()
@click.argument("target")
@click.argument("run_ids", nargs=-1)
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES),
    help=f"Check runs of this status (repeatable; default: {', '.join(DEFAULT_STATUSES)}).",
)
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--limit", type=click.IntRange(min=1), help="Check at most this many runs.")
@click.option(
    "--strict",
    is_flag=True,
    help="Also exit 1 when a run is skipped (its workflow is not registered in MODULE:APP).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def replay(
    target: str,
    run_ids: tuple[str, ...],
    db: str | None,
    statuses: tuple[str, ...],
    workflow: str | None,
    limit: int | None,
    strict: bool,
    as_json: bool,
) -> None:
    """Replay recorded runs against the code of MODULE:APP, executing nothing.

    Every durable call must be answered from the run's journal: no step, model call or
    effect runs, and the database is only read. Reaching the end of an in-flight run's
    journal is success. Prints a line per run and exits 1 when any run diverges (or the code
    fails on it). A run whose workflow MODULE:APP does not register is listed as SKIPPED (not
    checked) and fails the command only with --strict. Run it in CI against a copy of
    production's database before a deploy.
    """
    app = load_app(target, None)
    app.readonly = True  # before the store opens: this command never writes
    app.use(db or app.url)
    results = app.check_replay(
        list(run_ids) or None, statuses=list(statuses) or None, workflow=workflow, limit=limit
    )
    bad = [r for r in results if not r.ok]
    skipped = [r for r in results if r.skipped]
    failed = bool(bad or (strict and skipped))
    if as_json:
        click.echo(
            jsonview.dumps(
                {
                    "ok": not failed,
                    "skipped": [r.run_id for r in skipped],
                    "runs": [
                        {
                            "run_id": r.run_id,
                            "workflow": r.workflow,
                            "status": r.status,
                            "outcome": r.outcome,
                            "calls": r.calls,
                            "detail": r.detail,
                            "position": r.position,
                            "recorded": r.recorded,
                            "called": r.called,
                        }
                        for r in results
                    ],
                },
                indent=2,
            )
        )
    else:
        for r in results:
            click.echo(describe(r))
        click.echo(
            f"{len(results) - len(skipped)} run(s) checked, {len(bad)} diverged or failed"
            + (_skipped_note(skipped, target, strict) if skipped else "")
        )
    if failed:
        sys.exit(1)


def _skipped_note(skipped: list[ReplayResult], target: str, strict: bool) -> str:
    names = ", ".join(repr(n) for n in sorted({r.workflow for r in skipped}))
    return (
        f", {len(skipped)} skipped (not checked: {target} registers no workflow {names}; "
        + ("--strict fails on them)" if strict else "add --strict to fail on them)")
    )


@click.command()
@click.argument("run_id")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
def retry(run_id: str, db: str | None) -> None:
    """Run a failed run again from its failure, with the code workers run now.

    The failed call and what follows it are dropped; the calls before it are kept (not
    executed again). A failure raised by the workflow code itself (a divergence, say) keeps
    the whole journal. The run becomes pending, for `outlast worker MODULE:APP`.
    """
    handle = _app(db).retry(run_id, execute=False)
    click.echo(f"run {handle.run_id} is pending again; a worker resumes it from its failure")


@click.command()
@click.argument("run_id")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def checkpoints(run_id: str, db: str | None, as_json: bool) -> None:
    """List a run's checkpoints: one per journaled durable call (0: its input).

    Fork from one with `outlast fork RUN_ID CHECKPOINT`.
    """
    cps = _app(db, readonly=True).checkpoints(run_id)
    if as_json:
        click.echo(
            jsonview.dumps(
                [
                    {
                        "id": c.id,
                        "position": c.position,
                        "node": c.node,
                        "kind": c.kind,
                        "at": c.at,
                        "run_id": c.run_id,
                        "summary": c.summary,
                        "next": c.next,
                    }
                    for c in cps
                ],
                indent=2,
            )
        )
        return
    from rich.table import Table

    table = Table(title=f"checkpoints of {run_id} (outlast fork {run_id} CHECKPOINT)")
    for col in ("id", "position", "call", "kind", "at", "summary"):
        table.add_column(col)
    for c in cps:
        table.add_row(
            lit(c.id),
            str(c.position),
            lit(c.node),
            lit(c.kind),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.at)),
            lit(c.summary),
        )
    _console().print(table)
