"""Helpers shared by the fleet tests and the fleet benchmark: worker subprocesses of
``tests.apps.fleet_app``, its side log, and journal checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import outlast

ROOT = Path(__file__).resolve().parent.parent


def spawn_worker(
    url: str,
    log: Path,
    *,
    concurrency: int = 4,
    burst: bool = False,
    poll: float = 0.05,
    env: dict[str, str] | None = None,
    wrap: list[str] | None = None,
) -> subprocess.Popen[bytes]:
    """``outlast worker tests.apps.fleet_app:app`` as a subprocess; its stderr goes to
    ``<log>.<n>.err`` (see :func:`stderr_of`). ``wrap``: a command prefix (``unshare``...)."""
    cmd = (wrap or []) + [
        sys.executable, "-m", "outlast.cli", "worker", "tests.apps.fleet_app:app", "--db", url,
        "--concurrency", str(concurrency), "--poll", str(poll),
    ] + (["--burst"] if burst else [])
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "FLEET_LOG": str(log), **(env or {})}
    n = len(list(log.parent.glob(f"{log.name}.*.err")))
    err = open(f"{log}.{n}.err", "wb")  # noqa: SIM115 - owned by the child from here on
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=err)
    err.close()
    proc.err_path = f"{log}.{n}.err"  # type: ignore[attr-defined]
    return proc


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    return Path(proc.err_path).read_text(errors="replace")  # type: ignore[attr-defined]


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_until(
    cond: Callable[[], bool], timeout: float, what: str, procs: Iterable[subprocess.Popen[bytes]] = ()
) -> None:
    """Poll ``cond`` until true; fail naming ``what`` (and any worker that died early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"worker {p.pid} exited ({p.returncode}):\n{stderr_of(p)}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def all_finished(app: outlast.App, run_ids: list[str]) -> Callable[[], bool]:
    def check() -> bool:
        done = app.list_runs(status="completed", limit=len(run_ids) + 10)
        return len(done) >= len(run_ids)

    return check


def check_journals(app: outlast.App, run_ids: list[str], steps: int, log: Path) -> Counter[str]:
    """Every run completed with exactly ``steps`` step results, each recorded by a process
    that really executed that step. Returns how often each ``run:j`` step started."""
    done = {tuple(line.split()[1:3]) for line in lines(log) if line.startswith("done ")}
    starts = Counter(line.split()[1] for line in lines(log) if line.startswith("start "))
    for rid in run_ids:
        info = app.get_run(rid)
        assert info.status == "completed", (rid, info.status)
        got = [(s.position, s.key, s.status) for s in info.steps]
        names = [s.name for s in info.steps]
        assert got == [(j, f"{names[j]}:{j + 1}", "completed") for j in range(steps)], got
        for j, pid in enumerate(info.result):
            assert (f"{rid}:{j}", str(pid)) in done, (rid, j, pid)
    return starts


def stop_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
