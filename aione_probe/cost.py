"""Price one request's usage against the price table.

Prices are per million tokens. `Usage.prompt_tokens` follows OpenAI's meaning: it includes
the cached tokens (``prompt_tokens_details.cached_tokens``), so cached tokens are billed at
`Price.cached_input` and only the rest of the prompt at `Price.input`. Completion tokens
include reasoning tokens, except when the gateway counts reasoning separately (see
`reasoning_counted_separately`); then both are billed at `Price.output`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aione_probe.types import Usage

PER_TOKENS = 1_000_000


@dataclass(frozen=True)
class Price:
    """One model's price per million tokens.

    Attributes:
        input: uncached prompt tokens.
        output: completion tokens, reasoning included.
        cached_input: prompt tokens served from the provider's cache; None means no
            discount (billed as `input`).
        currency: ISO code the three prices are in.
    """

    input: float
    output: float
    cached_input: float | None = None
    currency: str = "USD"

    @property
    def cached_rate(self) -> float:
        """The price applied to cached prompt tokens."""
        return self.input if self.cached_input is None else self.cached_input


def reasoning_counted_separately(usage: Usage) -> bool:
    """Whether the gateway reports reasoning tokens outside `completion_tokens`.

    OpenAI counts reasoning inside ``completion_tokens``; some gateways report it beside
    it, which shows as ``total == prompt + completion + reasoning``.
    """
    p, c, r, t = (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.reasoning_tokens,
        usage.total_tokens,
    )
    if p is None or c is None or t is None or not r:
        return False
    return t == p + c + r and t != p + c


def billed_output_tokens(usage: Usage) -> int | None:
    """Output tokens to bill: completion, plus reasoning when counted separately."""
    if usage.completion_tokens is None:
        return None
    extra = (usage.reasoning_tokens or 0) if reasoning_counted_separately(usage) else 0
    return usage.completion_tokens + extra


def cost_of(usage: Usage, price: Price | None) -> float | None:
    """What `usage` costs at `price`, in `price.currency`.

    Args:
        usage: token counts as the gateway reported them.
        price: the model's price, or None when the price table has no entry.

    Returns:
        The cost, or None when the price is unknown or the usage lacks prompt or
        completion tokens (an unknown cost is never reported as zero).
    """
    if price is None or usage.prompt_tokens is None:
        return None
    output = billed_output_tokens(usage)
    if output is None:
        return None
    cached = min(max(usage.cached_tokens or 0, 0), usage.prompt_tokens)
    uncached = usage.prompt_tokens - cached
    total = uncached * price.input + cached * price.cached_rate + output * price.output
    return total / PER_TOKENS


def full_price_cost(usage: Usage, price: Price) -> float | None:
    """What `usage` would cost if no prompt token were served from cache."""
    if usage.prompt_tokens is None:
        return None
    output = billed_output_tokens(usage)
    if output is None:
        return None
    return (usage.prompt_tokens * price.input + output * price.output) / PER_TOKENS
