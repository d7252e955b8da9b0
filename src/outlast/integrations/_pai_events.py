"""Pydantic AI's external-event waits (``RequestInput``, approvals) as outlast events.

A wait named ``name`` (``RequestInput(name=...)``, default ``"deferred_tool_calls"``) is:

1. a step ``{agent}__external_event.{name}.ask`` that calls ``ask`` once with the resume
   token and journals its answer (a replay does not ask again);
2. unless ``ask`` answered, ``ctx.wait_for("{name}:{n}")`` (``n`` counts the waits of that
   name in the run from 1): the run hibernates and holds no thread until the event is sent
   with ``app.send(run_id, "{name}:{n}", payload)``, ``outlast send`` or the HTTP endpoint.

The token is ``"{run_id} {name}:{n}"`` (:func:`parse_token` splits it; :func:`answer` and
:func:`refuse` send to it). A payload ``{"outlast_external_event_error": reason}`` (what
:func:`refuse` sends) fails the wait with ``ExternalEventError(reason)``, and so does the
wait's timeout (journaled, so a replay fails the same way).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue
from pydantic_ai.durable_exec import ExternalEventWaiter
from pydantic_ai.external_events import ExternalEventError
from pydantic_core import to_jsonable_python

from .. import waits
from ..context import RunState, _step_var
from ..errors import ConfigurationError, Timeout

if TYPE_CHECKING:
    from ..app import App

__all__ = ["ERROR_KEY", "OutlastEventWaiter", "answer", "parse_token", "refuse"]

#: the payload key that fails a wait instead of answering it
ERROR_KEY = "outlast_external_event_error"


class OutlastEventWaiter(ExternalEventWaiter):
    """Waits through ``ctx.wait_for``, so the run hibernates until the event is sent."""

    def __init__(self, state: RunState, agent_name: str) -> None:
        self.state = state
        self.agent_name = agent_name

    async def wait(
        self,
        name: str,
        *,
        ask: Callable[[str], Awaitable[JsonValue]],
        timeout: timedelta | None,
    ) -> JsonValue:
        state = self.state
        call = state.begin("step", f"{self.agent_name}__external_event.{name}.ask")
        event = f"{name}:{call.occurrence}"
        token = f"{state.run_id} {event}"
        if call.replayed:
            asked = call.value(blobs=False)
        else:
            started = time.time()
            scope = _step_var.set(state.scope(call.name, call.key, 1))
            try:
                asked = await ask(token)
            except Exception as exc:
                call.fail(exc, started=started)
                raise
            finally:
                _step_var.reset(scope)
            call.complete(asked, large=False)
        if asked is not None:
            return to_jsonable_python(asked)  # type: ignore[no-any-return]
        try:
            got = waits.wait_for(state, event, timeout)
            if inspect.isawaitable(got):
                got = await got
        except Timeout as exc:
            raise ExternalEventError(f"No answer to {event!r} arrived within {timeout}.") from exc
        if isinstance(got, dict) and set(got) == {ERROR_KEY}:
            raise ExternalEventError(str(got[ERROR_KEY]))
        return to_jsonable_python(got)  # type: ignore[no-any-return]


def parse_token(token: str) -> tuple[str, str]:
    """``(run_id, event name)`` of a resume token handed to ``ask``."""
    run_id, sep, event = token.rpartition(" ")
    if not sep or not run_id or not event:
        raise ConfigurationError(
            f"{token!r} is not a resume token of an outlast run: pass the token your `ask` "
            'function received ("<run id> <wait name>:<n>")'
        )
    return run_id, event


def answer(app: App, token: str, payload: Any) -> None:
    """Resolve the wait of ``token`` with ``payload`` (for ``RequestInput``: the JSON form
    of ``DeferredToolResults``, or the object itself)."""
    run_id, event = parse_token(token)
    app.send(run_id, event, to_jsonable_python(payload))


def refuse(app: App, token: str, reason: str) -> None:
    """End the wait of ``token`` without an answer: it raises ``ExternalEventError(reason)``
    (``RequestInput`` then denies the pending calls with ``reason``)."""
    run_id, event = parse_token(token)
    app.send(run_id, event, {ERROR_KEY: reason})
