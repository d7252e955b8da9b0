"""Budgets: limits on what a run may spend on model calls, enforced across crashes.

``@app.workflow(budget=Budget(tokens=200_000, cost=2.50))``: a model call made through
:func:`outlast.llm.wrap` that would take the run past either limit raises
:class:`~outlast.BudgetExceeded` before the request is sent. What a run has spent is read
from its journal (every recorded model call carries its tokens and cost), so a crash, a
resume on another worker or a retry never resets the count.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError

__all__ = ["Budget"]


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one run: ``tokens`` (input + output, all model calls) and ``cost`` (dollars,
    from the price table in :mod:`outlast.llm.pricing`). None means no limit."""

    tokens: int | None = None
    cost: float | None = None

    def __post_init__(self) -> None:
        for name in ("tokens", "cost"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
            ):
                raise ConfigurationError(f"Budget({name}={value!r}): a limit must be a number >= 0")
