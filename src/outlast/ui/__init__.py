"""``outlast ui``: a local dashboard to see, steer and debug runs (``pip install 'outlast[ui]'``).

Server-rendered pages with one small plain script (no build step, no CDN), a JSON API, and
actions (cancel, send an event, resolve a paused run) only with ``allow_actions``. Every
request passes :mod:`outlast.websec` (Host, cross-site, token); see docs/ui.md and
docs/security.md. Mount it in your own ASGI app with :func:`create_app`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..app import App

__all__ = ["TOKEN_COOKIE", "create_app"]

#: the cookie that keeps the token after a first visit with ``?token=``
TOKEN_COOKIE = "outlast_ui_token"


def create_app(
    url: str | None = None,
    *,
    app: App | None = None,
    allow_actions: bool = False,
    token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    bind: tuple[str, int] | None = None,
) -> Any:
    """The dashboard as an ASGI application over the store at ``url`` (default:
    ``$OUTLAST_DATABASE_URL``, else ``sqlite:///outlast.db``).

    ``app``: show your own App's store instead of opening ``url`` (when mounting the dashboard
    in your application): forks then find your graphs, and the App stays yours to close (it
    is not made read-only; without ``allow_actions`` the dashboard writes nothing anyway).
    ``allow_actions``: enable cancel, send event, resolve, retry and fork (otherwise they
    answer 403 and the pages show no buttons, and a SQLite database is opened read-only). ``token``: every
    request must carry it (``Authorization: Bearer``, or once as ``?token=``, then a cookie).
    ``allowed_hosts``: extra names the ``Host`` header may carry (a reverse proxy's).
    ``bind``: the address and port given to the server (default: those each connection
    arrived on; give it for a wildcard address such as ``0.0.0.0``).
    """
    try:
        from starlette.applications import Starlette
    except ImportError as exc:
        raise ConfigurationError("outlast ui needs Starlette and uvicorn: pip install 'outlast[ui]'") from exc
    from ..app import App
    from ..websec import Guard
    from .routes import build

    owned = app is None
    if app is None:
        url = url or os.environ.get("OUTLAST_DATABASE_URL") or "sqlite:///outlast.db"
        _require_database(url)
        app = App(url)
        if not allow_actions:
            _read_only(app)
    elif url is not None:
        raise ConfigurationError("create_app: give a database url or an app, not both")
    mine = app

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        if owned:
            mine.close()  # the dashboard owns its App: closed when the server shuts down

    starlette = Starlette(routes=build(app, allow_actions=allow_actions), lifespan=lifespan)
    starlette.state.outlast_app = app
    return Guard(starlette, token=token, allowed_hosts=frozenset(h.lower() for h in allowed_hosts),
                 forms=allow_actions, token_cookie=TOKEN_COOKIE,
                 host=bind[0] if bind else None, port=bind[1] if bind else None)


def _require_database(url: str) -> None:
    """A dashboard never creates a database: a mistyped path is an error, not an empty list."""
    if not url.startswith("sqlite"):
        return
    path = url.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path
    if path != ":memory:" and not os.path.exists(path):
        raise ConfigurationError(f"no outlast database at {path!r}: give --db with the URL your app uses")


def _read_only(app: Any) -> None:
    """Refuse writes on the SQLite connection (PostgreSQL: the routes make none without actions)."""
    store = app.store
    conn = getattr(store, "_conn", None)
    if store.dialect == "sqlite" and conn is not None:
        conn.execute("PRAGMA query_only = ON")
