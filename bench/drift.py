"""Calibrate drift alarms: simulate months of probing at the default schedule.

Not a test. Prints a table of false alarms per model per quarter with no drift, and the
detection delay of pass-rate drops of 5, 10 and 20 points and of a 50 % latency increase,
using the same `aione_probe.analysis.drift.evaluate` the service runs and the config's defaults
(window, baseline size, alpha, minimum runs).

Model of one simulated model: the cheap golden subset (N probes) runs once an hour; probe
i passes with its own probability p_i ~ Beta (mean about 0.85, so easy and hard prompts
mix); TTFT and end-to-end latency are log-normal, output length is Poisson. Analysis runs
after every run on the trailing window against the baseline pinned from the first
`auto_baseline_runs` runs. An alarm is a transition into ``regressed``.

    python bench/drift.py [--quarters 40] [--probes 28] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from aione_probe.analysis.drift import Window, evaluate
from aione_probe.config import DriftConfig

HOURS_PER_QUARTER = 90 * 24


@dataclass
class Run:
    passes: np.ndarray
    ttft: np.ndarray
    e2e: np.ndarray
    tokens: np.ndarray


def simulate_run(rng: np.random.Generator, p: np.ndarray, drop: float, slow: float) -> Run:
    """One hourly run of every probe; `drop` lowers pass probabilities, `slow` scales latency."""
    probs = np.clip(p - drop, 0.0, 1.0)
    n = len(p)
    ttft = rng.lognormal(mean=np.log(0.8), sigma=0.35, size=n) * slow
    e2e = ttft + rng.lognormal(mean=np.log(1.5), sigma=0.4, size=n) * slow
    return Run(rng.random(n) < probs, ttft, e2e, rng.poisson(12, size=n).astype(float))


def window_of(runs: list[Run], hashes: list[str]) -> Window:
    """Aggregate runs into the `Window` the drift module compares."""
    passes = np.sum([r.passes for r in runs], axis=0)
    return Window(
        passes={h: (int(passes[i]), len(runs)) for i, h in enumerate(hashes)},
        ttft_s=np.concatenate([r.ttft for r in runs]).tolist(),
        e2e_s=np.concatenate([r.e2e for r in runs]).tolist(),
        output_tokens=np.concatenate([r.tokens for r in runs]).tolist(),
        runs=len(runs),
    )


def simulate(
    rng: np.random.Generator,
    cfg: DriftConfig,
    n_probes: int,
    hours: int,
    change_at: int | None = None,
    drop: float = 0.0,
    slow: float = 1.0,
) -> tuple[int, int | None]:
    """Simulate `hours` of hourly runs; returns (alarms, hours from change to first alarm)."""
    p = rng.beta(5.5, 1.0, size=n_probes)
    hashes = [f"probe-{i}" for i in range(n_probes)]
    window_runs = max(1, int(cfg.window // 3600))
    baseline_runs = [simulate_run(rng, p, 0.0, 1.0) for _ in range(cfg.auto_baseline_runs)]
    baseline = window_of(baseline_runs, hashes)
    recent: deque[Run] = deque(baseline_runs[-window_runs:], maxlen=window_runs)
    alarms, delay, alarming = 0, None, False
    for hour in range(hours):
        changed = change_at is not None and hour >= change_at
        recent.append(simulate_run(rng, p, drop if changed else 0.0, slow if changed else 1.0))
        verdict = evaluate(
            {"golden": (baseline, window_of(list(recent), hashes))},
            alpha=cfg.alpha,
            min_runs=cfg.min_runs,
            previous={"golden": "regressed" if alarming else "ok"},
        )["golden"].verdict
        now = verdict == "regressed"
        if now and not alarming:
            alarms += 1
            if changed and delay is None:
                delay = hour - change_at  # type: ignore[operator]
        alarming = now
        if changed and delay is not None:
            break
    return alarms, delay


def main() -> None:
    """Run the calibration and print the table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quarters", type=int, default=40, help="model-quarters without drift")
    ap.add_argument("--trials", type=int, default=40, help="drift trials per scenario")
    ap.add_argument("--probes", type=int, default=28, help="probes per hourly run")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cfg = DriftConfig()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(
        f"defaults: window={cfg.window / 3600:g}h baseline={cfg.auto_baseline_runs} runs "
        f"alpha={cfg.alpha} min_runs={cfg.min_runs}; {args.probes} probes/run, hourly\n"
    )
    false_alarms = [
        simulate(rng, cfg, args.probes, HOURS_PER_QUARTER)[0] for _ in range(args.quarters)
    ]
    fa = np.array(false_alarms)
    print("| scenario | trials | result |")
    print("| --- | --- | --- |")
    print(
        f"| no drift | {args.quarters} model-quarters | {fa.mean():.2f} false alarms per model "
        f"per quarter (max {fa.max()}) |"
    )
    horizon = 14 * 24
    for label, drop, slow in (
        ("pass rate -5 points", 0.05, 1.0),
        ("pass rate -10 points", 0.10, 1.0),
        ("pass rate -20 points", 0.20, 1.0),
        ("latency +50 %", 0.0, 1.5),
    ):
        delays = [
            simulate(rng, cfg, args.probes, 48 + horizon, change_at=48, drop=drop, slow=slow)[1]
            for _ in range(args.trials)
        ]
        found = [d for d in delays if d is not None]
        if found:
            med = float(np.median(found))
            p90 = float(np.percentile(found, 90))
            text = (
                f"detected in {len(found)}/{len(delays)}; delay median {med:.0f} h, p90 {p90:.0f} h"
            )
        else:
            text = f"not detected within {horizon} h"
        print(f"| {label} | {args.trials} | {text} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
