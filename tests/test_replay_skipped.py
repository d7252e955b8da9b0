"""`outlast replay` and runs of workflows the app does not register: listed as skipped (not
checked), failing the command only with --strict."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner
from tests.apps.evolving import build

import outlast
from outlast.cli import main


def test_runs_of_unregistered_workflows_are_skipped_and_fail_only_with_strict(
    store_url: str,
) -> None:
    other = outlast.App(store_url)

    @other.workflow
    def elsewhere(ctx: outlast.Context) -> object:
        return ctx.wait_for("never")

    other.enqueue(elsewhere, run_id="foreign")
    v1 = build("v1", store_url)
    v1.start("flow", 1, run_id="mine")
    deadline = time.monotonic() + 20
    while v1.get_run("mine", steps=False).status != "suspended":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    v1.close()
    target = "tests.apps.evolving:patched"
    runner = CliRunner()

    lenient = runner.invoke(main, ["replay", target, "--db", store_url])
    assert lenient.exit_code == 0, lenient.output
    lines = lenient.output.splitlines()
    assert any(line.startswith("OK       mine (flow, suspended)") for line in lines), lines
    [line] = [line for line in lines if "foreign" in line]
    assert line.startswith("SKIPPED  foreign (elsewhere, pending): not checked"), line
    assert "registers no workflow 'elsewhere'" in line
    assert lines[-1] == (
        f"1 run(s) checked, 0 diverged or failed, 1 skipped (not checked: {target} registers "
        "no workflow 'elsewhere'; add --strict to fail on them)"
    )

    strict = runner.invoke(main, ["replay", target, "--strict", "--db", store_url])
    assert strict.exit_code == 1, strict.output
    assert "--strict fails on them" in strict.output.splitlines()[-1]
    as_json = runner.invoke(main, ["replay", target, "--strict", "--json", "--db", store_url])
    assert as_json.exit_code == 1
    doc = json.loads(as_json.output)
    assert doc["ok"] is False and doc["skipped"] == ["foreign"]
    assert {r["run_id"]: r["outcome"] for r in doc["runs"]} == {"mine": "ok", "foreign": "skipped"}
    # --strict with nothing skipped passes; the API says which runs were not checked.
    only_mine = runner.invoke(main, ["replay", target, "mine", "--strict", "--db", store_url])
    assert only_mine.exit_code == 0, only_mine.output
    results = {r.run_id: r for r in build("patched", store_url).check_replay()}
    assert results["foreign"].skipped and results["foreign"].ok
    assert not results["mine"].skipped and results["mine"].ok
