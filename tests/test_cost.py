"""Pricing a usage against the price table."""

from __future__ import annotations

import dataclasses

import pytest

from aione_probe.cost import (
    Price,
    billed_output_tokens,
    cost_of,
    full_price_cost,
    reasoning_counted_separately,
)
from aione_probe.types import Usage

PRICE = Price(input=3.0, output=15.0, cached_input=0.3)


def test_plain_cost() -> None:
    u = Usage(prompt_tokens=1_000, completion_tokens=200, total_tokens=1_200, raw={})
    assert cost_of(u, PRICE) == pytest.approx((1_000 * 3.0 + 200 * 15.0) / 1e6)


def test_cached_tokens_billed_at_cached_rate() -> None:
    u = Usage(prompt_tokens=10_000, completion_tokens=10, cached_tokens=8_000, raw={})
    want = (2_000 * 3.0 + 8_000 * 0.3 + 10 * 15.0) / 1e6
    assert cost_of(u, PRICE) == pytest.approx(want)
    assert full_price_cost(u, PRICE) == pytest.approx((10_000 * 3.0 + 10 * 15.0) / 1e6)


def test_cached_tokens_beyond_prompt_are_clipped() -> None:
    u = Usage(prompt_tokens=100, completion_tokens=0, cached_tokens=500, raw={})
    assert cost_of(u, PRICE) == pytest.approx(100 * 0.3 / 1e6)


def test_no_cached_price_means_no_discount() -> None:
    price = Price(input=1.0, output=2.0)
    u = Usage(prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=1_000_000, raw={})
    assert cost_of(u, price) == pytest.approx(1.0)
    assert price.currency == "USD" and price.cached_rate == 1.0


def test_reasoning_inside_completion_is_not_billed_twice() -> None:
    u = Usage(prompt_tokens=10, completion_tokens=100, total_tokens=110, reasoning_tokens=80)
    assert not reasoning_counted_separately(u)
    assert billed_output_tokens(u) == 100


def test_reasoning_reported_separately_is_billed_as_output() -> None:
    u = Usage(prompt_tokens=10, completion_tokens=20, total_tokens=110, reasoning_tokens=80)
    assert reasoning_counted_separately(u)
    assert billed_output_tokens(u) == 100
    assert cost_of(u, PRICE) == pytest.approx((10 * 3.0 + 100 * 15.0) / 1e6)


@pytest.mark.parametrize(
    "u",
    [
        Usage(),
        Usage(prompt_tokens=10),
        Usage(completion_tokens=10),
    ],
)
def test_unknown_usage_has_unknown_cost(u: Usage) -> None:
    assert cost_of(u, PRICE) is None


def test_unknown_price_has_unknown_cost() -> None:
    assert cost_of(Usage(prompt_tokens=1, completion_tokens=1), None) is None


def test_price_is_frozen_with_config_field_names() -> None:
    names = [f.name for f in dataclasses.fields(Price)]
    assert names == ["input", "output", "cached_input", "currency"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRICE.input = 0.0  # type: ignore[misc]
