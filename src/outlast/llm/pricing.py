"""Model prices, in dollars per million tokens, used to put a cost on every recorded call.

The table holds list prices of common models at the time of writing; prices change, so
override or extend it: ``outlast.llm.set_price("my-model", input=1.0, output=4.0)``, or per
client ``wrap(client, prices={"my-model": Price(1.0, 4.0)})``. A model is found by its exact
name, else by the longest table entry its name starts with (``gpt-4o-2024-08-06`` uses
``gpt-4o``). A model with no price gets a cost of 0 and its tokens are still counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PRICES", "Price", "cost_of", "price_for", "set_price"]


@dataclass(frozen=True, slots=True)
class Price:
    """Dollars per million input tokens and per million output tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The dollars ``input_tokens`` and ``output_tokens`` cost at this price."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


#: The process-wide price table; :func:`set_price` edits it.
PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5": Price(1.25, 10.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "o3": Price(2.00, 8.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-opus-4": Price(15.00, 75.00),
}


def set_price(model: str, *, input: float, output: float) -> None:  # noqa: A002 - API names
    """Set the price of ``model`` (dollars per million input / output tokens) for this process."""
    PRICES[model] = Price(float(input), float(output))


def price_for(model: str, extra: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``: ``extra`` first, then the table; exact name, then longest prefix."""
    for table in (extra or {}, PRICES):
        if model in table:
            return table[model]
    best: tuple[int, Price] | None = None
    for table in (extra or {}, PRICES):
        for name, price in table.items():
            if model.startswith(name) and (best is None or len(name) > best[0]):
                best = (len(name), price)
        if best is not None:
            return best[1]
    return None


def cost_of(
    model: str, input_tokens: int, output_tokens: int, extra: Mapping[str, Price] | None = None
) -> float:
    """Dollars for one call, or 0.0 when the model has no price."""
    price = price_for(model, extra)
    return 0.0 if price is None else price.cost(input_tokens, output_tokens)
