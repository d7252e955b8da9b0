"""Store faults classified once, at the store boundary.

Every public method of a backend runs inside :func:`guarded`: a driver error that escapes it
leaves as one :class:`~outlast.errors.StoreError` whose ``transient`` flag says whether the
fault may clear by itself (connection lost, server restarting, database locked past the busy
timeout, disk full, I/O error) or is the database refusing this very operation (a value it
cannot hold, a constraint, a damaged or read-only file). The runtime then applies one rule
(:meth:`outlast.context.RunState.write`): transient faults stop the run for resumption with
back-off, permanent ones fail the step with the database's reason. Nothing retries "any
exception I did not expect" in a loop.

outlast's own errors (LeaseLost, RunConflict, RunNotFound...) and errors that are not the
driver's (a bug, an exception from user code inside a transaction step) pass through
untouched: :class:`UserError` carries user code's exceptions across the boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import Interrupt, OutlastError, StoreError

T = TypeVar("T")

#: ``classify(store, exc)``: the StoreError for a driver error, or None to let it pass
Classifier = Callable[[Any, BaseException], StoreError | None]


def _outside_runs(fault: StoreError) -> BaseException | None:
    return None


#: Set by :mod:`outlast.context`: the exception a fault raised inside a run's execution
#: becomes (a transient one stops the run: StoreUnavailable, which user code cannot catch),
#: or None to raise the StoreError itself. Asked only when a fault happens.
escalate: Callable[[StoreError], BaseException | None] = _outside_runs


class UserError(Exception):
    """Carries an exception raised by user code inside a store call (a transaction step's
    body) across the boundary unclassified; the caller unwraps ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Wrap a store method so driver errors leave it as StoreError (see the module doc)."""

    @functools.wraps(method)
    def guarded_method(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (OutlastError, Interrupt, UserError):
            raise
        except Exception as exc:
            fault = self._classify(exc)
            if fault is None:
                raise
            raise (escalate(fault) or fault) from exc

    guarded_method.__outlast_guarded__ = True  # type: ignore[attr-defined]
    return guarded_method


def guard_public(cls: type[T]) -> type[T]:
    """Class decorator: guard every public method the class defines or inherits from the
    store protocols (names not starting with ``_``), once."""
    for name in dir(cls):
        if name.startswith("_") or name in ("close",):
            continue
        attr = getattr(cls, name)
        if not callable(attr) or isinstance(attr, type) or getattr(attr, "__outlast_guarded__", False):
            continue
        if isinstance(cls.__dict__.get(name), staticmethod | classmethod):
            continue
        setattr(cls, name, guarded(attr))
    return cls


def _unclassified(exc: BaseException) -> StoreError | None:
    return None


def unguarded(
    store: Any, name: str
) -> tuple[Callable[..., Any], Callable[[BaseException], StoreError | None]]:
    """``store.<name>`` without its guard, and the store's classifier, for a caller that
    applies the rule itself on a hot path (:meth:`outlast.context.RunState.write_entry`).
    A store that is not guarded gives its method as it is, and a classifier that passes
    every error through."""
    method = getattr(store, name)
    raw = getattr(type(store), name, None)
    inner = getattr(raw, "__wrapped__", None)
    classify = getattr(store, "_classify", None)
    if inner is None or not getattr(raw, "__outlast_guarded__", False) or classify is None:
        return method, _unclassified
    return inner.__get__(store, type(store)), classify


def fault(
    store: Any, exc: BaseException, *, transient: bool, reason: str | None = None
) -> StoreError:
    """A StoreError for ``exc`` raised by ``store``, with a message that says what it means."""
    why = reason or f"{type(exc).__name__}: {exc}"
    why = why.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate stays printable
    url = getattr(store, "url", "?")
    if transient:
        message = f"the database at {url} is unavailable ({why})"
    else:
        message = f"the database at {url} refused the operation ({why})"
    return StoreError(message, transient=transient, reason=why, url=url)


def disk_full(store: Any, exc: BaseException) -> StoreError:
    """The clear error for a full disk (transient: it clears once space is freed)."""
    url = getattr(store, "url", "?")
    why = f"{type(exc).__name__}: {exc}"
    return StoreError(
        f"the database at {url} is full ({why}): free disk space",
        transient=True, reason=why, url=url,
    )
