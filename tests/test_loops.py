"""Sync and async, consistently: one event loop per execution of a sync workflow, sync steps
off the loop in async workflows, and RetryableError that retries."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from typing import Any

import pytest

import outlast
from outlast import Context
from outlast.testing import FakeLLMServer, Reply


def test_a_module_level_async_client_works_across_async_steps_of_a_sync_workflow(
    sqlite_url: str,
) -> None:
    openai = pytest.importorskip("openai")
    with FakeLLMServer([Reply(text="one"), Reply(text="two"), "x", "y", "z", "w"]) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="t", max_retries=0)
        app = outlast.App(sqlite_url)
        loops: list[int] = []

        @app.step
        async def ask(prompt: str) -> str:
            loops.append(id(asyncio.get_running_loop()))
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )
            return str(reply.choices[0].message.content)

        @app.workflow
        def agent(ctx: Context) -> list[str]:
            return [ask("first"), ask("second")]

        assert app.run(agent, run_id="two-steps") == ["one", "two"]
        assert len(loops) == 2 and loops[0] == loops[1]  # one loop across steps
        # Another execution (another run, another thread) can use the same client.
        assert app.run(agent, run_id="again") == ["x", "y"]
        other: list[Any] = []
        thread = threading.Thread(target=lambda: other.append(app.run(agent, run_id="t")))
        thread.start()
        thread.join()
        assert other == [["z", "w"]]
        assert len(set(loops)) == 1  # one process-wide loop served every execution
        from outlast import aio

        aio.run(client.close())  # its connections live on that loop: close them there
        app.close()


def test_sync_steps_in_an_async_workflow_run_off_the_event_loop(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    threads: list[str] = []

    @app.step
    def slow(i: int) -> int:
        threads.append(threading.current_thread().name)
        threading.Event().wait(0.3)
        return i

    @app.workflow
    async def flow(ctx: Context) -> int:
        total = 0
        for i in range(3):
            total += await slow(i)  # awaited like an async step
        return total

    async def main() -> tuple[int, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.create_task(ticker())
        result = await app.run_async(flow, run_id="off-loop")
        done.set()
        await task
        return result, ticks

    result, ticks = asyncio.run(main())
    assert result == 3
    assert ticks >= 5, f"the event loop was blocked: {ticks} ticks in ~0.9 s of sync steps"
    assert all(name != threading.main_thread().name for name in threads)
    app.close()


@pytest.mark.counts_executions
def test_parallel_sync_steps_keep_call_order_identity_on_replay(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    ran: Counter[int] = Counter()

    @app.step
    def work(i: int) -> int:
        ran[i] += 1
        threading.Event().wait(0.05 * (3 - i))  # finish in reverse order
        return i * 10

    @app.workflow
    async def fan(ctx: Context) -> list[int]:
        return list(await asyncio.gather(*(work(i) for i in range(3))))

    assert app.run(fan, run_id="fan") == [0, 10, 20]
    keys = [(s.key, s.position) for s in app.get_run("fan").steps]
    assert keys == [("work:1", 0), ("work:2", 1), ("work:3", 2)]
    app.close()
    assert ran == Counter({0: 1, 1: 1, 2: 1})


def test_retryable_error_retries_a_step_declared_without_a_policy(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    tries: list[int] = []

    @app.step
    def flaky() -> str:
        tries.append(1)
        if tries.count(1) < 3:
            raise outlast.RetryableError("busy, try again", retry_after=0.01)
        return "ok"

    @app.step
    def plain() -> str:
        tries.append(2)
        raise ValueError("no")

    @app.workflow
    def flow(ctx: Context) -> str:
        with contextlib.suppress(ValueError):
            plain()
        return str(flaky())

    assert app.run(flow) == "ok"
    assert tries.count(1) == 3 and tries.count(2) == 1  # other errors still do not retry
    app.close()


def test_a_step_with_an_explicit_single_attempt_does_not_retry_retryable(sqlite_url: str) -> None:
    app = outlast.App(sqlite_url)
    tries: list[int] = []

    @app.step(retry=outlast.Retry(attempts=1))
    def once() -> Any:
        tries.append(1)
        raise outlast.RetryableError("no")

    @app.workflow
    def flow(ctx: Context) -> Any:
        return once()

    with pytest.raises(outlast.RetryableError):
        app.run(flow)
    assert tries == [1]
    app.close()
