"""Classes defined in a script: values written by ``python script.py`` (module ``__main__``) are
read by ``outlast worker script:app`` (module ``script``) and the other way round."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from outlast import serde
from outlast.errors import UnreadableValue
from outlast.store import open_store

SCRIPT = textwrap.dedent('''
    import dataclasses, json, os, sys

    import outlast
    from outlast import serde_classes

    app = outlast.App(os.environ["OUTLAST_DATABASE_URL"])


    @dataclasses.dataclass(frozen=True)
    class Params:
        topic: str
        n: int


    @app.step
    def search(p: Params) -> Params:
        return Params(p.topic.upper(), p.n + 1)


    @app.step
    def finish(p: Params) -> dict:
        if os.environ.get("CRASH_IN_FINISH"):
            os._exit(1)  # the process dies with the run half done
        return {"topic": p.topic, "n": p.n, "ran_in": __name__, "type": type(p).__qualname__}


    @app.workflow
    def research(p: Params) -> dict:
        return finish(search(p))


    ARGS = {"r1": Params("ai", 1), "r2": Params("db", 2), "r3": Params("old", 3)}

    if __name__ == "__main__":
        command = sys.argv[1]
        if command == "enqueue":
            app.enqueue(research, ARGS["r1"], run_id="r1")
        elif command == "crash":
            os.environ["CRASH_IN_FINISH"] = "1"
            app.run(research, ARGS["r2"], run_id="r2")
        elif command == "legacy":  # written as outlast 0.1.0 did: under the name __main__
            serde_classes._main_name = lambda: "__main__"
            app.enqueue(research, ARGS["r3"], run_id="r3")
        elif command in ("read", "legacy-read"):
            if command == "legacy-read":  # its argument hash was taken under that name
                serde_classes._main_name = lambda: "__main__"
            print(json.dumps({r: app.run(research, ARGS[r], run_id=r) for r in sys.argv[2:]}))
''')


def outlast_cli() -> list[str]:
    script = Path(sys.executable).parent / "outlast"
    return [str(script)] if script.exists() else [sys.executable, "-m", "outlast.cli"]


def run(args: list[str], cwd: Path, url: str, check: bool = True) -> str:
    env = {**os.environ, "OUTLAST_DATABASE_URL": url}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=90)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


def statuses(url: str) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db, db:
        return dict(db.execute("SELECT run_id, status FROM outlast_runs").fetchall())


def test_runs_of_a_script_are_finished_by_the_worker_and_read_back_by_the_script(
    tmp_path: Path, sqlite_url: str
) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    run([sys.executable, "script.py", "enqueue"], tmp_path, sqlite_url)  # arguments only
    crashed = subprocess.run(  # arguments and a recorded step result, then a crash
        [sys.executable, "script.py", "crash"], cwd=tmp_path, timeout=90,
        env={**os.environ, "OUTLAST_DATABASE_URL": sqlite_url},
    )
    assert crashed.returncode == 1
    run([sys.executable, "script.py", "legacy"], tmp_path, sqlite_url)  # named __main__.Params
    store = open_store(sqlite_url)  # the stored bytes (opened, in the encrypted pass)
    stored = {r: store.get_run(r).input for r in ("r1", "r3")}  # type: ignore[union-attr]
    store.close()
    assert b'"script:Params"' in stored["r1"] and b'"__main__:Params"' in stored["r3"]

    run(outlast_cli() + ["worker", "script:app", "--burst"], tmp_path, sqlite_url)
    assert statuses(sqlite_url) == {"r1": "completed", "r2": "completed", "r3": "completed"}

    # The script itself reads the results the worker stored (and the replayed step values).
    results = json.loads(run([sys.executable, "script.py", "read", "r1", "r2"],
                             tmp_path, sqlite_url))
    assert results == {
        "r1": {"topic": "AI", "n": 2, "ran_in": "script", "type": "Params"},
        "r2": {"topic": "DB", "n": 3, "ran_in": "script", "type": "Params"},
    }
    legacy = json.loads(run([sys.executable, "script.py", "legacy-read", "r3"], tmp_path,
                            sqlite_url))
    assert legacy == {"r3": {"topic": "OLD", "n": 4, "ran_in": "script", "type": "Params"}}


def test_script_name_is_the_stored_module_name(tmp_path: Path) -> None:
    code = ("import dataclasses, sys\nfrom outlast import serde\n"
            "@dataclasses.dataclass\nclass P:\n    x: int\n"
            "data = serde.dumps(P(1))\nsys.stdout.write(data.decode())\n"
            "back = serde.loads(data)\nassert type(back) is P, back\n")
    (tmp_path / "my_agent.py").write_text(code)
    out = subprocess.run([sys.executable, "my_agent.py"], cwd=tmp_path, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out == '{"__o":"dc","c":"my_agent:P","v":{"x":1}}'


def test_value_whose_class_is_not_loaded_is_unreadable_here() -> None:
    with pytest.raises(UnreadableValue) as info:
        serde.loads(b'{"__o":"dc","c":"__main__:Params","v":{"topic":"x","n":1}}',
                    what="arguments of run 'r1'")
    assert info.value.type_name == "__main__.Params"
    assert "arguments of run 'r1'" in str(info.value)
