"""Errors raised by outlast.

Every error outlast raises for a user to handle derives from :class:`OutlastError`; its
message names the run, step or value involved and says how to fix the problem, and the same
facts are available as attributes (``run_id``, ``step``, ``position``...).

::

    OutlastError
    ├── ConfigurationError      bad store URL, bad option, unknown workflow name
    ├── RunNotFound             no run with that id
    ├── RunConflict             a run id reused with another workflow or other arguments
    ├── SerializationError      a value that cannot be stored, or a stored payload that cannot be read
    │   └── UnreadableValue     a stored value names a class this process has not imported
    ├── StoreError              the database failed or refused a write (``transient`` says which)
    ├── NonDeterminismError     the code called something other than what the journal recorded
    ├── StepFailed              a replayed failure whose exception class is not loaded in this process
    ├── RunFailed               the awaited run ended in failure (``__cause__`` holds the error)
    ├── RunCancelled            the awaited run was cancelled
    ├── RunPaused               the awaited run is paused and needs an operator (``outlast resolve``)
    ├── Timeout                 a wait or ``result(timeout=...)`` ran out of time
    ├── BudgetExceeded          a model call would exceed the run's token or money budget
    ├── NotPaused               ``resolve`` on a run that is not paused
    ├── NotFailed               ``retry`` on a run that is not failed
    ├── TerminalError           raised by user code: fail the step now, never retry
    └── RetryableError          raised by user code: retry, after ``retry_after`` seconds if given

Control flow that user code must not swallow derives from :class:`BaseException`, so that a
bare ``except Exception`` in a workflow cannot catch it:

::

    BaseException
    └── Interrupt               base of outlast's control flow
        ├── Cancelled           the run was cancelled; raised at the next step boundary
        ├── Suspend             the run hibernates (long wait); internal
        │   └── ContinueAsNew   the run restarts with new arguments and a fresh journal; internal
        ├── Pause               the run needs an operator (outcome unknown); internal
        ├── Release             the worker is shutting down: give the run back; internal
        ├── StoreUnavailable    a transient store fault stopped the run for resumption; internal
        ├── ReplayEnd           a replay check reached the end of what the journal answers; internal
        └── LeaseLost           another worker owns the run now (fencing); internal

All errors pickle and unpickle cleanly, so they can cross process boundaries.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BudgetExceeded",
    "Cancelled",
    "ConfigurationError",
    "ContinueAsNew",
    "Interrupt",
    "LeaseLost",
    "NonDeterminismError",
    "NotFailed",
    "NotPaused",
    "OutlastError",
    "Pause",
    "Release",
    "ReplayEnd",
    "RetryableError",
    "RunCancelled",
    "RunConflict",
    "RunFailed",
    "RunNotFound",
    "RunPaused",
    "SerializationError",
    "StepFailed",
    "StoreError",
    "StoreUnavailable",
    "Suspend",
    "TerminalError",
    "Timeout",
    "UnreadableValue",
]


class OutlastError(Exception):
    """Base class of every error outlast raises for users to handle.

    Keyword attributes given to the constructor are stored on the instance and survive pickling.
    """

    def __init__(self, message: str = "", **attrs: Any) -> None:
        super().__init__(message)
        self.message = message
        self._attrs = attrs
        for name, value in attrs.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._attrs))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[OutlastError], message: str, attrs: dict[str, Any]) -> OutlastError:
    err = cls.__new__(cls)
    OutlastError.__init__(err, message, **attrs)
    return err


class ConfigurationError(OutlastError):
    """A store URL, option or name is wrong; the message says which and what is accepted."""


class RunNotFound(OutlastError):
    """No run with this id exists in the store. Attribute: ``run_id``."""

    def __init__(self, run_id: str, hint: str = "") -> None:
        msg = f"run {run_id!r} not found"
        msg += f"; {hint}" if hint else "; check the id with `outlast runs`"
        super().__init__(msg, run_id=run_id)


class RunConflict(OutlastError):
    """A run id already names a run of another workflow or with other arguments."""


class SerializationError(OutlastError):
    """A value cannot be stored, or a stored payload cannot be read back."""


class UnreadableValue(SerializationError):
    """A stored value names a class that is not loaded in this process (its module is not
    imported, or has no such name): another process, one that imports it, can read the value.

    Attributes: ``type_name`` (``module.Qualname`` as stored) and ``what`` (the value read).
    """


class StoreError(OutlastError):
    """The database failed or refused an operation; each backend classifies its driver's errors
    into this one type at the store boundary.

    Attributes: ``transient`` (True when the fault may clear by itself: connection lost, server
    restarting, database locked past the busy timeout, disk full, I/O error; False when the
    database refuses this very operation: a value it cannot hold, a constraint, a damaged or
    read-only file), ``reason`` (the database's own words), ``url`` (the store, no password),
    and where known ``run_id`` and ``step``.

    A transient fault inside a run stops the run for resumption (never a step failure); a
    permanent one fails the step that could not be recorded, naming the database's reason.
    """

    transient: bool
    reason: str
    url: str

    def __init__(
        self, message: str = "", *, transient: bool = False, reason: str = "", url: str = "",
        **attrs: Any,
    ) -> None:
        super().__init__(message, transient=transient, reason=reason, url=url, **attrs)


class NonDeterminismError(OutlastError):
    """On resume, the code did not call what the journal recorded at this position.

    Attributes: ``run_id``, ``position``, ``recorded`` and ``called`` (descriptions).
    """


class StepFailed(OutlastError):
    """A recorded step failure replayed in a process where its exception class is not loaded.

    Attributes: ``step``, ``error_type`` (qualified name of the original class), ``error_message``.
    """


class RunFailed(OutlastError):
    """The awaited run failed; ``__cause__`` (when it can be rebuilt) holds the original error."""


class RunCancelled(OutlastError):
    """The awaited run was cancelled. Attribute: ``run_id``."""


class RunPaused(OutlastError):
    """The awaited run is paused until an operator resolves it. Attributes: ``run_id``, ``reason``."""


class Timeout(OutlastError):
    """A wait ran out of time (``ctx.wait_for``, ``Run.result(timeout=...)``)."""


class BudgetExceeded(OutlastError):
    """A model call would exceed the run's budget; raised before the call is sent."""


class NotPaused(OutlastError):
    """``resolve`` was asked for a run that is not paused. Attributes: ``run_id``, ``status``."""


class NotFailed(OutlastError):
    """``retry`` was asked for a run that is not failed. Attributes: ``run_id``, ``status``."""


class TerminalError(OutlastError):
    """Raise from a step to fail it at once: it is never retried."""


class RetryableError(OutlastError):
    """Raise from a step to ask for a retry, after ``retry_after`` seconds when given.

    Any exception with a numeric ``retry_after`` attribute is honoured the same way.
    """

    def __init__(self, message: str = "", retry_after: float | None = None, **attrs: Any) -> None:
        super().__init__(message, retry_after=retry_after, **attrs)


class Interrupt(BaseException):  # noqa: N818 - control flow, not an error
    """Base of outlast's control flow; derives from BaseException so ``except Exception`` misses it."""

    def __init__(self, message: str = "", **attrs: Any) -> None:
        super().__init__(message)
        self.message = message
        self._attrs = attrs
        for name, value in attrs.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_interrupt, (type(self), self.message, self._attrs))


