"""Retry policies for steps: exponential backoff with jitter, terminal errors, retry-after hints."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ConfigurationError, Interrupt, RetryableError, TerminalError

__all__ = ["Retry", "retry_after_hint"]


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a failing step is tried again.

    ``attempts`` counts every try, the first included (1 = never retry). The n-th retry waits
    ``initial * backoff**(n-1)`` seconds, capped at ``max_delay``, with "full jitter" on the
    upper half (so a fleet does not retry in lockstep). An exception carrying a retry-after
    hint (a numeric ``retry_after`` attribute, or an HTTP response with a ``Retry-After``
    header, as the openai/anthropic/httpx errors have) waits at least that long, up to
    ``max_delay``. :class:`~outlast.TerminalError` and the exception types in ``never`` are
    never retried; with ``only`` given, only those types are.

    A step declared without a policy does not retry, except that raising
    :class:`~outlast.RetryableError` from it retries under :data:`RETRYABLE` (5 attempts from
    0.5 s, doubling, at most 30 s apart): the error means what it says.
    """

    attempts: int = 1
    initial: float = 0.5
    backoff: float = 2.0
    max_delay: float = 30.0
    jitter: bool = True
    only: tuple[type[BaseException], ...] = ()
    never: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError(f"Retry(attempts={self.attempts}): attempts must be >= 1")
        if self.initial < 0 or self.max_delay < 0 or self.backoff < 1:
            raise ConfigurationError(
                "Retry needs initial >= 0, max_delay >= 0 and backoff >= 1, got "
                f"initial={self.initial}, max_delay={self.max_delay}, backoff={self.backoff}"
            )

    def delay(self, attempt: int, exc: BaseException) -> float | None:
        """Seconds to wait before the next try after ``attempt`` failed with ``exc``; None to give up."""
        if self is NO_RETRY and isinstance(exc, RetryableError):
            return RETRYABLE.delay(attempt, exc)
        if attempt >= self.attempts or isinstance(exc, (TerminalError, Interrupt)):
            return None
        if self.never and isinstance(exc, self.never):
            return None
        if self.only and not isinstance(exc, self.only):
            return None
        base = min(self.max_delay, self.initial * self.backoff ** (attempt - 1))
        if self.jitter:
            base = base / 2 + random.random() * base / 2
        hint = retry_after_hint(exc)
        if hint is not None:
            base = max(base, min(hint, self.max_delay))
        return base


#: the policy of a step declared without one: one attempt (but see RETRYABLE)
NO_RETRY = Retry()
#: the policy a RetryableError gets from a step declared without a policy
RETRYABLE = Retry(attempts=5, initial=0.5, backoff=2.0, max_delay=30.0)


def retry_after_hint(exc: BaseException) -> float | None:
    """The retry-after hint an exception carries, in seconds, or None."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        seconds = headers.get("retry-after")
        if seconds is not None:
            return max(0.0, float(seconds))
    except (TypeError, ValueError, AttributeError):
        return None
    return None
