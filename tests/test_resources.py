"""Resources are owned: apps, savers, deduplicators and the fake model server close what they
open, when told to (twice is fine), when used as context managers, and at interpreter exit; an
App the garbage collector finds open says so by name (issue 21).

Interpreter exit and garbage collection are observed in a child process, as they would be in a
user's program; the conftest's app-closing fixture does not reach there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import outlast
from outlast.dedup import Deduplicator
from outlast.integrations.langgraph import OutlastSaver
from outlast.testing import FakeLLMServer

SRC = Path(__file__).resolve().parents[1] / "src"


def _child(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_app_is_a_context_manager_and_closes_twice(sqlite_url: str) -> None:
    with outlast.App(sqlite_url) as app:

        @app.workflow
        def one() -> int:
            return 1

        assert app.run(one) == 1
        store = app.store
    assert app._store is None and store._closed  # type: ignore[attr-defined]
    app.close()
    assert app.run(one, run_id="again") == 1  # used again: reopened
    app.close()


def test_an_app_collected_open_warns_by_name_and_its_store_closes(tmp_path: Path) -> None:
    code = f"""
import gc, warnings
warnings.simplefilter("always")
import outlast
app = outlast.App("sqlite:///{tmp_path}/a.db")

@app.workflow
def greet() -> str:
    return "hi"

print(app.run(greet))
del app, greet
gc.collect()
# A store used after its app is gone keeps working (and then closes when collected).
print(outlast.App("sqlite:///{tmp_path}/a.db").store.prune(0))
gc.collect()
"""
    out = _child(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hi", "0"]
    assert f"ResourceWarning: outlast App('sqlite:///{tmp_path}/a.db'; greet)" in out.stderr
    assert "garbage-collected without close()" in out.stderr
    assert "unclosed database" not in out.stderr  # not sqlite3's bare warning (3.13)


def test_everything_left_open_is_closed_at_interpreter_exit(tmp_path: Path) -> None:
    # atexit runs its hooks last-registered first: this check, registered before outlast is
    # imported, runs after outlast's own exit hooks.
    code = f"""
import atexit, warnings
warnings.simplefilter("error")
left = {{}}

@atexit.register
def check():
    print("app closed:", left["app"]._store is None)
    print("saver closed:", left["saver"].store._closed)
    print("server stopped:", left["server"]._finalizer.alive is False)
    print("dedup closed:", left["dedup"]._finalizer.alive is False)

import outlast
from outlast.dedup import Deduplicator
from outlast.integrations.langgraph import OutlastSaver
from outlast.testing import FakeLLMServer

app = outlast.App("sqlite:///{tmp_path}/a.db")
app.store
left["app"] = app
left["saver"] = OutlastSaver("sqlite:///{tmp_path}/s.db")
left["server"] = FakeLLMServer().start()
left["dedup"] = Deduplicator("sqlite:///{tmp_path}/d.db")
"""
    out = _child(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "app closed: True",
        "saver closed: True",
        "server stopped: True",
        "dedup closed: True",
    ]
    assert "Warning" not in out.stderr  # closing at exit is quiet


def test_saver_dedup_and_server_are_context_managers_closing_twice(
    sqlite_url: str, tmp_path: Path
) -> None:
    with OutlastSaver(sqlite_url) as saver:
        pass
    assert saver.store._closed  # type: ignore[attr-defined]
    saver.close()
    with Deduplicator(f"sqlite:///{tmp_path}/d.db") as dedup:
        assert dedup.execute("k", "fp", lambda: b"x") == b"x"
    dedup.close()
    assert dedup.execute("k", "fp", lambda: b"y") == b"x"  # used again: reopened
    dedup.close()
    with FakeLLMServer() as server:
        port = server.port
    assert port and server._httpd is None
    server.close()
    server.stop()
