"""The prompt-cache group check.

A cache probe sends a long prefix several times, one request after another. A request with
a prefix not sent before should miss; a repeat should report
``prompt_tokens_details.cached_tokens``, answer faster, and be billed at the cached rate.

Timing is the one signal of caching a relay cannot forge cheaply (Gu et al. 2025 found
real cache sharing by timing alone), so claimed cached tokens count only when the repeats
are measurably faster. With ``cache_pairs = true`` the probe sends (miss, hit) pairs, each
with its own fresh prefix, and the check runs a one-sided Mann–Whitney U test (exact) of
"repeat TTFT is stochastically smaller than first-send TTFT" at `DEFAULT_TIMING_ALPHA`.
Pairs keep the test valid on caches that hold only the last prompt, and interleave misses
and hits in time so a slow minute does not fall on one side only.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from aione_probe.checks._registry import CheckContext, CheckSpecError, group_check, result
from aione_probe.checks._util import keys, typed
from aione_probe.cost import Price, cost_of, full_price_cost
from aione_probe.types import CheckResult, CheckValue, Observation

DEFAULT_MIN_HIT_RATIO = 0.5
#: Level of the per-run timing test. Each run is one test; the alert asks for most runs of
#: six hours to be unverified, so an honest cache with modest power does not page.
DEFAULT_TIMING_ALPHA = 0.05
#: Fewer timed requests per side than this and the test is not run (no power).
MIN_TIMED_PER_SIDE = 3
#: Outcomes in which the gateway claims cached tokens.
CLAIMED = frozenset({"hit", "partial_hit", "no_discount", "discount_unverified"})


def _validate_cache(params: dict[str, Any]) -> None:
    keys(params, optional=["min_hit_ratio", "timing_alpha"])
    ratio = typed(params, "min_hit_ratio", (int, float), "a number")
    if ratio is not None and not 0 < ratio <= 1:
        raise CheckSpecError(f"min_hit_ratio must be in (0, 1], got {ratio}", "min_hit_ratio")
    alpha = typed(params, "timing_alpha", (int, float), "a number")
    if alpha is not None and not 0 < alpha < 0.5:
        raise CheckSpecError(f"timing_alpha must be in (0, 0.5), got {alpha}", "timing_alpha")


def timing_test(misses: list[float], hits: list[float], alpha: float) -> dict[str, Any]:
    """One-sided exact Mann–Whitney U: are the hits' TTFTs smaller than the misses'?

    Returns metadata: ``timing_p`` (None when either side has fewer than
    `MIN_TIMED_PER_SIDE` values), ``timing_faster`` (p < alpha), ``speedup`` (1 - median
    hit / median miss), the sample sizes and the test's name.
    """
    out: dict[str, Any] = {
        "timing_test": "mann-whitney-u one-sided exact",
        "timing_alpha": alpha,
        "n_miss": len(misses),
        "n_hit": len(hits),
        "ttft_miss_median_s": statistics.median(misses) if misses else None,
        "ttft_hit_median_s": statistics.median(hits) if hits else None,
        "timing_p": None,
        "timing_faster": None,
        "speedup": None,
    }
    if len(misses) < MIN_TIMED_PER_SIDE or len(hits) < MIN_TIMED_PER_SIDE:
        return out
    p = float(mannwhitneyu(hits, misses, alternative="less", method="exact").pvalue)
    med_miss = statistics.median(misses)
    out |= {
        "timing_p": p,
        "timing_faster": p < alpha,
        "speedup": 1 - statistics.median(hits) / med_miss if med_miss > 0 else None,
    }
    return out


def _savings(hits: list[Observation], price: Price | None) -> dict[str, Any]:
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


#: Cached tokens a first send may report without a false claim: the few template tokens
#: before the per-run nonce, below any cache's block size (OpenAI caches in 128s).
MISS_CLAIM_TOLERANCE = 128


@group_check("cache", validate=_validate_cache)
def cache(
    observations: list[Observation], params: dict[str, Any], ctx: CheckContext
) -> list[CheckResult]:
    """Judge prompt caching over the samples of one cache probe.

    Each sample is a ``miss`` (its prefix not sent before) or a ``hit`` (a repeat); see
    `Probe.cache_role`. Outcomes (``metadata.outcome``):

    - ``no_cache_field`` (missing): no response reported cached tokens, and the timing
      test shows no speed-up (or could not run);
    - ``timing_hit`` (missing): no cached-token field, but repeats are measurably faster:
      the gateway caches without reporting it (the timing-only probe's finding);
    - ``miss`` (fail): the field is there but no repeat reports cached tokens;
    - ``discount_unverified`` (fail): repeats claim cached tokens but are not measurably
      faster than first sends (or a first send claims them): the saving is not credited;
    - ``partial_hit`` (partial): hit ratio below `min_hit_ratio` (default 0.5);
    - ``no_discount`` (partial): hits, but the price table gives cached tokens no discount;
    - ``hit`` (pass).

    Metadata holds ``cached_tokens`` and ``roles`` per request, ``hit_ratio``, the timing
    test (`timing_test`), ``verified`` (the speed-up was shown), the money ``saved`` on
    the hits and its ``currency``.
    """
    probe = ctx.instance.probe
    roles = [probe.cache_role(i) for i in range(len(observations))]
    timed = [(r, o) for r, o in zip(roles, observations, strict=True) if o.ok]
    misses = [o for r, o in timed if r == "miss"]
    repeats = [o for r, o in timed if r == "hit"]
    if not misses or not repeats:
        return [
            result(
                CheckValue.unscored,
                explanation="needs a first send and at least one repeat to succeed",
                outcome="unscored",
            )
        ]
    alpha = params.get("timing_alpha", DEFAULT_TIMING_ALPHA)
    timing = timing_test(
        [o.ttft_s for o in misses if o.ttft_s is not None],
        [o.ttft_s for o in repeats if o.ttft_s is not None],
        alpha,
    )
    meta: dict[str, Any] = {
        "roles": roles,
        "cached_tokens": [o.usage.cached_tokens if o.ok else None for o in observations],
        "prompt_tokens": [o.usage.prompt_tokens if o.ok else None for o in observations],
        "first_hit": (misses[0].usage.cached_tokens or 0) > 0,
        **timing,
    }
    p_text = (
        ""
        if timing["timing_p"] is None
        else f" (one-sided Mann–Whitney p = {timing['timing_p']:.3g})"
    )
    if all(o.usage.cached_tokens is None for _, o in timed):
        if timing["timing_faster"]:
            why = f"no cached-token field, but repeats are faster{p_text}: caching is not reported"
            return [result(CheckValue.missing, explanation=why, outcome="timing_hit", **meta)]
        why = "no response reported cached tokens (prompt_tokens_details absent)"
        return [
            result(CheckValue.missing, explanation=why + p_text, outcome="no_cache_field", **meta)
        ]
    hits = [o for o in repeats if (o.usage.cached_tokens or 0) > 0]
    false_claims = [o for o in misses if (o.usage.cached_tokens or 0) > MISS_CLAIM_TOLERANCE]
    hit_ratio = len(hits) / len(repeats)
    ttft_hits = [o.ttft_s for o in hits if o.ttft_s is not None]
    ttft_cached = statistics.median(ttft_hits) if ttft_hits else None
    first = misses[0]
    meta |= {
        "hit_ratio": hit_ratio,
        "false_claims": len(false_claims),
        "verified": bool(timing["timing_faster"]) and not false_claims,
        "ttft_first_s": first.ttft_s,
        "ttft_cached_median_s": ttft_cached,
        "ttft_ratio": ttft_cached / first.ttft_s if ttft_cached and first.ttft_s else None,
        **_savings(hits, ctx.price),
    }
    answer = f"{len(hits)}/{len(repeats)} repeats hit"
    min_ratio = params.get("min_hit_ratio", DEFAULT_MIN_HIT_RATIO)
    if not hits:
        value, outcome, why = CheckValue.failed, "miss", "cached_tokens reported but no repeat hit"
    elif false_claims:
        value, outcome = CheckValue.failed, "discount_unverified"
        why = f"{len(false_claims)} first send(s) of a new prefix claim cached tokens"
    elif timing["timing_faster"] is False:
        value, outcome = CheckValue.failed, "discount_unverified"
        speedup = timing["speedup"]
        why = f"repeats claim cached tokens but are not measurably faster{p_text}"
        if speedup is not None:
            why += f"; median speed-up {speedup:.0%}"
    elif hit_ratio < min_ratio:
        value, outcome = CheckValue.partial, "partial_hit"
        why = f"hit ratio {hit_ratio:.2f} below {min_ratio}"
    elif meta["discount"] is False:
        value, outcome = CheckValue.partial, "no_discount"
        why = "cache hits, but the price table gives cached tokens no discount"
    else:
        value, outcome = CheckValue.passed, "hit"
        why = f"hit ratio {hit_ratio:.2f}"
        why += f", faster{p_text}" if timing["timing_faster"] else ", timing not tested"
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


CLAIMS = "cache_claims"
"""The run-level judgement of cached tokens claimed outside the cache probe."""
#: Label permutations of the stratified timing test of `judge_claims`.
CLAIMS_PERMUTATIONS = 4000


def judge_claims(
    groups: Sequence[Sequence[Observation]],
    price: Price | None,
    alpha: float = DEFAULT_TIMING_ALPHA,
) -> CheckResult | None:
    """Judge the cached tokens claimed by answers outside the cache probe, by timing.

    `groups` holds the final answers of each other probe of one run, one group per probe
    (its samples share a prompt). Within a group the answers that claim cached tokens are
    repeats, the others the uncached sends. The test is stratified by probe (a long probe
    is not compared with a short one): the statistic is the sum over probes of the
    Mann–Whitney count of (claimed, unclaimed) pairs in which the claimed answer had the
    smaller TTFT; its p-value comes from `CLAIMS_PERMUTATIONS` permutations of the
    claim labels within each probe (under "claims have nothing to do with speed" the
    labels are exchangeable inside a probe). Outcomes (``metadata.outcome``):

    - ``hit`` (pass): the claimed answers are measurably faster (p < `alpha`);
    - ``discount_unverified`` (fail): they are not; the claimed saving is not credited;
    - ``untested`` (unscored): no probe has both a claimed and an unclaimed answer (one
      sample per probe, or every sample claims), so there is nothing to compare with.

    Returns None when no answer claims cached tokens.
    """
    ok = [[o for o in g if o.ok] for g in groups]
    claimed = [o for g in ok for o in g if (o.usage.cached_tokens or 0) > 0]
    if not claimed:
        return None
    strata = []
    for g in ok:
        timed = [o for o in g if o.ttft_s is not None]
        hit = np.array([(o.usage.cached_tokens or 0) > 0 for o in timed])
        if hit.any() and not hit.all():
            strata.append((np.array([o.ttft_s for o in timed]), hit))
    meta: dict[str, Any] = {
        "timing_test": "stratified Mann-Whitney, within-probe label permutations",
        "timing_alpha": alpha,
        "n_claimed": len(claimed),
        "cached_tokens": sum(o.usage.cached_tokens or 0 for o in claimed),
        "probes_compared": len(strata),
        "timing_p": None,
        "verified": False,
        **_savings(claimed, price),
    }
    answer = f"{len(claimed)} answers claim {meta['cached_tokens']} cached tokens"
    if not strata:
        why = "no probe had an unclaimed answer to compare the claimed ones with"
        return result(CheckValue.unscored, answer=answer, explanation=why, outcome="untested",
                      **meta)  # fmt: skip
    p, ratio = _stratified_p(strata)
    meta |= {"timing_p": p, "ttft_ratio_median": ratio, "verified": p < alpha}
    if p < alpha:
        why = f"claimed answers are faster than unclaimed ones of the same probe (p = {p:.3g})"
        return result(CheckValue.passed, answer=answer, explanation=why, outcome="hit", **meta)
    why = (
        f"claimed answers are not measurably faster than unclaimed ones of the same probe "
        f"(p = {p:.3g}); the claimed saving is not credited"
    )
    return result(CheckValue.failed, answer=answer, explanation=why,
                  outcome="discount_unverified", **meta)  # fmt: skip


def _stratified_p(strata: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float | None]:
    """Permutation p-value of the summed within-probe Mann–Whitney counts, and the median
    over claimed answers of TTFT / its probe's median unclaimed TTFT."""
    rng = np.random.default_rng(0)  # a fixed seed: the same answers give the same p
    observed = 0.0
    null = np.zeros(CLAIMS_PERMUTATIONS)
    ratios: list[float] = []
    for ttft, hit in strata:
        observed += _faster_pairs(ttft, hit[None, :])[0]
        perms = np.argsort(rng.random((CLAIMS_PERMUTATIONS, len(hit))), axis=1)
        null += _faster_pairs(ttft, hit[perms])
        base = float(np.median(ttft[~hit]))
        if base > 0:
            ratios += [float(t) / base for t in ttft[hit]]
    p = (1 + int(np.sum(null >= observed - 1e-9))) / (1 + CLAIMS_PERMUTATIONS)
    return p, (statistics.median(ratios) if ratios else None)


def _faster_pairs(ttft: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row of `labels` (claimed: True): pairs with the claimed answer faster (ties 1/2)."""
    less = (ttft[:, None] < ttft[None, :]) + 0.5 * (ttft[:, None] == ttft[None, :])
    # less[i, j]: answer i faster than j; count claimed i against unclaimed j.
    hit = labels.astype(float)
    return np.einsum("ri,ij,rj->r", hit, less, 1.0 - hit)
