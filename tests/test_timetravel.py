"""Time travel over graph runs: checkpoints, state at a checkpoint, forks, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.apps.graphy import loop_graph

import outlast
from outlast.cli import main
from outlast.errors import ConfigurationError


def test_fork_from_a_middle_checkpoint(store_url: str) -> None:
    app = outlast.App(store_url)
    graph = loop_graph(app)
    source = app.run(graph, {"rounds": 3}, run_id="src")
    cps = app.checkpoints("src")
    assert [c.id for c in cps] == ["0", "1", "2", "3", "4", "5"]
    assert cps[0].next == cps[1].node  # the input's checkpoint names the first node
    assert cps[2].node == "search" and cps[2].summary == "log='search0', n=1"

    handle = app.fork("src", "2", update={"rounds": 1, "log": "edited"}, new_run_id="fork-1")
    assert isinstance(handle, outlast.Run) and handle.run_id == "fork-1"
    forked = handle.result(timeout=30)
    # The edit went through the reducers (appended), and the route saw rounds=1: straight to write.
    assert forked["log"] == ["plan", "search0", "edited", "write"]
    assert source["log"] == ["plan", "search0", "search1", "search2", "write"]

    fcps = app.checkpoints("fork-1")
    shared, own = fcps[:3], fcps[3:]
    assert [(c.id, c.run_id, c.node) for c in shared] == [(c.id, c.run_id, c.node) for c in cps[:3]]
    assert [(c.node, c.run_id) for c in own] == [("__fork__", "fork-1"), ("write", "fork-1")]
    assert own[0].summary.startswith("forked from src at 2")
    assert app.state("fork-1", "1") == app.state("src", "1")
    assert app.state("fork-1") == forked
    assert app.state("src") == source  # the source is untouched
    # Its origin is recorded where every fork keeps it (not only in its input).
    info = app.get_run("fork-1")
    assert (info.forked_from, info.forked_at) == ("src", "2") and "forked_from" not in info.stats

    # A fork of the fork goes back through both lineages.
    pending = app.fork("fork-1", "3", new_run_id="fork-2", execute=False)
    recorded = app.get_run("fork-2", steps=False)  # known before it executes
    assert (recorded.status, recorded.forked_from, recorded.forked_at) == ("pending", "fork-1", "3")
    assert pending.result(timeout=30) == forked
    assert [c.run_id for c in app.checkpoints("fork-2")][:5] == ["src", "src", "src", "fork-1", "fork-2"]
    assert app.get_run("fork-2").forked_from == "fork-1"  # kept through its execution
    assert [i.forked_from for i in app.list_runs() if i.run_id == "fork-2"] == ["fork-1"]
    shown = CliRunner().invoke(main, ["show", "fork-2", "--db", store_url])
    assert shown.exit_code == 0 and "forked from fork-1 at checkpoint 3" in shown.output, shown.output
    as_json = CliRunner().invoke(main, ["show", "fork-2", "--db", store_url, "--json"])
    doc = json.loads(as_json.output)
    assert (doc["forked_from"], doc["forked_at"]) == ("fork-1", "3"), doc
    app.close()


def test_fork_errors_leave_no_run(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    graph = loop_graph(app)
    app.run(graph, {"rounds": 1}, run_id="src")

    @app.workflow
    def plain(x: int) -> int:
        return x

    app.run(plain, 1, run_id="plain-1")
    with pytest.raises(ConfigurationError, match=r"run 'src' has no checkpoint '99'; its checkpoints are: 0, 1, 2, 3"):
        app.fork("src", "99")
    # Any run has checkpoints now (docs/versioning.md): plain-1 made no durable call.
    assert [(c.id, c.kind) for c in app.checkpoints("plain-1")] == [("0", "start")]
    with pytest.raises(ConfigurationError, match="not a graph run"):
        app.fork("plain-1", "0", update={"x": 1})
    with pytest.raises(outlast.SerializationError):
        app.fork("src", "1", update={"bad": object()})
    with pytest.raises(outlast.RunNotFound):
        app.state("nope")
    assert {r.run_id for r in app.list_runs()} == {"src", "plain-1"}
    app.close()


def test_cli_show_lists_checkpoints_and_fork_records_a_run(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    from tests.apps import graphy

    monkeypatch.setenv("GRAPHY_LOG", str(tmp_path / "log"))
    graphy.app.use(sqlite_url)
    graphy.app.run(graphy.chain, {"total": 0}, run_id="c1")
    runner = CliRunner()
    shown = runner.invoke(main, ["show", "c1", "--db", sqlite_url])
    assert shown.exit_code == 0, shown.output
    assert "checkpoints" in shown.output and "n10" in shown.output and "__end__" in shown.output

    out = runner.invoke(
        main,
        ["fork", "tests.apps.graphy:app", "c1", "8", "--db", sqlite_url, "--run-id", "c1-fork",
         "--update", json.dumps({"total": 1})],
    )
    assert out.exit_code == 0, out.output
    assert "as run c1-fork" in out.output
    assert graphy.app.get_run("c1-fork").status == "pending"  # recorded for a worker
    final = graphy.app.handle("c1-fork").result(timeout=30)
    assert final["total"] == 1 + 90 + 100 and final["trail"][-2:] == ["n9", "n10"]

    bad = runner.invoke(main, ["fork", "tests.apps.graphy:app", "c1", "8", "--db", sqlite_url, "--update", "[1]"])
    assert bad.exit_code != 0 and "JSON object" in bad.output
    graphy.app.close()
