"""The one event loop that runs async code for sync callers.

A sync workflow that calls async steps, and a sync caller of an async workflow (``app.run``,
a worker thread), run the coroutine on one long-lived event loop in a daemon thread of this
process, with the caller's context variables, and block until it finishes. One loop, not one
per call: loop-bound clients (``openai.AsyncOpenAI``, ``httpx.AsyncClient``, database pools)
created at module level or in an earlier step keep working from step to step and from run to
run, which a fresh ``asyncio.run`` per call breaks ("Event loop is closed").

The loop starts on first use (so ``import outlast`` stays free of asyncio), starts again in a
forked child, and stops at interpreter exit. A caller already on that loop's thread (sync code
called from async code running there) gets a private loop in a helper thread instead of a
deadlock.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import contextvars
import os
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")

__all__ = ["run"]

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid = -1


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread, _pid
    with _lock:
        if _loop is not None and _pid == os.getpid() and _thread is not None and _thread.is_alive():
            return _loop
        import asyncio  # lazily: slow to import; sync users never need it

        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        thread = threading.Thread(target=serve, name="outlast-event-loop", daemon=True)
        thread.start()
        ready.wait()
        _loop, _thread, _pid = loop, thread, os.getpid()
        return loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the process's event loop with the caller's context; block for it."""
    if _thread is not None and threading.current_thread() is _thread and _pid == os.getpid():
        return _run_aside(coro)
    loop = _get_loop()
    ctx = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    tasks: list[asyncio.Task[T]] = []

    def start() -> None:
        task = loop.create_task(coro, context=ctx)
        tasks.append(task)

        def finished(t: asyncio.Task[T]) -> None:
            if t.cancelled():
                done.cancel()
            elif (exc := t.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(t.result())

        task.add_done_callback(finished)

    loop.call_soon_threadsafe(start)
    try:
        return done.result()
    except concurrent.futures.CancelledError:
        import asyncio

        raise asyncio.CancelledError() from None
    except BaseException:
        if not done.done():  # the caller was interrupted (KeyboardInterrupt): stop the task
            loop.call_soon_threadsafe(lambda: [t.cancel() for t in tasks])
        raise


def _run_aside(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio

    ctx = contextvars.copy_context()
    box: list[Any] = []

    def target() -> None:
        try:
            box.append((True, ctx.run(asyncio.run, coro)))
        except BaseException as exc:  # handed to the caller
            box.append((False, exc))

    thread = threading.Thread(target=target, name="outlast-event-loop-aside", daemon=True)
    thread.start()
    thread.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


@atexit.register
def _stop() -> None:
    loop, thread = _loop, _thread
    if loop is None or thread is None or _pid != os.getpid() or not thread.is_alive():
        return
    import asyncio

    async def shutdown() -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await loop.shutdown_asyncgens()

    with contextlib.suppress(Exception):  # exiting anyway
        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    if not thread.is_alive():
        loop.close()
