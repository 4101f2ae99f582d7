"""Cost of a task's token usage, by model family."""

from __future__ import annotations

import pytest

from fleetgram.claude.pricing import DEFAULT_PRICE, Price, price_for, with_cost
from fleetgram.domain import Usage

SONNET = "claude-sonnet-4-5"


def cost(model: str, **tokens: int) -> float:
    return with_cost(Usage(**tokens), price_for(model)).cost_usd


def test_sonnet_costs_3_dollars_per_million_input_and_15_per_million_output():
    assert cost(SONNET, input_tokens=1_000_000) == pytest.approx(3.0)
    assert cost(SONNET, output_tokens=1_000_000) == pytest.approx(15.0)


def test_the_cost_of_a_known_sonnet_usage():
    # 2,000 in x $3/M + 500 out x $15/M = 0.006 + 0.0075
    assert cost(SONNET, input_tokens=2_000, output_tokens=500) == pytest.approx(0.0135)


def test_cache_writes_cost_one_and_a_quarter_times_input():
    assert cost(SONNET, cache_write_tokens=1_000_000) == pytest.approx(3.0 * 1.25)


def test_cache_reads_cost_a_tenth_of_input():
    assert cost(SONNET, cache_read_tokens=1_000_000) == pytest.approx(3.0 * 0.10)


def test_all_four_kinds_of_token_add_up():
    total = cost(
        SONNET,
        input_tokens=1_000,
        output_tokens=1_000,
        cache_write_tokens=1_000,
        cache_read_tokens=1_000,
    )
    assert total == pytest.approx((3.0 + 15.0 + 3.75 + 0.30) / 1_000)


def test_with_cost_keeps_the_token_counts():
    usage = Usage(input_tokens=1, output_tokens=2, cache_read_tokens=3, cache_write_tokens=4)
    priced = with_cost(usage, price_for(SONNET))
    assert (priced.input_tokens, priced.output_tokens) == (1, 2)
    assert (priced.cache_read_tokens, priced.cache_write_tokens) == (3, 4)


def test_a_dated_model_name_is_priced_by_its_family():
    assert price_for("claude-sonnet-4-5-20250929") == price_for("claude-sonnet-4")
    assert price_for("claude-3-5-haiku-20241022").input_per_mtok == 0.8


def test_the_longest_matching_prefix_wins():
    assert price_for("claude-opus-4-1-20250805").input_per_mtok == 15.0
    assert price_for("claude-opus-4-5").input_per_mtok == 5.0


def test_an_unknown_model_falls_back_to_the_default_price():
    assert price_for("some-future-model") == DEFAULT_PRICE
    assert cost("some-future-model", input_tokens=1_000_000) == pytest.approx(
        DEFAULT_PRICE.input_per_mtok
    )


def test_an_override_price_wins_over_the_table():
    override = Price(1.0, 2.0)
    assert price_for(SONNET, override) is override


def test_costs_of_several_calls_add_up():
    one = with_cost(Usage(input_tokens=1_000), price_for(SONNET))
    assert (one + one).cost_usd == pytest.approx(0.006)
