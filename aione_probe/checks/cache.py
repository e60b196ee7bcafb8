"""The prompt-cache group check.

A cache probe sends the same long prefix k times, one request after another. The first
request should miss (the run's seed makes the prefix new); requests 2..k should report
``prompt_tokens_details.cached_tokens``, answer faster, and be billed at the cached rate.
"""

from __future__ import annotations

import statistics
from typing import Any

from aione_probe.checks._registry import CheckContext, CheckSpecError, group_check, result
from aione_probe.checks._util import keys, typed
from aione_probe.cost import cost_of, full_price_cost
from aione_probe.types import CheckResult, CheckValue, Observation

DEFAULT_MIN_HIT_RATIO = 0.5


def _validate_cache(params: dict[str, Any]) -> None:
    keys(params, optional=["min_hit_ratio"])
    ratio = typed(params, "min_hit_ratio", (int, float), "a number")
    if ratio is not None and not 0 < ratio <= 1:
        raise CheckSpecError(f"min_hit_ratio must be in (0, 1], got {ratio}", "min_hit_ratio")


def _savings(hits: list[Observation], ctx: CheckContext) -> dict[str, Any]:
    price = ctx.price
    if price is None:
        return {"saved": None, "currency": None, "discount": None}
    billed = [cost_of(o.usage, price) for o in hits]
    full = [full_price_cost(o.usage, price) for o in hits]
    if any(c is None for c in [*billed, *full]):
        return {"saved": None, "currency": price.currency, "discount": None}
    cost_cached = sum(c for c in billed if c is not None)
    cost_full = sum(c for c in full if c is not None)
    return {
        "cost_cached": cost_cached,
        "cost_full": cost_full,
        "saved": cost_full - cost_cached,
        "currency": price.currency,
        "discount": price.cached_rate < price.input,
    }


@group_check("cache", validate=_validate_cache)
def cache(
    observations: list[Observation], params: dict[str, Any], ctx: CheckContext
) -> list[CheckResult]:
    """Judge prompt caching over the samples of one cache probe.

    Outcomes (``metadata.outcome``): ``no_cache_field`` (missing: no response reported
    cached tokens at all), ``miss`` (fail: the field is there but requests 2..k show no
    hits), ``partial_hit`` (partial: hit ratio below `min_hit_ratio`, default 0.5),
    ``no_discount`` (partial: hits, but the price table bills cached tokens at the full
    rate), ``hit`` (pass). Metadata also holds ``cached_tokens`` per request, ``hit_ratio``
    over requests 2..k, ``ttft_first_s``, ``ttft_cached_median_s``, ``ttft_ratio``, the
    money ``saved`` by cached billing on the hits and its ``currency``.
    """
    if len(observations) < 2 or not observations[0].ok or not any(o.ok for o in observations[1:]):
        return [
            result(
                CheckValue.unscored,
                explanation="needs the first request and at least one repeat to succeed",
                outcome="unscored",
            )
        ]
    first = observations[0]
    repeats = [o for o in observations[1:] if o.ok]
    cached = [o.usage.cached_tokens if o.ok else None for o in observations]
    meta: dict[str, Any] = {
        "cached_tokens": cached,
        "prompt_tokens": [o.usage.prompt_tokens if o.ok else None for o in observations],
        "first_hit": (first.usage.cached_tokens or 0) > 0,
    }
    if all(o.usage.cached_tokens is None for o in (first, *repeats)):
        return [
            result(
                CheckValue.missing,
                explanation="no response reported cached tokens (prompt_tokens_details absent)",
                outcome="no_cache_field",
                **meta,
            )
        ]
    hits = [o for o in repeats if (o.usage.cached_tokens or 0) > 0]
    hit_ratio = len(hits) / len(repeats)
    ttft_hits = [o.ttft_s for o in hits if o.ttft_s is not None]
    ttft_cached = statistics.median(ttft_hits) if ttft_hits else None
    meta |= {
        "hit_ratio": hit_ratio,
        "ttft_first_s": first.ttft_s,
        "ttft_cached_median_s": ttft_cached,
        "ttft_ratio": ttft_cached / first.ttft_s if ttft_cached and first.ttft_s else None,
        **_savings(hits, ctx),
    }
    answer = f"{len(hits)}/{len(repeats)} repeats hit"
    min_ratio = params.get("min_hit_ratio", DEFAULT_MIN_HIT_RATIO)
    if not hits:
        value, outcome, why = CheckValue.failed, "miss", "cached_tokens reported but no repeat hit"
    elif hit_ratio < min_ratio:
        value, outcome = CheckValue.partial, "partial_hit"
        why = f"hit ratio {hit_ratio:.2f} below {min_ratio}"
    elif meta["discount"] is False:
        value, outcome = CheckValue.partial, "no_discount"
        why = "cache hits, but the price table gives cached tokens no discount"
    else:
        value, outcome = CheckValue.passed, "hit"
        why = f"hit ratio {hit_ratio:.2f}"
        if meta["saved"] is not None:
            why += f", saved {meta['saved']:.6f} {meta['currency']}"
    return [
        result(
            value,
            answer=answer,
            expected=f">= {min_ratio}",
            explanation=why,
            outcome=outcome,
            **meta,
        )
    ]
