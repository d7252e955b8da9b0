"""``outlast ui``: serve the dashboard (needs the ui extra)."""

from __future__ import annotations

import click

# Not imported from .cli: cli.py imports this module at its bottom, also when run as __main__.
from .cli_common import DB_HELP


@click.command()
@click.option("--db", envvar="OUTLAST_DATABASE_URL", help=DB_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8233, show_default=True, type=click.IntRange(1, 65535))
@click.option("--allow-actions", is_flag=True, help="Enable cancel, send event and resolve (read-only otherwise).")
@click.option("--token", envvar="OUTLAST_UI_TOKEN", help="Token every request must carry (required beyond 127.0.0.1).")
@click.option("--allow-host", "allow_hosts", multiple=True,
              help="Another name the Host header may carry (a proxy's or DNS name); repeatable.")
def ui(db: str | None, host: str, port: int, allow_actions: bool, token: str | None,
       allow_hosts: tuple[str, ...]) -> None:
    """Serve the runs dashboard (see docs/ui.md); prints its URL."""
    from urllib.parse import quote

    from .ui import create_app
    from .websec import check_binding

    try:
        check_binding(host, token, what="outlast ui")
    except ValueError as exc:
        raise click.ClickException(f"{exc} (or set $OUTLAST_UI_TOKEN)") from None
    try:
        import uvicorn
    except ImportError:
        raise click.ClickException("outlast ui needs uvicorn: pip install 'outlast[ui]'") from None
    asgi = create_app(db, allow_actions=allow_actions, token=token, allowed_hosts=allow_hosts,
                      bind=(host, port))
    shown = f"[{host}]" if ":" in host else host
    link = f"http://{shown}:{port}/runs" + (f"?token={quote(token)}" if token else "")
    mode = "actions allowed" if allow_actions else "read-only"
    click.echo(f"outlast ui ({mode}): {link}", err=True)
    uvicorn.run(asgi, host=host, port=port, log_level="warning")
