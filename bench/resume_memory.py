"""Peak memory of resuming a long conversation: N turns of 2 KB messages, history resent.

    python bench/resume_memory.py [--turns 100,300]

A child process holds an N-turn conversation with the local model server through the real
``openai`` SDK (each turn: a 2 KB user message, the whole history sent, a 2 KB reply) and
SIGKILLs itself when turn N+1 starts, leaving N model calls journaled. Fresh children then
resume the run (replaying the N calls from the journal, without contacting the model: the
server's log is checked) up to turn N+1 and report their peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). The
"bare" child imports the same modules, opens the same store and client, and does nothing else.
Target (issue 22): the resume under 2x the bare process.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
from typing import Any

MESSAGE = 2048


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _child(mode: str, url: str, base_url: str, turns: int) -> None:
    import openai

    import outlast
    import outlast.llm

    app = outlast.App(url)
    client = openai.OpenAI(base_url=base_url, api_key="test", max_retries=0)
    llm = outlast.llm.wrap(client)

    @app.workflow
    def talk(ctx: outlast.Context, n: int) -> int:
        messages: list[Any] = []
        for turn in range(n + 1):
            if turn == n:  # the first call the journal does not hold
                print(f"peak {_peak_mb():.1f}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            messages.append({"role": "user", "content": f"turn {turn} " + "x" * (MESSAGE - 8)})
            reply = llm.chat.completions.create(model="gpt-4o-mini", messages=messages)
            messages.append(reply.choices[0].message)
        return n

    if mode == "bare":
        app.store.load_journal("conv")  # the store opened, as a resume opens it
        print(f"peak {_peak_mb():.1f}", flush=True)
        return
    app.run(talk, turns, run_id="conv")


def _spawn(mode: str, url: str, base_url: str, turns: int) -> float:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, url, base_url, str(turns)],
        capture_output=True, text=True, timeout=900,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("peak "):
            return float(line.split()[1])
    raise RuntimeError(f"{mode} child reported nothing: {proc.stderr[-3000:]}")


def _server(log: str) -> tuple[subprocess.Popen[str], str]:
    """The local model server in a process of its own: the measuring parent stays small (a
    child's ``ru_maxrss`` starts from its parent's size at fork), and an in-process server
    would count the request bodies it logs (~180 MB for 300 turns)."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "outlast.testing.llm_server", "--port", "0",
             "--reply-tokens", str(MESSAGE // 4), "--verbose"],
            stdout=subprocess.PIPE, stderr=err, text=True,
        )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _sent(log: str) -> int:
    with open(log) as f:
        # One line per request from the server ("POST /v1/chat/completions"), one from http.server.
        return sum("POST /v1/chat/completions" in line and "HTTP/" not in line for line in f)


def measure(turns: int, url: str, folder: str, repeat: int = 3) -> dict[str, float]:
    """Peak RSS (MB) of the bare process, the first execution and a resume, for ``turns``."""
    log = os.path.join(folder, "server.log")
    server, base = _server(log)
    try:
        first = _spawn("run", url, f"{base}/v1", turns)
        resumes = [_spawn("run", url, f"{base}/v1", turns) for _ in range(repeat)]
        bare = [_spawn("bare", url, f"{base}/v1", turns) for _ in range(repeat)]
    finally:
        server.terminate()
        server.communicate(timeout=30)
    if _sent(log) != turns:
        raise RuntimeError(f"the resumes sent {_sent(log) - turns} requests again; expected none")
    return {"bare": min(bare), "first": first, "resume": max(resumes)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, url, base_url, count = sys.argv[2:6]
        _child(mode, url, base_url, int(count))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", default="100,300", help="comma-separated turn counts")
    args = parser.parse_args()
    print("| turns | bare process | first execution | resume | resume / bare |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for turns in (int(t) for t in args.turns.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            got = measure(turns, f"sqlite:///{folder}/conv.db", folder)
        print(f"| {turns} | {got['bare']:.0f} MB | {got['first']:.0f} MB | {got['resume']:.0f} MB "
              f"| {got['resume'] / got['bare']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
