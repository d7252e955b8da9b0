"""@app.transaction: the step's writes and its journal entry commit together, on both stores.

Crashes are KeyboardInterrupts at chosen points (see test_effects.py); the torture test adds
random SIGKILLs. ``test_cell_*`` are cells of docs/guarantees.md.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.test_effects import CRASH, crash_at

import outlast


@pytest.fixture
def table(store_url: str) -> Iterator[str]:
    name = f"tx_{uuid.uuid4().hex[:10]}"
    yield name
    app = outlast.App(store_url)
    _exec(app, f"DROP TABLE IF EXISTS {name}")
    app.close()


def _exec(app: outlast.App, sql: str) -> list[Any]:
    result: list[Any] = []
    store = app.store
    if store.dialect == "sqlite":
        result = store._conn.execute(sql).fetchall()  # type: ignore[attr-defined]
    else:
        import psycopg

        with psycopg.connect(store._conninfo, autocommit=True) as conn:  # type: ignore[attr-defined]
            cur = conn.execute(sql)
            result = cur.fetchall() if cur.description else []
    return result


def _app(store_url: str, table: str) -> tuple[outlast.App, Any]:
    app = outlast.App(store_url)
    _exec(app, f"CREATE TABLE IF NOT EXISTS {table} (v INTEGER)")
    mark = "?" if app.store.dialect == "sqlite" else "%s"

    @app.transaction
    def write(conn: Any, v: int) -> int:
        conn.execute(f"INSERT INTO {table} (v) VALUES ({mark})", (v,))
        crash_at("during")  # written, not committed
        return v

    @app.workflow
    def flow(v: int) -> int:
        crash_at("before")
        out = write(v)
        crash_at("after")
        return int(out)

    return app, flow


@pytest.mark.parametrize("point", ["before", "during", "after"])
def test_cell_transaction(store_url: str, table: str, point: str) -> None:
    app, flow = _app(store_url, table)
    CRASH["at"] = point
    with pytest.raises(KeyboardInterrupt):
        app.run(flow, 5, run_id="r")
    assert app.run(flow, 5, run_id="r") == 5
    assert _exec(app, f"SELECT v FROM {table}") == [(5,)]
    (step,) = app.get_run("r").steps
    assert (step.kind, step.status) == ("transaction", "completed")
    app.close()


def test_failure_rolls_back_and_is_recorded(store_url: str, table: str) -> None:
    app = outlast.App(store_url)
    _exec(app, f"CREATE TABLE {table} (v INTEGER)")
    mark = "?" if app.store.dialect == "sqlite" else "%s"

    @app.transaction
    def write(conn: Any) -> None:
        conn.execute(f"INSERT INTO {table} (v) VALUES ({mark})", (1,))
        raise ValueError("constraint says no")

    @app.transaction
    def commits(conn: Any) -> None:
        conn.commit()

    @app.workflow
    def flow() -> None:
        write()

    @app.workflow
    def flow2() -> None:
        commits()

    with pytest.raises(ValueError, match="constraint says no"):
        app.run(flow, run_id="f")
    assert _exec(app, f"SELECT v FROM {table}") == []
    assert [s.status for s in app.get_run("f").steps] == ["failed"]
    with pytest.raises(outlast.ConfigurationError, match="may not use connection.commit"):
        app.run(flow2, run_id="g")
    app.close()


def test_async_transaction_step(store_url: str, table: str) -> None:
    app = outlast.App(store_url)
    _exec(app, f"CREATE TABLE {table} (v INTEGER)")
    mark = "?" if app.store.dialect == "sqlite" else "%s"

    @app.transaction
    async def write(conn: Any, v: int) -> str:
        await asyncio.sleep(0)
        conn.execute(f"INSERT INTO {table} (v) VALUES ({mark})", (v,))
        return outlast.idempotency_key()

    @app.workflow
    async def flow() -> list[str]:
        return [await write(1), await write.call(2, key="second")]

    assert asyncio.run(app.run_async(flow, run_id="a")) == ["a:write:1", "a:write:second"]
    assert asyncio.run(app.run_async(flow, run_id="a")) == ["a:write:1", "a:write:second"]
    assert sorted(_exec(app, f"SELECT v FROM {table}")) == [(1,), (2,)]
    app.close()


def test_where_a_transaction_cannot_work() -> None:
    app = outlast.App("sqlite:///:memory:")
    with pytest.raises(outlast.ConfigurationError, match="first parameter"):
        app.transaction(lambda: 1)

    @app.transaction
    def write(conn: Any) -> int:
        return 1

    with pytest.raises(outlast.ConfigurationError, match="outside a workflow"):
        write()

    @app.step
    def outer() -> int:
        return int(write())

    @app.workflow
    def flow() -> int:
        return int(outer())

    with pytest.raises(outlast.ConfigurationError, match="from inside step 'outer'"):
        app.run(flow, run_id="n")
    assert app.get_run("n").status == "failed"
    app.close()
