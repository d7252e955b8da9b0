"""Fixtures shared by the whole suite.

Stores:

- ``sqlite_url``: a fresh SQLite file in the test's ``tmp_path``.
- ``pg_url``: a fresh schema (``t_<random>``) on the PostgreSQL test server, dropped with
  everything in it after the test. The server is ``OUTLAST_TEST_POSTGRES`` if set, else
  ``postgresql://postgres@127.0.0.1:5432/test``.
- ``store_url``: each backend in turn, with test ids ``sqlite`` and ``postgres`` (the latter
  marked ``postgres``, so ``-m "not postgres"`` leaves it out).
- ``store``: a store opened on ``store_url``, closed after the test.
- ``store_factory``: opens more stores (on ``store_url`` by default), all closed after the test.

``OUTLAST_TEST_ENCRYPTION=1`` runs the whole suite with encryption at rest switched on.

PostgreSQL tests run whenever the server is up. When it is down they fail and say so, so a
broken CI database cannot pass as green; set ``OUTLAST_SKIP_POSTGRES=1`` to skip them instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outlast.store import Store, open_store

# fixtures shared by name: the model server and SDK clients (`server`, `close_clients`), and
# the OpenTelemetry SDK capture (`spans`, `reader`)
pytest_plugins = ["tests.llmkit", "tests.otelkit"]
if os.environ.get("OUTLAST_TEST_ENCRYPTION") == "1" and not os.environ.get("OUTLAST_ENCRYPTION_KEYS"):
    # The encrypted pass (see CI): every store the suite opens, and every subprocess it
    # starts, seals its payloads under this key (outlast.encryption reads the variable).
    os.environ["OUTLAST_ENCRYPTION_KEYS"] = "test:" + "A" * 43 + "="


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the replay-each-step pass (``OUTLAST_REPLAY_EACH_STEP=1``, see CI) every recorded
    call stops and replays the run, so tests that count executions, or that watch a run stay
    in memory through a short wait (or whose subprocesses inherit the mode), are skipped
    there: they run in the normal pass."""
    if os.environ.get("OUTLAST_REPLAY_EACH_STEP") != "1":
        return
    skip = pytest.mark.skip(reason="counts executions: replay-each-step re-executes by design")
    stays = pytest.mark.skip(reason="stays in memory: replay-each-step releases after each call")
    for item in items:
        if "counts_executions" in item.keywords:
            item.add_marker(skip)
        elif "stays_in_memory" in item.keywords:
            item.add_marker(stays)


@pytest.fixture(autouse=True)
def _close_apps_left_open(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every App whose store a test opened, when the test ends.

    Tests create apps freely (``app = outlast.App(store_url)``); this keeps each one alive until
    the test's teardown and closes it then, so none is left to the garbage collector (which
    would close it with a ResourceWarning, failing whichever test runs at that moment).
    """
    from outlast.app import App

    opened: list[App] = []
    track = App._track

    def track_and_remember(app: App) -> None:
        track(app)
        opened.append(app)

    monkeypatch.setattr(App, "_track", track_and_remember)
    yield
    for app in opened:
        app.close()


PG_SERVER = os.environ.get("OUTLAST_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL server URL, after checking once per session that it answers."""
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(PG_SERVER, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        message = (
            f"PostgreSQL tests need a server at {PG_SERVER} ({exc}). Start it, point "
            "OUTLAST_TEST_POSTGRES at another one, or set OUTLAST_SKIP_POSTGRES=1 to skip them"
        )
        if os.environ.get("OUTLAST_SKIP_POSTGRES") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    return PG_SERVER


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store URL on a new file."""
    return f"sqlite:///{tmp_path}/outlast.db"


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A PostgreSQL store URL on a schema of its own, dropped after the test."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{pg_server}?schema={schema}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest) -> str:
    """A fresh store URL for each backend."""
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def store_factory(store_url: str) -> Iterator[Callable[..., Store]]:
    """``store_factory(url=store_url)`` opens a store; every one is closed after the test."""
    opened: list[Store] = []

    def make(url: str = store_url) -> Store:
        store = open_store(url)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory: Callable[..., Store]) -> Store:
    """A store on ``store_url``."""
    return store_factory()
