"""Power of the cache check's timing test: how often a run verifies a real cache, and how
often a fake one (claimed cached tokens, no speed-up) slips through.

The check compares the TTFT of 5 repeats with that of 5 first sends of a fresh prefix
(one-sided exact Mann–Whitney U, α = 0.05 per run). Here TTFTs are drawn log-normal:
first sends with median 1 and log-sd `sigma` (network and queueing noise), repeats with
median 1 - `speedup` and the same noise. speed-up 0 is the fake relay (its rejection rate
is the test's level) and -0.1 the observed fake that was 10 % slower. The alert
(AIoneProbeCacheDiscountUnverified) needs ≥ 3 unverified runs and more than half of a
day's claiming runs unverified; the last column is that chance over 4 runs a day (the
example config's 6-hourly schedule) for an honest cache.

    .venv/bin/python bench/cache_power.py --trials 4000
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import binom, mannwhitneyu

from aione_probe.checks.cache import DEFAULT_TIMING_ALPHA

SIGMAS = (0.1, 0.2, 0.3, 0.5)
SPEEDUPS = (-0.1, 0.0, 0.1, 0.2, 0.3, 0.5)


def power(speedup: float, sigma: float, n: int, trials: int, rng: np.random.Generator) -> float:
    """Share of simulated runs whose test says the repeats are faster."""
    miss = rng.lognormal(0.0, sigma, size=(trials, n))
    hit = rng.lognormal(np.log(max(1e-9, 1 - speedup)), sigma, size=(trials, n))
    p = mannwhitneyu(hit, miss, alternative="less", method="exact", axis=1).pvalue
    return float(np.mean(p < DEFAULT_TIMING_ALPHA))


def daily_false_page(verified: float, runs: int = 4) -> float:
    """Chance that an honest cache with per-run power `verified` pages in one day."""
    need = max(3, runs // 2 + 1)
    return float(binom.sf(need - 1, runs, 1 - verified))


def main() -> None:
    """Print the power table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{args.pairs} pairs per run, α = {DEFAULT_TIMING_ALPHA}, {args.trials} runs per cell")
    print("| speed-up of repeats | " + " | ".join(f"noise σ={s}" for s in SIGMAS) + " |")
    print("| --- |" + " --- |" * len(SIGMAS))
    for speedup in SPEEDUPS:
        cells = []
        for sigma in SIGMAS:
            p = power(speedup, sigma, args.pairs, args.trials, rng)
            page = f"; honest page/day {daily_false_page(p):.1e}" if speedup > 0 else ""
            cells.append(f"{p:.1%}{page}")
        print(f"| {speedup:+.0%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
