"""The ``outlast`` command line. click and rich are imported here only, when the CLI runs."""

from __future__ import annotations

import sqlite3
import sys
import time
from typing import Any

import click

from . import jsonview
from .cli_common import DB_HELP, _app, _console, lit, load_app
from .errors import OutlastError
from .run import RunInfo
from .store.sqlite_open import is_damage


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _saved(stats: dict[str, Any]) -> str:
    """What resuming served from the journal: steps, seconds, tokens, dollars."""
    if not stats.get("saved_steps"):
        return ""
    return (
        f"{int(stats['saved_steps'])} steps, {_secs(stats.get('saved_seconds', 0.0))}, "
        f"{int(stats.get('saved_tokens', 0))} tokens, ${stats.get('saved_cost', 0.0):.4f}"
    )


def _result_text(info: RunInfo) -> str:
    """A completed run's result for people, in the one JSON view (always valid JSON)."""
    try:
        value = info.result
    except OutlastError as exc:
        return f"<unreadable here: {exc}>"
    return jsonview.dumps(value)


STATUS_STYLE = {
    "completed": "green", "failed": "red", "running": "cyan", "pending": "white",
    "suspended": "blue", "paused": "yellow", "cancelled": "magenta",
}


def _info_json(info: RunInfo, steps: bool) -> dict[str, Any]:
    data = jsonview.run_fields(info)
    if info.status == "completed":
        try:
            data["result"] = info.result  # viewed by jsonview.dumps
        except OutlastError as exc:
            data["result_error"] = str(exc)
    if info.status == "failed":
        err = info.error
        data["error"] = None if err is None else f"{type(err).__name__}: {err}"
    if steps:
        data["steps"] = [
            {
                "position": s.position, "key": s.key, "name": s.name, "kind": s.kind,
                "status": s.status, "attempts": s.attempts, "duration": s.duration,
                "error": s.error, "meta": s.meta,
            }
            for s in info.steps
        ]
    return data


@click.group()
@click.version_option(package_name="outlast")
def main() -> None:
    """outlast: durable execution for AI agents."""


@main.command()
@click.argument("target")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option("--burst", is_flag=True, help="Exit when nothing is left to run.")
@click.option("--concurrency", "-c", default=4, show_default=True, type=click.IntRange(min=1),
              help="Runs executed at once.")
@click.option("--poll", default=0.5, show_default=True, type=click.FloatRange(min=0.01),
              help="Idle poll interval, seconds.")
@click.option("--queue", "queues", multiple=True, metavar="NAME",
              help="Only runs of this queue (repeatable; default: every queue).")
def worker(
    target: str, db: str | None, burst: bool, concurrency: int, poll: float, queues: tuple[str, ...]
) -> None:
    """Run every runnable run (new, orphaned, due) of the app MODULE:APP, or with --queue
    only those of the named queues (split a fleet by queue)."""
    import logging

    from .worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = load_app(target, db)
    w = Worker(app, concurrency=concurrency, burst=burst, poll=poll, queues=queues or None)
    w.install_signal_handlers()
    count = w.run()
    click.echo(f"worker done: {count} run(s) executed", err=True)


