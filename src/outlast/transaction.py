"""Exactly-once database writes: ``@app.transaction`` steps.

The step's function receives a DB-API connection to the journal's own database (SQLite or
PostgreSQL) as its first argument, followed by the call's arguments. Its writes and the step's
journal entry commit in one transaction (:meth:`outlast.store.Store.transaction`, fenced), so
whatever crashes, the writes are in the database exactly when the step is recorded as done, and
a replay returns the recorded result without running the function again.

- A function that raises rolls its writes back; the failure is recorded like any step's (after
  the step's retry policy, each attempt in a fresh transaction).
- The connection is lent for the duration of the call: ``commit``, ``rollback`` and ``close``
  raise :class:`~outlast.errors.ConfigurationError` (outlast commits). On PostgreSQL, nested
  ``conn.transaction()`` blocks are savepoints; unqualified tables go to the connection's
  ``search_path`` (``public`` by default), not outlast's schema.
- Async functions are supported. In an async workflow the transaction runs in a worker thread
  and the coroutine on an event loop of its own there (the connection is the same synchronous
  DB-API one), so it must not await objects bound to the workflow's loop; in a sync workflow it
  runs on the execution's one event loop.

What cannot work is refused with ConfigurationError, leaving the run as it was: a function with
no parameter for the connection (at decoration), a call outside a workflow or from inside another
step (no journal entry of its own to commit with), commit/rollback/close on the lent connection.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import serde
from .context import RunState, _run_var, _step_var
from .durable import DurableCall
from .errors import ConfigurationError, StoreError
from .retry import Retry
from .step import Step, _replayed_async, begin, settle
from .store.base import Entry
from .store.faults import UserError

if TYPE_CHECKING:
    from .app import App

R = TypeVar("R")

__all__ = ["TransactionStep"]

_LENT = frozenset({"commit", "rollback", "close", "autocommit", "set_autocommit", "isolation_level"})


class _Lent:
    """The store's connection, lent to one transaction step: outlast owns commit and rollback."""

    __slots__ = ("_conn", "_step")

    def __init__(self, conn: Any, step: str) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_step", step)

    def __getattr__(self, name: str) -> Any:
        if name in _LENT:
            raise ConfigurationError(
                f"transaction step {self._step!r} may not use connection.{name}: outlast commits "
                "the step's writes together with its journal entry (raise to roll them back)"
            )
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise ConfigurationError(
            f"transaction step {self._step!r} may not set connection.{name}"
        )

    def __enter__(self) -> Any:
        raise ConfigurationError(
            f"transaction step {self._step!r}: do not use the connection as a context manager "
            "(it would commit or close it); use it directly"
        )

    def __exit__(self, *exc: object) -> None:  # pragma: no cover - __enter__ refuses
        return None


class TransactionStep(Step[..., R]):
    """A step whose database writes commit with its journal entry (see :mod:`outlast.transaction`)."""

    def __init__(self, app: App, fn: Callable[..., R], *, name: str, retry: Retry | None) -> None:
        params = list(inspect.signature(fn).parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise ConfigurationError(
                f"transaction step {name!r} must take the database connection as its first "
                f"parameter, e.g. def {fn.__name__}(conn, ...)"
            )
        super().__init__(app, fn, name=name, retry=retry, kind="transaction")

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        self._check_place()
        return super().__call__(*args, **kwargs)

    def call(self, *args: Any, key: str | None = None, **kwargs: Any) -> Any:
        """Call the step with an explicit identity ``key`` (unique among this step's calls)."""
        self._check_place()
        return super().call(*args, key=key, **kwargs)

    def _check_place(self) -> None:
        if _run_var.get() is None:
            raise ConfigurationError(
                f"transaction step {self.name!r} was called outside a workflow: its writes commit "
                "with the run's journal entry, so call it from a function decorated with "
                "@app.workflow"
            )
        if _step_var.get() is not None:
            raise ConfigurationError(
                f"transaction step {self.name!r} was called from inside step "
                f"{_step_var.get().name!r}: its writes could not commit with a journal entry "  # type: ignore[union-attr]
                "of their own; call it from the workflow"
            )

    def _invoke(
        self, state: RunState, args: tuple[Any, ...], kwargs: dict[str, Any], key: str | None
    ) -> Any:
        call = begin(state, self, args, kwargs, key)
        if call.replayed:
            return _replayed_async(call) if state.is_async else call.value()
        if state.is_async:
            return _run_async(state, self, call, args, kwargs)
        return _run(state, self, call, args, kwargs)


def _work(
    state: RunState,
    step: TransactionStep[Any],
    call: DurableCall,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    attempt: int,
    started: float,
    result: list[Any],
) -> Callable[[Any], Entry]:
    """The function the store runs inside its transaction: the user's call, then the entry.

    User code's exceptions cross the store boundary wrapped in UserError, so a driver error
    the user's own SQL raised is the step's failure, not a store fault."""

    def work(conn: Any) -> Entry:
        token = _step_var.set(state.scope(step.name, call.key, attempt))
        try:
            with state.telemetry.step_span(step.name, call.key, attempt, step.kind):
                value = step.fn(_Lent(conn, step.name), *args, **kwargs)
                if step.is_async:
                    if state.is_async:
                        # In the store's thread, on a loop of its own: the transaction stays
                        # in one thread and the workflow's loop goes on.
                        import asyncio  # lazily: slow to import; sync users never need it
                        value = asyncio.run(value)
                    else:
                        value = state.run_coroutine(value)
            # A result that cannot be stored fails the step and rolls the writes back.
            output = serde.dumps(value, what=f"result of transaction step {step.name!r}")
        except Exception as exc:
            raise UserError(exc) from exc
        finally:
            _step_var.reset(token)
        result.append(value)
        return call.make_entry(
            "completed", output, attempts=attempt, started=started, ended=time.time()
        )

    return work


def _attempt(
    state: RunState,
    step: TransactionStep[Any],
    call: DurableCall,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    attempt: int,
    started: float,
) -> tuple[bool, Any]:
    """One attempt in one transaction: ``(True, value)``, or ``(False, exception)``."""
    result: list[Any] = []
    work = _work(state, step, call, args, kwargs, attempt, started, result)
    try:
        state.write(state.store.transaction, state.run_id, state.epoch, work, step=step.name)
    except UserError as failed:
        return False, failed.error
    except StoreError as refused:  # permanent: the step fails with the database's reason
        return False, refused
    return True, result[0]


def _run(
    state: RunState,
    step: TransactionStep[Any],
    call: DurableCall,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    started = time.time()
    attempt = 0
    while True:
        attempt += 1
        ok, outcome = _attempt(state, step, call, args, kwargs, attempt, started)
        if ok:
            return outcome
        delay = None if isinstance(outcome, StoreError) else step.retry.delay(attempt, outcome)
        if delay is None:
            return settle(state, step, call, attempt, started, exc=outcome)
        state.app._pause(delay, state)


async def _run_async(
    state: RunState,
    step: TransactionStep[Any],
    call: DurableCall,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    import asyncio  # lazily: slow to import; sync users never need it

    started = time.time()
    attempt = 0
    while True:
        attempt += 1
        # A thread: the SQLite store holds its lock, and psycopg blocks, for the whole call.
        ok, outcome = await asyncio.to_thread(
            _attempt, state, step, call, args, kwargs, attempt, started
        )
        if ok:
            return outcome
        delay = None if isinstance(outcome, StoreError) else step.retry.delay(attempt, outcome)
        if delay is None:
            return settle(state, step, call, attempt, started, exc=outcome)
        await asyncio.sleep(delay)
        state.check()
