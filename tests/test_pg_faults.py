"""PostgreSQL restarted under a worker fleet's load: workers reconnect and carry on, and every
run completes with exactly one recorded result per step.

This restarts the real test server (``pg_ctlcluster ... restart``, a few seconds), so other
PostgreSQL tests running at the same moment see their connections drop; the store's
reconnects are built for exactly that. The server is started again even if the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.apps import fleet_app
from tests.fleetkit import (
    all_finished,
    check_journals,
    lines,
    spawn_worker,
    stderr_of,
    stop_all,
    wait_until,
)

import outlast

pytestmark = pytest.mark.postgres

CLUSTER = os.environ.get("OUTLAST_TEST_PG_CLUSTER", "15 main").split()


def _ctl(action: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *CLUSTER, action, *options],
        capture_output=True, timeout=60,
    )


@pytest.fixture
def restartable(pg_url: str) -> Iterator[str]:
    """The pg_url, on a server this test may restart; brought back up whatever happens."""
    if shutil.which("pg_ctlcluster") is None or _ctl("status").returncode != 0:
        message = (f"restarting PostgreSQL needs pg_ctlcluster and the local cluster {CLUSTER} "
                   "(set OUTLAST_TEST_PG_CLUSTER, or OUTLAST_SKIP_POSTGRES=1 to skip)")
        if os.environ.get("OUTLAST_SKIP_POSTGRES") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    try:
        yield pg_url
    finally:
        if _ctl("status").returncode != 0:
            _ctl("start")
        import psycopg

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                psycopg.connect(pg_url.split("?")[0], connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.2)


def test_postgres_restart_under_load_loses_nothing(
    restartable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, log = restartable, tmp_path / "side.log"
    monkeypatch.setenv("FLEET_LOG", str(log))
    app: outlast.App = fleet_app.app
    app.use(url)
    n = 150
    try:
        ids = [app.enqueue(fleet_app.triple, run_id=f"f{i:03d}").run_id for i in range(n)]
        env = {"FLEET_STEP_SLEEP": "0.1", "FLEET_LEASE": "5"}
        workers = [spawn_worker(url, log, env=env) for _ in range(2)]
        try:
            wait_until(lambda: sum(x.startswith("done") for x in lines(log)) >= 60, 30,
                       "the load to get going", workers)
            restart = _ctl("restart", "-m", "fast")  # drops every connection
            assert restart.returncode == 0, restart.stderr.decode()
            done_at_restart = sum(x.startswith("done") for x in lines(log))
            assert done_at_restart < 3 * n  # the restart struck mid-load
            wait_until(all_finished(app, ids), 90, f"{n} runs to complete after the restart",
                       workers)
            for p in workers:
                p.send_signal(signal.SIGTERM)
            for p in workers:
                assert p.wait(timeout=15) == 0, stderr_of(p)
        finally:
            stop_all(workers)
        starts = check_journals(app, ids, 3, log)
        # a step whose outcome the restart swallowed may run again, but is recorded once
        assert sum(starts.values()) - 3 * n <= 8, starts.most_common(10)
    finally:
        app.close()
