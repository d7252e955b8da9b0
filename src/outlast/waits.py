"""Durable timers and events: ``ctx.sleep``, ``ctx.sleep_until``, ``ctx.wait_for``.

Two tiers, same results. A wait whose remaining time is at most ``App.hibernate_after``
seconds stays in memory: the thread (or task) waits while the heartbeat keeps the lease. A
longer wait, or one without a timeout, hibernates at once: :class:`~outlast.errors.Suspend`
makes the engine release the run as ``suspended`` (no thread, no lease) until its timer is
due or its event is sent; it then replays from its journal to this wait.

Determinism: the moment a wait ends is journaled before waiting (a ``timer`` entry for a
sleep, a ``deadline`` entry for an event timeout), so a replay after a crash waits only for
what is left. An event is consumed and journaled in one fenced transaction
(:meth:`~outlast.store.base.Store.take_event`), so it is delivered exactly once; a timeout is
journaled as a failed ``event`` entry, so a replay raises the same :class:`Timeout` even if
the event arrives later (that event stays queued for the next ``wait_for`` of its name).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import lease, serde
from .errors import ConfigurationError, Suspend, Timeout

if TYPE_CHECKING:
    from .context import RunState
    from .durable import DurableCall

#: how often an in-memory event wait looks at the store (events from other processes)
POLL = 0.05


def _seconds(value: float | timedelta, what: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigurationError(f"{what} must be seconds (a number) or a timedelta, got {value!r}")
    return float(value)


def _recorded_time(
    state: RunState, kind: str, name: str, compute: Callable[[], float], key: str | None = None
) -> float:
    """The end of a wait: computed once, journaled, and read back from the journal on replay."""
    call = state.begin(kind, name, key=key)
    if call.replayed:
        return float(call.value(blobs=False))
    return float(call.complete(compute(), large=False))


def _hibernates(state: RunState, remaining: float | None) -> bool:
    return remaining is None or remaining > state.app.hibernate_after


# -- timers ----------------------------------------------------------------------------------


def sleep(state: RunState, seconds: float | timedelta) -> Any:
    """``ctx.sleep``: see :meth:`~outlast.Context.sleep`."""
    delay = max(0.0, _seconds(seconds, "ctx.sleep(seconds)"))
    return _until(state, _recorded_time(state, "timer", "sleep", lambda: time.time() + delay))


def sleep_until(state: RunState, when: datetime | float) -> Any:
    """``ctx.sleep_until``: a naive datetime is local time, as ``datetime.timestamp`` reads it."""
    at = when.timestamp() if isinstance(when, datetime) else _seconds(when, "ctx.sleep_until(when)")
    return _until(state, _recorded_time(state, "timer", "sleep_until", lambda: at))


def _until(state: RunState, wake_at: float) -> Any:
    remaining = wake_at - time.time()
    if remaining > 0 and _hibernates(state, remaining):
        raise Suspend(f"run {state.run_id!r} sleeps until {wake_at}", wake_at=wake_at)
    if state.is_async:
        return _nap_async(state, wake_at)
    _nap(state, wake_at)
    return None


def _nap(state: RunState, until: float) -> None:
    # Short naps, so a cancel or a lost lease stops the wait within a quarter second.
    waited = False
    while (left := until - time.time()) > 0:
        waited = True
        time.sleep(min(left, 0.25))
        state.check()
    if waited:  # a cancel from another process, before the next step starts
        lease.confirm(state)


async def _nap_async(state: RunState, until: float) -> None:
    waited = False
    while (left := until - time.time()) > 0:
        waited = True
        import asyncio  # lazily: slow to import; sync users never need it
        await asyncio.sleep(min(left, 0.25))
        state.check()
    if waited:
        lease.confirm(state)


# -- events ----------------------------------------------------------------------------------


def wait_for(
    state: RunState, name: str, timeout: float | timedelta | None = None, *, key: str | None = None
) -> Any:
    """``ctx.wait_for``: see :meth:`~outlast.Context.wait_for`. ``key``: an explicit identity
    for the wait (and its deadline), e.g. a tool-call id, so it does not depend on call order."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"ctx.wait_for: the event name must be a non-empty string, got {name!r}")
    deadline: float | None = None
    if timeout is not None:
        secs = max(0.0, _seconds(timeout, "ctx.wait_for(timeout)"))
        deadline = _recorded_time(
            state, "deadline", f"timeout:{name}", lambda: time.time() + secs, key
        )
    call = state.begin("event", name, key=key)
    if call.replayed:
        return _replayed_async(call) if state.is_async else call.value(blobs=False)
    waiter = _EventWait(state, call, name, deadline)
    return waiter.run_async() if state.is_async else waiter.run()


async def _replayed_async(call: DurableCall) -> Any:
    return call.value(blobs=False)


class _EventWait:
    """One unanswered ``wait_for``: take the event, time out, hibernate, or wait a little."""

    __slots__ = ("state", "call", "name", "deadline")

    def __init__(self, state: RunState, call: DurableCall, name: str, deadline: float | None) -> None:
        self.state, self.call, self.name, self.deadline = state, call, name, deadline

    def poll(self) -> tuple[bool, Any]:
        """``(True, payload)`` when the event was taken, else ``(False, seconds to wait)``;
        raises Timeout (journaled) or Suspend (hibernate)."""
        state = self.state
        now = time.time()
        entry = self.call.make_entry("completed", started=now, ended=now)
        taken = state.write(
            state.store.take_event, state.run_id, state.epoch, self.name, entry, step=self.name
        )
        if taken is not None:
            value = serde.loads(taken.output or b"null", what=f"payload of event {self.name!r}")
            state.recorded(taken)
            return True, value
        remaining = None if self.deadline is None else self.deadline - now
        if remaining is not None and remaining <= 0:
            raise self._time_out()
        if _hibernates(state, remaining):
            raise Suspend(
                f"run {state.run_id!r} waits for event {self.name!r}",
                wake_at=self.deadline, wait_event=self.name,
            )
        return False, min(POLL, remaining or POLL)

    def _time_out(self) -> Timeout:
        err = Timeout(
            f"run {self.state.run_id!r}: event {self.name!r} did not arrive before its timeout; "
            "catch outlast.Timeout in the workflow to go on without it",
            run_id=self.state.run_id, event=self.name,
        )
        self.call.fail(err)
        return err

    def run(self) -> Any:
        app = self.state.app
        while True:
            done, value = self.poll()
            if done:
                return value
            app._wait(value)  # app.send in this process wakes it early
            self.state.check()

    async def run_async(self) -> Any:
        while True:
            done, value = self.poll()
            if done:
                return value
            import asyncio  # lazily: slow to import; sync users never need it
            await asyncio.sleep(value)
            self.state.check()