@main.command()
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option("--status", type=click.Choice(["pending", "running", "suspended", "completed", "failed", "cancelled", "paused"]))
@click.option("--workflow", help="Only runs of this workflow.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="Most runs shown.")
@click.option("--after", metavar="RUN_ID",
              help="The next page: runs listed after this one (the previous page's last).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def runs(
    db: str | None, status: str | None, workflow: str | None, limit: int, after: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first."""
    infos = _app(db, readonly=True).list_runs(
        status=status, workflow=workflow, limit=limit, after=after
    )
    if as_json:
        click.echo(jsonview.dumps([_info_json(i, steps=False) for i in infos], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{len(infos)} run(s)")
    if len(infos) == limit:
        table.caption = f"next page: --after {infos[-1].run_id}"
    # The run id is what users copy: its column never shrinks below the longest id.
    widest = max((len(i.run_id) for i in infos), default=6)
    table.add_column("run id", no_wrap=True, min_width=widest)
    for col in ("workflow", "status", "started", "duration", "tokens", "cost", "saved", "note"):
        table.add_column(col)
    for i in infos:
        note = i.reason or (f"{i.recoveries} recovery(ies)" if i.recoveries else "")
        table.add_row(
            lit(i.run_id), lit(i.workflow), lit(i.status, STATUS_STYLE.get(i.status, "white")),
            _when(i.started_at), _secs(i.duration),
            f"{int(i.stats.get('tokens', 0))}" if i.stats.get("tokens") else "-",
            f"${i.stats['cost']:.4f}" if i.stats.get("cost") else "-",
            f"{int(i.stats['saved_steps'])} steps" if i.stats.get("saved_steps") else "-",
            lit(note),
        )
    console = _console()
    # Narrower than the id would crop it: a wider line that the terminal wraps is better.
    console.width = max(console.width, widest + 48)
    console.print(table)


@main.command()
@click.argument("run_id")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(run_id: str, db: str | None, as_json: bool) -> None:
    """Show a run and its step timeline."""
    app = _app(db, readonly=True)
    info = app.get_run(run_id)
    if as_json:
        click.echo(jsonview.dumps(_info_json(info, steps=True), indent=2))
        return
    from rich.table import Table

    console = _console()
    style = STATUS_STYLE.get(info.status, "white")
    console.print(
        lit(info.run_id, "bold"), "  workflow ", lit(info.workflow, "bold"), "  ",
        lit(info.status, style), sep="",
    )
    console.print(
        f"started {_when(info.started_at)}  ended {_when(info.ended_at)}  "
        f"duration {_secs(info.duration)}  recoveries {info.recoveries}"
    )
    if info.reason:
        console.print(lit("reason: ", "yellow"), lit(info.reason), sep="")
    if info.forked_from:
        console.print(lit(f"forked from {info.forked_from} at checkpoint {info.forked_at}"))
    if len(info.steps) > 10_000:
        console.print(
            f"[yellow]warning:[/] the journal holds {len(info.steps)} entries; consider "
            "ctx.continue_as_new() to keep resumes fast"
        )
    table = Table()
    for col in ("#", "step", "kind", "status", "attempts", "duration", "error"):
        table.add_column(col)
    for s in info.steps:
        table.add_row(
            str(s.position), lit(s.name), lit(s.kind),
            lit(s.status, STATUS_STYLE.get(s.status, "yellow")), str(s.attempts),
            _secs(s.duration), lit(s.error),
        )
    console.print(table)
    from .cli_graph import show_checkpoints

    show_checkpoints(console, app, run_id)
    if info.stats:
        shown = {k: round(v, 6) if isinstance(v, float) else v for k, v in info.stats.items()}
        console.print(lit(f"stats: {shown}"))
        st = info.stats
        if st.get("llm_calls") or st.get("tokens") or st.get("saved_steps"):
            console.print(
                f"model: {int(st.get('llm_calls', 0))} call(s), {int(st.get('tokens', 0))} tokens, "
                f"${st.get('cost', 0.0):.4f} spent in all; last execution: "
                f"{int(st.get('last_llm_calls', 0))} call(s), {int(st.get('last_tokens', 0))} "
                f"tokens, ${st.get('last_cost', 0.0):.4f}; recovery saved {_saved(st) or 'nothing'}"
            )
    if info.status == "completed":
        console.print(lit("result: ", "green"), lit(_result_text(info)), sep="")
    if info.status == "failed" and info.error is not None:
        console.print(lit("error: ", "red"), lit(f"{type(info.error).__name__}: {info.error}"), sep="")


@main.command()
@click.argument("run_id")
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
def cancel(run_id: str, db: str | None) -> None:
    """Cancel a run and its unfinished children."""
    ids = _app(db).cancel(run_id)
    click.echo(f"cancelled: {', '.join(ids)}" if ids else f"run {run_id} had already ended")


@main.command()
@click.option("--db", help="Store URL (default: a SQLite file in a new temporary folder).")
@click.option("--kill-at", default=14, show_default=True, type=click.IntRange(2, 16),
              help="Step (2-16 of the agent's 16) at which the agent is killed.")
def demo(db: str | None, kill_at: int) -> None:
    """A research agent killed with SIGKILL at step 14, then resumed from its journal."""
    from .demo import run_demo

    sys.exit(run_demo(db, kill_at))


def run_cli() -> None:
    """Entry point that turns outlast errors into one clear line and exit code 1."""
    try:
        main(prog_name="outlast", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OutlastError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except sqlite3.DatabaseError as exc:
        # Met while reading a page the open-time check did not cover (or a file over its limit).
        if is_damage(exc):
            click.echo(f"error: the outlast database is damaged ({exc}). Check it with: sqlite3 "
                       "FILE 'PRAGMA integrity_check'", err=True)
        else:
            click.echo(f"error: SQLite: {exc}", err=True)
        sys.exit(1)


# Commands defined in their own modules (they import this one for ``main``'s helpers).
from .cli_effects import resolve  # noqa: E402
from .cli_evolve import checkpoints, replay, retry  # noqa: E402
from .cli_fleet import queues  # noqa: E402
from .cli_graph import fork  # noqa: E402
from .cli_keys import rekey  # noqa: E402
from .cli_ui import ui  # noqa: E402
from .cli_waits import prune, send, serve  # noqa: E402

for _command in (resolve, send, prune, serve, queues, fork, ui, replay, retry, checkpoints, rekey):
    main.add_command(_command)

if __name__ == "__main__":
    run_cli()
