"""What every CLI module shares: the --db help, the console, literal text, loading an app.

Imported by ``cli.py`` and the topic modules (``cli_fleet``, ``cli_graph``, ``cli_waits``...),
which never import ``cli.py`` itself, so the command line has no import cycle.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from . import serde
from .app import App

DB_HELP = "Store URL (default: $OUTLAST_DATABASE_URL, else sqlite:///outlast.db)."


def _console() -> Any:
    from rich.console import Console

    # No emoji codes: outlast's own child ids contain ":email:"-like parts (camp:email:1).
    return Console(emoji=False, highlight=False)


def lit(value: Any, style: str = "") -> Any:
    """A user string (run id, name, error, payload) as literal rich text: never markup."""
    from rich.text import Text

    return Text("" if value is None else str(value), style=style)


def _app(db: str | None, readonly: bool = False) -> App:
    return App(db, readonly=readonly) if db else App(readonly=readonly)


def load_app(target: str, db: str | None = None) -> App:
    """Import ``module:attribute`` and return the App it names (the worker's argument)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"expected module:app (e.g. myagent:app), got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    # Runs started by `python module.py` with an older outlast name its classes __main__.X.
    serde.register_home(module_name)
    if not hasattr(module, attr):
        raise click.BadParameter(
            f"module {module_name!r} has no attribute {attr!r} (expected module:app, the App "
            "object's variable name)"
        )
    app = getattr(module, attr)
    if not isinstance(app, App):
        raise click.BadParameter(f"{target!r} is not an outlast.App (found {type(app).__name__})")
    if db:
        app.use(db)
    return app
