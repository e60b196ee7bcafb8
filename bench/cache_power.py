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
    .venv/bin/python bench/cache_power.py --real 10    # the cache suite on llama.cpp

``--real N`` runs the cache suite N times against llama-cpp-python serving SmolLM2 (the
shared harness): llama.cpp reuses the longest prompt prefix it still holds but reports no
cache field, so the timing-only outcome must be ``timing_hit``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import binom, mannwhitneyu

from aione_probe.checks.cache import DEFAULT_TIMING_ALPHA

ROOT = Path(__file__).resolve().parent.parent

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


def real_engine(runs: int) -> int:
    """Run the cache suite `runs` times on llama.cpp and print each run's finding."""
    from aione_probe.config import load_config
    from aione_probe.peers.llama import LlamaServer, smollm2_gguf, unavailable_reason
    from aione_probe.service import run_service

    reason = unavailable_reason()
    if reason:
        print(f"no real engine: {reason}")
        return 2
    with tempfile.TemporaryDirectory() as tmp, LlamaServer(smollm2_gguf()) as llama:
        cfg = Path(tmp) / "c.toml"
        cfg.write_text(
            f'probes_dir = "{ROOT / "probes"}"\n'
            f'[[gateways]]\nname = "llama"\nbase_url = "{llama.base_url}/v1"\nauth = "none"\n'
            'models = ["smollm2"]\nmax_concurrency = 1\n'
            'timeouts = { first_token = "120s", total = "300s" }\n'
            '[[suites]]\nfile = "cache.toml"\ninterval = "1h"\n'
            f'[storage]\nurl = "sqlite:///{Path(tmp) / "c.db"}"\n'
            f'[reports]\ndir = "{Path(tmp) / "reports"}"\n'
        )

        asyncio.run(run_service(load_config(cfg), runs))
        with sqlite3.connect(Path(tmp) / "c.db") as db:
            rows = db.execute(
                "select json_extract(metadata, '$.outcome'), json_extract(metadata, '$.timing_p'),"
                " json_extract(metadata, '$.ttft_miss_median_s'),"
                " json_extract(metadata, '$.ttft_hit_median_s') "
                "from checkresult where name = 'cache'"
            ).fetchall()
    print("| run | finding | p | first-send TTFT median | repeat TTFT median |")
    print("| --- | --- | --- | --- | --- |")
    for i, (finding, p, miss, hit) in enumerate(rows, 1):
        print(f"| {i} | {finding} | {p:.4f} | {miss:.3f} s | {hit:.3f} s |")
    return 0


def main() -> int:
    """Print the power table (or the real-engine runs)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--real", type=int, metavar="RUNS", help="run the cache suite on llama.cpp")
    args = ap.parse_args()
    if args.real:
        return real_engine(args.real)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
