"""USD prices per million tokens, by model family; cache writes/reads priced as multiples of input.

Prices change: override with CLAUDE_PRICE_INPUT / CLAUDE_PRICE_OUTPUT (USD per million tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetgram.domain import Usage


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cache_write_factor: float = 1.25  # 5-minute cache writes cost 1.25x input
    cache_read_factor: float = 0.10  # cache hits cost 0.1x input


# Longest prefix wins, so specific versions can override their family.
_PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-6": Price(5.0, 25.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4-0": Price(15.0, 75.0),
    "claude-opus-4-2": Price(15.0, 75.0),  # claude-opus-4-20250514
    "claude-opus": Price(5.0, 25.0),
    "claude-sonnet": Price(3.0, 15.0),
    "claude-haiku-4": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "claude-3-haiku": Price(0.25, 1.25),
    "claude-haiku": Price(1.0, 5.0),
}
DEFAULT_PRICE = Price(3.0, 15.0)


def price_for(model: str, override: Price | None = None) -> Price:
    if override is not None:
        return override
    matches = [key for key in _PRICES if model.startswith(key)]
    return _PRICES[max(matches, key=len)] if matches else DEFAULT_PRICE


def with_cost(usage: Usage, price: Price) -> Usage:
    per_token_in = price.input_per_mtok / 1_000_000
    cost = (
        usage.input_tokens * per_token_in
        + usage.output_tokens * price.output_per_mtok / 1_000_000
        + usage.cache_write_tokens * per_token_in * price.cache_write_factor
        + usage.cache_read_tokens * per_token_in * price.cache_read_factor
    )
    return Usage(
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        round(cost, 6),
    )