def _rebuild_interrupt(cls: type[Interrupt], message: str, attrs: dict[str, Any]) -> Interrupt:
    err = cls.__new__(cls)
    Interrupt.__init__(err, message, **attrs)
    return err


class Cancelled(Interrupt):
    """The run was cancelled; raised inside the workflow at its next step boundary."""


class Suspend(Interrupt):
    """The run hibernates until ``wake_at`` or an event; raised by waits, caught by the engine."""


class ContinueAsNew(Suspend):
    """Raised by ``ctx.continue_as_new``: the run's old journal is gone and it restarts at once
    under the same run id with its new arguments (released as due, so any executor takes it)."""


class Pause(Interrupt):
    """The run stops until an operator resolves it; ``reason`` says why. Raised by the engine."""


class Release(Interrupt):
    """A worker shutting down gracefully stops the run at its next step boundary; the engine
    releases it as ``pending`` so another worker takes it over at once."""


class LeaseLost(Interrupt):
    """This process no longer owns the run (its lease expired and another worker took it over)."""


class ReplayEnd(Interrupt):
    """A replay check (``outlast replay``) reached a call the journal does not answer: the
    end of what was recorded, where a real execution would run something. Attributes:
    ``run_id``, ``position``, ``called``."""


class StoreUnavailable(Interrupt):
    """A transient store fault (after the store's own retries) stopped the run.

    Not a step failure: the run stops executing here and is left to be resumed with back-off
    (by any worker, or by running the same run id again), so an outage never fails a run and
    never re-executes a step in a tight loop. ``fault`` holds the :class:`StoreError`.
    """

    fault: StoreError
