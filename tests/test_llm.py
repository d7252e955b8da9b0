"""outlast.llm with the real openai and anthropic SDKs against the local model server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from tests.llmkit import (
    Crash,
    _clients,
    bodies,
    finish,
    kill_when,
    oai,
    run_twice,
    spawn,
)

import outlast
import outlast.llm
from outlast.testing import FakeLLMServer, Fault, Reply, ToolCall


def test_sigkill_mid_conversation_resends_only_the_interrupted_request(store_url: str) -> None:
    with FakeLLMServer(latency=0.3) as server:
        proc = spawn(store_url, server.openai_base_url, "conv", "chat")
        kill_when(proc, server, 4)  # the 4th request is in flight when the process dies
        answers = finish(spawn(store_url, server.openai_base_url, "conv", "chat"))
        sent = bodies(server)
    assert len(answers) == 6
    assert len(sent) == 7
    counts = {b: sent.count(b) for b in sent}
    assert sorted(counts.values()) == [1, 1, 1, 1, 1, 2]
    assert counts[sent[3]] == 2  # only the interrupted request was sent again
    with outlast.App(store_url) as reader:
        info = reader.get_run("conv")
    assert info.recoveries == 1
    # Tokens of the 3 calls recovery did not make again, from their recorded usage.
    recorded = [s.meta["tokens"] for s in info.steps[:3]]
    assert info.stats["saved_tokens"] == sum(recorded) > 0
    assert info.stats["tokens"] == sum(s.meta["tokens"] for s in info.steps)


def test_budget_holds_across_a_crash(sqlite_url: str) -> None:
    with FakeLLMServer(latency=0.3, reply_tokens=100) as server:
        proc = spawn(sqlite_url, server.openai_base_url, "frugal", "budget")
        kill_when(proc, server, 3)
        result = finish(spawn(sqlite_url, server.openai_base_url, "frugal", "budget"))
        sent = server.count()
    # 103 tokens a call against 300: three calls fit. The resumed process counts the two
    # recorded before the crash, so it sends the interrupted third again and stops.
    assert result == {"calls": 3, "stopped": True, "spent": 309.0}
    assert sent == 4
    with outlast.App(sqlite_url) as reader:
        info = reader.get_run("frugal")
    assert info.stats["tokens"] == 309  # the crashed process's calls are accounted too


# -- replay checks -----------------------------------------------------------------------------

PROMPT = {"text": "Summarize the quarter", "crash": False}


def test_changed_prompt_raises_with_the_difference(sqlite_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(sqlite_url)
    llm = oai(server)

    @app.workflow
    def ask(ctx: outlast.Context) -> str:
        reply = llm.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT["text"]}]
        )
        if PROMPT["crash"]:
            raise Crash
        return reply.choices[0].message.content or ""

    PROMPT.update(text="Summarize the quarter", crash=True)
    with pytest.raises(Crash):
        app.run(ask, run_id="ask")
    PROMPT.update(text="Summarize the year", crash=False)
    with pytest.raises(outlast.NonDeterminismError) as err:
        app.run(ask, run_id="ask")
    message = str(err.value)
    assert "messages[0].content" in message
    assert "'Summarize the quarter'" in message and "'Summarize the year'" in message
    assert "on_change='call'" in message
    assert server.count() == 1


def test_changed_tool_list_names_the_tools_added(sqlite_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(sqlite_url)
    tools = outlast.llm.Tools(app)
    llm = oai(server)
    flag = {"crash": False}

    @tools.tool(effect="read_only")
    def weather(city: str) -> str:
        return "sunny"

    @app.workflow
    def ask(ctx: outlast.Context) -> str:
        reply = llm.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], tools=tools.schemas()
        )
        if flag["crash"]:
            raise Crash
        return reply.choices[0].message.content or ""

    flag["crash"] = True
    with pytest.raises(Crash):
        app.run(ask, run_id="tools-changed")

    @tools.tool(effect="at_most_once")
    def send_email(to: str, body: str) -> str:
        return "sent"

    flag["crash"] = False
    with pytest.raises(outlast.NonDeterminismError) as err:
        app.run(ask, run_id="tools-changed")
    assert "tools: added 'send_email' (recorded 1 tools, now 2)" in str(err.value)
    assert server.count() == 1


def test_on_change_call_sends_the_new_request(sqlite_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(sqlite_url)
    llm = oai(server)
    flag = {"crash": False}

    @app.workflow
    def ask(ctx: outlast.Context) -> str:
        client = llm.with_options(on_change="call")
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": PROMPT["text"]}]
        )
        if flag["crash"]:
            raise Crash
        return reply.choices[0].message.content or ""

    PROMPT["text"] = "first prompt"
    flag["crash"] = True
    with pytest.raises(Crash):
        app.run(ask, run_id="recall")
    PROMPT["text"] = "second prompt"
    flag["crash"] = False
    assert app.run(ask, run_id="recall").startswith("Reply to: second prompt")
    assert server.count() == 2


def test_rate_limit_with_retry_after_is_honoured(sqlite_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(sqlite_url)
    llm = oai(server, retry=outlast.Retry(attempts=3, initial=0.01, jitter=False))
    server.inject(Fault.rate_limit(retry_after=1.0))

    @app.workflow
    def ask(ctx: outlast.Context) -> str:
        reply = llm.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        return reply.choices[0].message.content or ""

    assert app.run(ask, run_id="limited").startswith("Reply to: hi")
    first, second = server.requests
    assert first.fault is not None and second.fault is None
    assert second.received_at - first.received_at >= 0.95  # the server asked for 1 s
    assert app.get_run("limited").steps[0].attempts == 2


def test_failed_call_is_recorded_and_replayed(sqlite_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(sqlite_url)
    llm = oai(server)
    flag = {"crash": False}
    server.inject(Fault.http_error(400, "bad request"))

    @app.workflow
    def ask(ctx: outlast.Context) -> str:
        try:
            llm.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        except openai.BadRequestError:
            outcome = "bad request"
        except outlast.StepFailed as exc:  # replayed: the SDK error is rebuilt by name only
            outcome = "bad request" if "BadRequestError" in exc.error_type else "other"
        if flag["crash"]:
            raise Crash
        return outcome

    assert run_twice(app, ask, run_id="failing", flag=flag) == "bad request"
    assert server.count() == 1


# -- streaming ---------------------------------------------------------------------------------


def test_streams_are_recorded_and_replayed(sqlite_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(sqlite_url)
    llm = oai(server)
    _clients.append(
        anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test", max_retries=0)
    )
    claude = outlast.llm.wrap(_clients[-1])
    flag = {"crash": False}
    seen: list[list[Any]] = []

    @app.workflow
    def streamed(ctx: outlast.Context) -> list[str]:
        chunks = list(llm.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "stream me"}], stream=True,
            stream_options={"include_usage": True},
        ))
        with claude.messages.stream(
            model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": "and me"}]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        seen.append([c.model_dump() for c in chunks] + [final.model_dump()])
        if flag["crash"]:
            raise Crash
        return ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices), text]

    result = run_twice(app, streamed, run_id="streams", flag=flag)
    assert result[0].startswith("Reply to: stream me") and result[1].startswith("Reply to: and me")
    assert server.count() == 2
    assert seen[0] == seen[1]  # the replay yields the same events, as the same SDK types
    steps = app.get_run("streams").steps
    assert [s.meta["stream"] for s in steps] == [True, True]
    assert all(s.meta["tokens"] > 0 for s in steps)


def test_async_client_streams_and_gathers(sqlite_url: str, server: FakeLLMServer) -> None:
    app = outlast.App(sqlite_url)
    flag = {"crash": False}

    @app.workflow
    async def fan_out(ctx: outlast.Context) -> list[str]:
        # One client per execution: its connections belong to this execution's event loop.
        async with openai.AsyncOpenAI(
            base_url=server.openai_base_url, api_key="test", max_retries=0
        ) as client:
            llm = outlast.llm.wrap(client)
            replies = await asyncio.gather(*(
                llm.responses.create(model="gpt-4o", input=f"topic {i}") for i in range(3)
            ))
            stream = await llm.responses.create(model="gpt-4o", input="streamed", stream=True)
            done = [e async for e in stream if e.type == "response.completed"]
        if flag["crash"]:
            raise Crash
        return [r.output_text for r in replies] + [done[0].response.output_text]

    result = run_twice(app, fan_out, run_id="async", flag=flag)
    assert [r.split(" [")[0] for r in result] == [
        "Reply to: topic 0", "Reply to: topic 1", "Reply to: topic 2", "Reply to: streamed"
    ]
    assert server.count() == 4


def test_outside_a_workflow_and_inside_a_step_calls_are_plain(
    sqlite_url: str, server: FakeLLMServer
) -> None:
    app = outlast.App(sqlite_url)
    llm = oai(server)

    @app.step
    def summarize() -> str:
        reply = llm.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "s"}])
        return reply.choices[0].message.content or ""

    @app.workflow
    def wf(ctx: outlast.Context) -> str:
        return summarize()

    llm.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "plain"}])
    app.run(wf, run_id="in-step")
    assert [s.kind for s in app.get_run("in-step").steps] == ["step"]
    assert server.count() == 2


# -- budgets, tools, storage -------------------------------------------------------------------


def test_cost_budget_stops_before_sending(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    with FakeLLMServer(reply_tokens=1000) as server:
        llm = oai(server, prices={"pricey-model": outlast.llm.Price(input=1000.0, output=1000.0)})

        @app.workflow(budget=outlast.Budget(cost=1.5))
        def spend(ctx: outlast.Context) -> int:
            for i in range(5):
                llm.chat.completions.create(
                    model="pricey-model", messages=[{"role": "user", "content": str(i)}]
                )
            return 5

        with pytest.raises(outlast.BudgetExceeded) as err:
            app.run(spend, run_id="spend")
        assert server.count() == 2  # $1.001 each: the second crosses, the third is never sent
    assert err.value.what == "cost" and "spend" in str(err.value)
    assert app.get_run("spend").stats["cost"] == pytest.approx(2.002)


def test_tool_calls_run_as_steps_keyed_by_call_id(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    tools = outlast.llm.Tools(app)
    ran: list[str] = []
    flag = {"crash": False}

    @tools.tool(effect="read_only")
    def weather(city: str) -> str:
        ran.append(city)
        return f"sunny in {city}"

    script = [
        Reply(tool_calls=[ToolCall("weather", {"city": "Oslo"}, id="call_b"),
                          ToolCall("weather", {"city": "Lima"}, id="call_a")]),
        Reply(text="Both sunny."),
    ]
    with FakeLLMServer(script) as server:
        llm = oai(server)

        @app.workflow
        def agent(ctx: outlast.Context) -> str:
            messages: list[Any] = [{"role": "user", "content": "weather?"}]
            while True:
                reply = llm.chat.completions.create(
                    model="gpt-4o", messages=messages, tools=tools.schemas("chat.completions")
                )
                messages.append(reply.choices[0].message)
                if not reply.choices[0].message.tool_calls:
                    break
                messages += tools.run(reply)
            if flag["crash"]:
                raise Crash
            return reply.choices[0].message.content or ""

        assert run_twice(app, agent, run_id="tools", flag=flag) == "Both sunny."
        second = server.requests[1].body["messages"]
    assert ran == ["Oslo", "Lima"]  # once each, not again on replay
    assert [m["content"] for m in second if m["role"] == "tool"] == ["sunny in Oslo", "sunny in Lima"]
    keys = [s.key for s in app.get_run("tools").steps if s.kind == "step"]
    assert keys == ["tool:weather:call_b", "tool:weather:call_a"]
    assert tools.effect("weather") == "read_only"


def stored_bytes(db_path: Path, run_id: str) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:  # `with conn` would not close
        journal = conn.execute(
            "SELECT coalesce(sum(length(output) + length(coalesce(meta, ''))), 0) "
            "FROM outlast_journal WHERE run_id = ?", (run_id,),
        ).fetchone()[0]
        blobs = conn.execute(
            "SELECT coalesce(sum(length(b.data)), 0) FROM outlast_blobs b "
            "JOIN outlast_blob_refs r ON r.hash = b.hash WHERE r.run_id = ?", (run_id,),
        ).fetchone()[0]
    return int(journal + blobs)


def test_growing_conversation_storage_is_linear(tmp_path: Path) -> None:
    app = outlast.App(f"sqlite:///{tmp_path}/conv.db")
    turns = 40
    with FakeLLMServer(reply_tokens=512) as server:  # 2 KB replies
        llm = oai(server)

        @app.workflow
        def talk(ctx: outlast.Context, n: int) -> int:
            messages: list[Any] = []
            for turn in range(n):
                messages.append({"role": "user", "content": f"turn {turn} " + "x" * 2040})
                reply = llm.chat.completions.create(model="gpt-4o", messages=messages)
                messages.append(reply.choices[0].message)
            return len(json.dumps([m if isinstance(m, dict) else m.model_dump() for m in messages]))

        payload = app.run(talk, turns, run_id="talk")
    stored = stored_bytes(tmp_path / "conv.db", "talk")
    # Each turn adds ~4 KB of new messages; the history resent every call is not stored again.
    assert stored <= 1.5 * payload + 1024 * turns, (stored, payload)
    assert payload > 4000 * turns
