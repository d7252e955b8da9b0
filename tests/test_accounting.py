"""One definition of what a run spent on model calls: in all (from the journal, also what a
crashed or failed execution spent) and in its last execution; ints for counts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from tests.proc import keys_env

import outlast
import outlast.llm
from outlast.testing import FakeLLMServer

ROOT = Path(__file__).resolve().parent.parent


class Crash(BaseException):
    """Stands for the process dying: the execution never writes its figures."""


@pytest.fixture
def llm() -> Iterator[Any]:
    with FakeLLMServer(reply_tokens=50) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        yield outlast.llm.wrap(client)
        client.close()


def _ask(llm: Any, text: str) -> str:
    reply = llm.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
    return str(reply.choices[0].message.content)


def test_spent_in_all_counts_every_recorded_call(sqlite_url: str, llm: Any) -> None:
    app = outlast.App(sqlite_url)
    flag = {"crash": True}

    @app.workflow
    def agent(ctx: outlast.Context) -> int:
        for i in range(3):
            _ask(llm, f"q{i}")
        if flag["crash"]:
            raise Crash
        for i in range(3, 5):
            _ask(llm, f"q{i}")
        return 5

    with pytest.raises(Crash):
        app.run(agent, run_id="a")
    flag["crash"] = False
    assert app.run(agent, run_id="a") == 5
    info = app.get_run("a")
    calls = [s for s in info.steps if s.kind == "llm"]
    assert len(calls) == 5
    assert info.stats["llm_calls"] == 5 and isinstance(info.stats["llm_calls"], int)
    assert info.stats["tokens"] == sum(s.meta["tokens"] for s in calls) > 0
    assert info.stats["cost"] == pytest.approx(sum(s.meta["cost"] for s in calls))
    assert info.stats["last_llm_calls"] == 2 and isinstance(info.stats["last_llm_calls"], int)
    assert info.stats["last_tokens"] == sum(s.meta["tokens"] for s in calls[3:])
    out = subprocess.run(
        [sys.executable, "-m", "outlast.cli", "show", "a", "--db", sqlite_url],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200", **keys_env()},
    )
    assert out.returncode == 0, out.stderr
    tokens, last = info.stats["tokens"], info.stats["last_tokens"]
    assert f"model: 5 call(s), {tokens} tokens" in out.stdout
    assert f"last execution: 2 call(s), {last} tokens" in out.stdout
    app.close()


def test_a_run_failed_by_a_changed_prompt_shows_what_it_spent(sqlite_url: str, llm: Any) -> None:
    app = outlast.App(sqlite_url)
    prompt = {"text": "Summarize the quarter", "crash": True}

    @app.workflow
    def ask(ctx: outlast.Context) -> str:
        answer = _ask(llm, prompt["text"])
        if prompt["crash"]:
            raise Crash
        return answer

    with pytest.raises(Crash):
        app.run(ask, run_id="ask")
    prompt.update(text="Summarize the year", crash=False)
    with pytest.raises(outlast.NonDeterminismError):
        app.run(ask, run_id="ask")
    info = app.get_run("ask")
    assert info.status == "failed"
    assert info.stats["llm_calls"] == 1 and info.stats["tokens"] > 0 and info.stats["cost"] > 0
    assert info.stats["last_llm_calls"] == 0
    app.close()


def test_runs_without_model_calls_get_no_model_figures(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)

    @app.workflow
    def plain(ctx: outlast.Context) -> int:
        return 1

    app.run(plain, run_id="p")
    assert "llm_calls" not in app.get_run("p").stats
    app.close()
