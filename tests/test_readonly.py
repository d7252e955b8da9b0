"""Commands that only read open the store read-only: they never create, migrate or convert a
file; a database nobody may write still serves its stored runs; a damaged one is reported."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tests.proc import keys_env

import outlast
from outlast.errors import ConfigurationError
from outlast.store import open_store

ROOT = Path(__file__).resolve().parent.parent
ENV = {"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "PATH": "/usr/bin:/bin", "COLUMNS": "200",
       **keys_env()}
# root writes through file modes; dropping these capabilities makes the modes apply to it
NO_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search,-fowner",
               "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be made to apply")
    return [*NO_OVERRIDE, *cmd]


def cli(*args: str, user: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "outlast.cli", *args]
    return subprocess.run(_as_user(cmd) if user else cmd, capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env=ENV)


@pytest.mark.parametrize("command", [["runs"], ["show", "r1"], ["queues"]])
def test_a_missing_database_is_not_created(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "typo.db"
    out = cli(*command, "--db", f"sqlite:///{path}")
    assert out.returncode == 1, out
    assert f"no outlast database at {path}" in out.stderr and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_another_applications_database_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    before = path.read_bytes()
    for command in (["runs"], ["show", "x"], ["queues"]):
        out = cli(*command, "--db", f"sqlite:///{path}")
        assert out.returncode == 1 and "without outlast's tables" in out.stderr, out
    assert path.read_bytes() == before  # no tables added, still in rollback-journal mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.db"]


def test_open_store_readonly_refuses_what_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no outlast database at"):
        open_store(f"sqlite:///{tmp_path}/none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()


READER = """
import json, sys
import outlast
app = outlast.App(sys.argv[1])
@app.workflow
def double(ctx, x):
    return 2 * x
out = {"status": app.get_run("r1").status, "listed": [r.run_id for r in app.list_runs()],
       "again": app.run(double, 21, run_id="r1")}
try:
    app.run(double, 1, run_id="r2")
except outlast.OutlastError as exc:
    out["new"] = str(exc)
print(json.dumps(out))
"""


def _finished_db(folder: Path) -> str:
    folder.mkdir()
    url = f"sqlite:///{folder}/outlast.db"
    app = outlast.App(url)

    @app.workflow
    def double(ctx: outlast.Context, x: int) -> int:
        return 2 * x

    assert app.run(double, 21, run_id="r1") == 42
    app.close()
    return url


@pytest.mark.parametrize("folder_writable", [True, False], ids=["file-444", "folder-555"])
def test_a_read_only_database_still_serves_its_runs(tmp_path: Path, folder_writable: bool) -> None:
    folder = tmp_path / "data"
    url = _finished_db(folder)
    db = folder / "outlast.db"
    db.chmod(0o444)
    folder.chmod(0o777 if folder_writable else 0o555)
    try:
        out = subprocess.run(_as_user([sys.executable, "-c", READER, url]), capture_output=True,
                             text=True, cwd=ROOT, timeout=60, env=ENV)
        assert out.returncode == 0, out.stderr
        import json

        got = json.loads(out.stdout)
        assert got["status"] == "completed" and got["listed"] == ["r1"] and got["again"] == 42
        assert "read-only" in got["new"] and "r2" in got["new"]
        shown = cli("show", "r1", "--db", url, user=True)
        assert shown.returncode == 0 and "result: 42" in shown.stdout, shown.stderr
        listed = cli("runs", "--db", url, user=True)
        assert listed.returncode == 0 and "r1" in listed.stdout, listed.stderr
    finally:
        folder.chmod(0o755)
    assert stat.S_IMODE(db.stat().st_mode) == 0o444


def test_a_damaged_database_is_reported(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/outlast.db"
    app = outlast.App(url)

    @app.workflow
    def pad(ctx: outlast.Context, i: int) -> str:
        return "x" * 2000

    for i in range(60):
        app.run(pad, i, run_id=f"r{i}")
    app.close()
    path = tmp_path / "outlast.db"
    size = path.stat().st_size
    with open(path, "r+b") as f:  # the middle half of the file: whole pages, whatever their size
        f.seek(size // 4)
        f.write(os.urandom(size // 2))
    for command in (["show", "r1"], ["runs"]):
        out = cli(*command, "--db", url)
        assert out.returncode == 1, out
        assert "is damaged" in out.stderr and "PRAGMA integrity_check" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.postgres
def test_postgres_readonly_needs_the_schema_and_creates_nothing(pg_url: str) -> None:
    with pytest.raises(ConfigurationError, match="no outlast schema"):
        open_store(pg_url, readonly=True)
    out = cli("runs", "--db", pg_url)
    assert out.returncode == 1 and "no outlast schema" in out.stderr
    app = outlast.App(pg_url)

    @app.workflow
    def one(ctx: outlast.Context) -> int:
        return 1

    app.run(one, run_id="p1")
    app.close()
    store = open_store(pg_url, readonly=True)
    try:
        record = store.get_run("p1")
        assert record is not None and record.status == "completed"
    finally:
        store.close()
