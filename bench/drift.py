"""Calibrate drift alarms under realistic nulls: simulated quarters of hourly runs.

Not a test. Prints, for the run-level detectors the service runs
(`aione_probe.analysis.drift`, config defaults: whitened CUSUMs on latency, plain ones on
the other metrics), beside the same service with plain CUSUMs on latency too (the detector
before whitening), and optionally the window test before that (`bench/drift_legacy.py`,
``--legacy-quarters N``, about 7 s per quarter):

- false alarms per model per quarter (mean, p95, max) under each null, one quarter =
  2,160 hourly runs after a baseline pinned from the first 336 runs (14 days);
- detection delay (runs, = hours at hourly runs) of pass-rate drops of 5, 10 and 20 points
  and of latency +50 %, under the all-together and the iid null (latency also under the
  run-level load alone).

One simulated model runs the 28-probe cheap golden subset hourly. Nulls (each alone, then
all together):

- ``iid``: every request independent; per-probe pass probabilities p_i ~ Beta(5.5, 1);
  log-normal latency (TTFT median 0.8 s, generation median 1.5 s), Poisson(12) tokens;
  every null (this one included) gives each probe a fixed log-latency offset, drawn once
  per simulated model, log-sd ``PROBE_LOG_SD`` = 0.38: probes differ in prompt and answer
  length, so on a real engine they differ in latency (measured on llama.cpp serving
  SmolLM2-135M, the 28 cheap golden probes, three runs: across-probe log-sd 0.379,
  within-probe run-to-run log-sd 0.063);
- ``load AR(1)``: a run-level load effect on latency, log-sd 0.1, AR(1) coefficient 0.8;
- ``cycles``: daily (log amplitude 0.2) and weekly (0.1) latency cycles, random phase;
- ``heavy tails``: per-request log-latency noise Student-t(3) (same scale), timeouts at 60 s;
- ``temperature 0``: 20 of the 28 prompts are fixed at temperature 0: each repeats its
  outcome (pass with probability p_i, drawn once) and its output length every run, except
  for a flip with probability 0.01 per run (decoding nondeterminism) and *flaky episodes*
  (about once a month per prompt, lasting 24 runs on average) in which it flips in a
  quarter of the runs; the other 8 are templated (a new variant every run, independent
  outcomes);
- ``outages``: an outage starts with probability 1/250 per run and lasts a geometric number
  of runs (mean 3): those runs fail (a gap for the detectors), the runs on either edge
  lose 20-80 % of their requests to timeouts;
- ``all together``.

Changes (for the delays) start two weeks after the baseline: a pass-rate drop of d points
flips each templated answer to failing with probability d / mean(p) and makes exactly
round(20 d) passing fixed prompts fail from then on; latency +50 % multiplies every
request's latency by 1.5.

Then a bound: how often any detector could page on a latency +50 % step (under the
run-level load) or a 10-point drop (iid) by its n-th run, if it tested only the runs since
a change whose start it knew, at the per-run false-alarm rate the budget leaves (budget /
metrics / runs per quarter), with the true load and measurement noise (the measurement
noise is measured: the spread of the service's run values under the iid null). And, with
``--budgets``, what a larger budget buys: false alarms (all together) and delays of
latency +50 % and of a 10-point drop at each; with ``--probes``, what more probes per run
(more tokens) buy for pass-rate drops.

    nice python bench/drift.py [--quarters 200] [--trials 100] [--budgets 2,4]
        [--probes 56] [--legacy-quarters 0]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from aione_probe.analysis.changepoint import calibrate, detect
from aione_probe.analysis.drift import (
    METRICS,
    RunArrays,
    build_baseline,
    cap_fraction,
    cross_validated_residuals,
    median_counting_timeouts,
    trimmed_mean_counting_timeouts,
)
from aione_probe.config import DriftConfig, SuiteConfig
from aione_probe.estimate import estimate_suite
from aione_probe.suites import load_suite

PROBES = 28
FIXED = 20
PROBES_DIR = Path(__file__).resolve().parents[1] / "probes"
BASELINE_RUNS = round(DriftConfig().baseline_span / 3600)  # hourly runs over the default span
QUARTER_RUNS = 90 * 24
CHANGE_AFTER = 14 * 24
FOLLOW = 14 * 24
TIMEOUT_S = 60.0
#: Across-probe log-sd of latency, measured on llama.cpp (module docstring).
PROBE_LOG_SD = 0.38
NEW, OLD = "whitened", "plain"
DETECTORS = (NEW, OLD)


@dataclass(frozen=True)
class Null:
    """One null model (see the module docstring)."""

    name: str
    load_sd: float = 0.0
    load_ar: float = 0.0
    daily: float = 0.0
    weekly: float = 0.0
    heavy: bool = False
    persistent: bool = False
    outages: bool = False


NULLS = (
    Null("iid"),
    Null("load AR(1)", load_sd=0.1, load_ar=0.8),
    Null("cycles", daily=0.2, weekly=0.1),
    Null("heavy tails", heavy=True),
    Null("temperature 0", persistent=True),
    Null("outages", outages=True),
)
ALL = Null("all together", 0.1, 0.8, 0.2, 0.1, heavy=True, persistent=True, outages=True)


@dataclass
class Sim:
    """Simulated runs of Q quarters: per-request arrays (Q, T, P) and run flags (Q, T)."""

    hours: np.ndarray
    clock: np.ndarray
    passed: np.ndarray
    ok: np.ndarray
    timed_out: np.ndarray
    ttft: np.ndarray
    e2e: np.ndarray
    tokens: np.ndarray
    failed_run: np.ndarray


def simulate(
    rng: np.random.Generator,
    null: Null,
    quarters: int,
    runs: int,
    change_at: int | None = None,
    drop: float = 0.0,
    slow: float = 1.0,
    probes: int = PROBES,
) -> Sim:
    """Simulate `runs` hourly runs of `quarters` independent models of `probes` probes
    (fixed prompts in the same proportion as the 28-probe subset's 20)."""
    q, t, p = quarters, runs, probes
    n_fixed = round(probes * FIXED / PROBES)
    probs = rng.beta(5.5, 1.0, size=(q, p))
    flip_p = drop / probs.mean(axis=1, keepdims=True)
    fixed = np.zeros(p, dtype=bool)
    if null.persistent:
        fixed[:n_fixed] = True
    offset = rng.integers(0, 168, size=(q, 1))
    clock = offset + np.arange(t)[None, :]
    hours = clock % 24
    passed = np.empty((q, t, p), dtype=bool)
    state = rng.random((q, p)) < probs
    flaky = np.zeros((q, p), dtype=bool)
    for i in range(t):
        changed = change_at is not None and i >= change_at
        if changed and i == change_at and null.persistent:
            # Exactly round(drop * n_fixed) passing fixed prompts start failing for good.
            n_flip = round(drop * n_fixed)
            score = np.where(state & fixed, rng.random((q, p)), -1.0)
            top = np.argsort(-score, axis=1)[:, :n_flip]
            hit = np.zeros((q, p), dtype=bool)
            np.put_along_axis(hit, top, True, axis=1)
            state &= ~(hit & (score >= 0))
        # Flaky episodes: a fixed prompt fails (or passes) against its state in a quarter
        # of the runs for about a day (mean 24 runs), about once a month per prompt.
        flaky = np.where(flaky, rng.random((q, p)) >= 1 / 24, rng.random((q, p)) < 1 / 720)
        flip = rng.random((q, p)) < np.where(flaky, 0.25, 0.01)
        fresh = rng.random((q, p)) < probs
        if changed:
            fresh &= rng.random((q, p)) >= flip_p
        passed[:, i] = np.where(fixed, state ^ flip, fresh)
    # Latency: run-level load (AR(1)), cycles, per-request noise.
    load = np.zeros((q, t))
    if null.load_sd:
        innov = null.load_sd * np.sqrt(1 - null.load_ar**2)
        load[:, 0] = rng.normal(0, null.load_sd, q)
        eps = rng.normal(0, innov, (q, t))
        for i in range(1, t):
            load[:, i] = null.load_ar * load[:, i - 1] + eps[:, i]
    effect = (
        load
        + null.daily * np.sin(2 * np.pi * hours / 24)
        + null.weekly * np.sin(2 * np.pi * clock / 168)
    )
    if change_at is not None and slow != 1.0:
        effect[:, change_at:] += np.log(slow)
    # Per-probe fixed offsets (q, 1, p): the same probe is as slow every run.
    effect = effect[..., None] + rng.normal(0, PROBE_LOG_SD, (q, 1, p))

    def noise(sd: float) -> np.ndarray:
        if null.heavy:
            return sd * rng.standard_t(3, size=(q, t, p)) / np.sqrt(3)
        return rng.normal(0, sd, (q, t, p))

    ttft = 0.8 * np.exp(effect + noise(0.35))
    e2e = ttft + 1.5 * np.exp(effect + noise(0.4))
    fixed_len = rng.poisson(12, size=(q, 1, p)).astype(float)
    tokens = np.where(fixed, fixed_len, rng.poisson(12, size=(q, t, p))).astype(float)
    timed_out = e2e > TIMEOUT_S
    errors = rng.random((q, t, p)) < 0.003
    failed_run = np.zeros((q, t), dtype=bool)
    if null.outages:
        for j in range(q):
            i = 0
            while i < t:
                if rng.random() < 1 / 250:
                    length = int(rng.geometric(1 / 3))
                    failed_run[j, i : i + length] = True
                    for edge in (i - 1, i + length):
                        if 0 <= edge < t:
                            lost = rng.random(p) < rng.uniform(0.2, 0.8)
                            timed_out[j, edge] |= lost
                    i += length
                i += 1
    timed_out &= ~failed_run[..., None]
    ok = ~(timed_out | errors | failed_run[..., None])
    return Sim(hours, clock, passed & ok, ok, timed_out, ttft, e2e, tokens, failed_run)


def _normalised(sim: Sim, j: int, latency: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Run latency values of quarter `j`, runs [lo, hi), as the service computes them
    (`aione_probe.analysis.drift.normalised_latency`): per-probe log medians of the
    baseline runs, a trimmed mean of each run's answers normalised by them."""
    late = sim.timed_out[j]
    logs = np.where(sim.ok[j] | late, np.log(latency[j]), np.nan)
    medians = median_counting_timeouts(logs[:BASELINE_RUNS], late[:BASELINE_RUNS], axis=0)
    medians = np.where(np.isfinite(medians), medians, np.nan)  # a timed-out probe: left out
    z = logs[lo:hi] - medians
    scale = np.nanmedian(medians)
    return np.exp(trimmed_mean_counting_timeouts(z, late[lo:hi] & np.isfinite(medians)) + scale)


def run_arrays(sim: Sim, j: int, lo: int, hi: int) -> RunArrays:
    """The run values of quarter `j`, runs [lo, hi), as the service computes them."""
    sl = (j, slice(lo, hi))
    ok = sim.ok[sl]
    failed = sim.failed_run[sl]
    ttft, e2e = (_normalised(sim, j, x, lo, hi) for x in (sim.ttft, sim.e2e))
    tokens = median_counting_timeouts(np.where(ok, sim.tokens[sl], np.nan), np.zeros_like(ok))
    probes = ok.shape[-1]
    n = np.where(failed, 0, probes)
    errors = np.where(failed, np.nan, 1.0 - ok.sum(axis=1) / probes)
    nan = np.where(failed, np.nan, 1.0)
    return RunArrays(
        hours=sim.hours[j, lo:hi],
        started=sim.clock[j, lo:hi] * 3600.0,  # hour of the week as the cycles have it
        values={
            "ttft_seconds": ttft * nan,
            "e2e_seconds": e2e * nan,
            "output_tokens": tokens * nan,
            "error_share": errors,
        },
        passed=sim.passed[sl].astype(float),
        scored=ok.astype(float),
        hashes=[f"probe-{i}" for i in range(probes)],
        requests=n.astype(float),
    )


def cusum_alarms(
    sim: Sim, cfg: DriftConfig, rng: np.random.Generator, runs: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Run the service's detectors on every quarter, and beside them the plain CUSUM the
    latency detectors replaced: detector -> (target alarms, target alarm onsets)."""
    q = sim.hours.shape[0]
    per_detector = cfg.false_alarms_per_quarter / len(METRICS)
    resid = {m.name: np.full((q, runs), np.nan) for m in METRICS}
    # k, h, cap, phi, clip, theta per quarter, for the service's detector and the plain one
    params = {(d, m.name): np.zeros((6, q)) for d in DETECTORS for m in METRICS}
    for j in range(q):
        base_runs = run_arrays(sim, j, 0, BASELINE_RUNS).take(~sim.failed_run[j, :BASELINE_RUNS])
        baseline = build_baseline(base_runs, cfg, rng, reps=cfg.bootstrap_reps)
        future = run_arrays(sim, j, BASELINE_RUNS, BASELINE_RUNS + runs)
        for spec in METRICS:
            cal = baseline.calibration.get(spec.name)
            if cal is None:
                continue
            plain = cal
            if spec.whiten:
                plain = calibrate(
                    cross_validated_residuals(base_runs, spec.name), k=cal.k,
                    horizon_runs=cal.horizon_runs, rng=rng, reps=cfg.bootstrap_reps,
                )  # fmt: skip
            for name, c in ((NEW, cal), (OLD, plain)):
                h = c.threshold(per_detector)
                cap = cap_fraction(spec.name, c) * h
                params[name, spec.name][:, j] = (c.k, h, cap, c.phi, c.clip, c.theta)
            resid[spec.name][j] = future.residuals(baseline, spec.name)
    out = {}
    for name in DETECTORS:
        states = []
        for spec in METRICS:
            k, h, cap, phi, clip, theta = params[name, spec.name]
            # A metric the baseline had no values for gets an unreachable threshold.
            h = np.where(h > 0, h, np.inf)
            states.append(detect(resid[spec.name], k, h, cap, phi, clip, theta)[1])
        any_alarm = np.any(states, axis=0)
        first = np.zeros((q, 1), bool)
        onsets = any_alarm & ~np.concatenate([first, any_alarm[:, :-1]], axis=1)
        out[name] = (onsets.sum(axis=1), onsets)
    return out


def false_alarms(
    rng: np.random.Generator,
    null: Null,
    cfg: DriftConfig,
    quarters: int,
    chunk: int = 20,
    probes: int = PROBES,
) -> dict[str, np.ndarray]:
    """Target-level false alarms in each of `quarters` simulated quarters, per detector."""
    out: dict[str, list[np.ndarray]] = {d: [] for d in DETECTORS}
    for start in range(0, quarters, chunk):
        n = min(chunk, quarters - start)
        sim = simulate(rng, null, n, BASELINE_RUNS + QUARTER_RUNS, probes=probes)
        for name, (counts, _) in cusum_alarms(sim, cfg, rng, QUARTER_RUNS).items():
            out[name].append(counts)
    return {d: np.concatenate(v) for d, v in out.items()}


def delays(
    rng: np.random.Generator,
    cfg: DriftConfig,
    trials: int,
    drop: float,
    slow: float,
    null: Null = ALL,
    chunk: int = 20,
    probes: int = PROBES,
) -> dict[str, tuple[np.ndarray, int]]:
    """Per detector: runs from a change to the first alarm after it (NaN: not within
    `FOLLOW` runs), and how many trials were already in alarm (a false one) when the
    change came."""
    out: dict[str, list[np.ndarray]] = {d: [] for d in DETECTORS}
    busy = dict.fromkeys(DETECTORS, 0)
    for start in range(0, trials, chunk):
        n = min(chunk, trials - start)
        change = BASELINE_RUNS + CHANGE_AFTER
        sim = simulate(
            rng, null, n, change + FOLLOW, change_at=change, drop=drop, slow=slow, probes=probes
        )
        for name, (_, onsets) in cusum_alarms(sim, cfg, rng, CHANGE_AFTER + FOLLOW).items():
            after = onsets[:, CHANGE_AFTER:]
            found = after.any(axis=1)
            out[name].append(np.where(found, after.argmax(axis=1) + 1.0, np.nan))
            busy[name] += int(onsets[:, CHANGE_AFTER - 24 : CHANGE_AFTER].any(axis=1).sum())
    return {d: (np.concatenate(out[d]), busy[d]) for d in DETECTORS}


# --- the detector this replaced (bench/drift_legacy.py), for comparison ----------------


def legacy_run(
    sim: Sim, j: int, start: int, stop: int, change: int | None = None
) -> tuple[int, float]:
    """The old window test on quarter `j`, evaluated after each run in [start, stop):
    (alarms, runs from `change` to the first alarm after it)."""
    from drift_legacy import Window, evaluate

    def window(lo: int, hi: int) -> Window:
        keep = ~sim.failed_run[j, lo:hi]
        ok = sim.ok[j, lo:hi][keep]
        passes = (sim.passed[j, lo:hi][keep]).sum(axis=0)
        scored = ok.sum(axis=0)
        return Window(
            passes={f"p{i}": (int(passes[i]), int(scored[i])) for i in range(len(passes))},
            ttft_s=sim.ttft[j, lo:hi][keep][ok].tolist(),
            e2e_s=sim.e2e[j, lo:hi][keep][ok].tolist(),
            output_tokens=sim.tokens[j, lo:hi][keep][ok].tolist(),
            runs=int(keep.sum()),
        )

    legacy_baseline_runs = 72
    base = window(0, legacy_baseline_runs)
    alarms, delay, alarming = 0, np.nan, False
    for i in range(start, stop):
        verdict = evaluate(
            {"golden": (base, window(max(0, i - 23), i + 1))},
            alpha=0.001,
            min_runs=6,
            previous={"golden": "regressed" if alarming else "ok"},
        )["golden"].verdict
        now = verdict == "regressed"
        if now and not alarming:
            alarms += 1
            if change is not None and i >= change and np.isnan(delay):
                delay = i - change + 1.0
                break
        alarming = now
    return alarms, delay


def measurement_sd(rng: np.random.Generator, metric: str, quarters: int = 20) -> float:
    """Spread of the service's run-level value of `metric` (log for latency) under the
    iid null (no load): what a run's value scatters by from estimating it from one run's
    answers (median over `quarters` baselines' cross-validated residuals)."""
    sim = simulate(rng, NULLS[0], quarters, BASELINE_RUNS)
    sds = []
    for j in range(quarters):
        runs = run_arrays(sim, j, 0, BASELINE_RUNS)
        sds.append(float(np.nanstd(cross_validated_residuals(runs, metric))))
    return float(np.median(sds))


def known_change_bound(
    step: float, noise_sd: float, per_run_alpha: float, runs: list[int], load: Null = NULLS[0]
) -> list[float]:
    """P(alarm by run n) for n in `runs` of the best test of the first n runs after a
    change of `step` whose start it knows, at level `per_run_alpha`: the Gaussian
    likelihood-ratio test of the Kalman innovations of the true process, an AR(1) load
    (log-sd ``load.load_sd``, coefficient ``load.load_ar``; none for the iid null) plus
    independent per-run noise of sd `noise_sd`."""
    phi, var_u, var_v = load.load_ar, load.load_sd**2, noise_sd**2
    p = var_u
    for _ in range(1000):  # steady-state prediction variance of the load
        gain = p / (p + var_v)
        p = phi * phi * (1 - gain) * p + var_u * (1 - phi * phi)
    gain, innov_sd = p / (p + var_v), float(np.sqrt(p + var_v))
    z = float(stats.norm.isf(per_run_alpha))
    pred, info, power = 0.0, 0.0, []
    for _ in range(max(runs)):
        signature = step - pred  # the part of the change the predictor has not absorbed
        info += (signature / innov_sd) ** 2
        power.append(float(stats.norm.sf(z - np.sqrt(info))))
        pred = phi * (pred + gain * signature)
    return [power[n - 1] for n in runs]


def cheap_golden_tokens() -> int:
    """Tokens of one run of the cheap golden subset (`check-config`'s estimate: prompt
    characters / 4 plus max_tokens)."""
    total = 0
    for path in sorted(PROBES_DIR.glob("golden-*.toml")):
        sc = SuiteConfig(file=str(path), interval=3600, cheap_only=True)
        est = estimate_suite(sc, load_suite(path))
        total += est.prompt_tokens_per_run + est.completion_tokens_per_run
    return total


def _within(d: np.ndarray, runs: int) -> str:
    return f"{np.mean(np.nan_to_num(d, nan=np.inf) <= runs):.0%}"


def _summary(fa: np.ndarray) -> str:
    return f"{fa.mean():.2f} | {np.percentile(fa, 95):.0f} | {fa.max()}"


def _delay_text(d: np.ndarray) -> str:
    found = d[np.isfinite(d)]
    if not len(found):
        return f"0/{len(d)} | – | –"
    return f"{len(found)}/{len(d)} | {np.median(found):.0f} | {np.percentile(found, 90):.0f}"


LEGACY_NULLS = ("iid", "load AR(1)", "temperature 0", "all together")


def main() -> None:
    """Run the calibration and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quarters", type=int, default=200, help="model-quarters per null")
    ap.add_argument("--trials", type=int, default=100, help="changes per scenario and null")
    ap.add_argument("--legacy-quarters", type=int, default=0,
                    help="quarters per null for the window test (about 7 s each)")  # fmt: skip
    ap.add_argument("--budgets", default="",
                    help="comma-separated larger budgets (false alarms per model per quarter) "
                         "to show what they buy")  # fmt: skip
    ap.add_argument("--probes", default="",
                    help="comma-separated larger probe counts per run "
                         "to show what they buy")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cfg = DriftConfig()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(
        f"defaults: budget {cfg.false_alarms_per_quarter:g} false alarm(s) per model per "
        f"quarter over {len(METRICS)} metrics; baseline {BASELINE_RUNS} hourly runs "
        f"(min {cfg.baseline_runs} over {cfg.baseline_span / 86400:g} d); "
        f"{cfg.bootstrap_reps} bootstrap quarters; {PROBES} probes/run\n"
    )
    print("False alarms per model per quarter (2,160 hourly runs after the baseline)\n")
    print("| null | quarters | service mean | p95 | max | plain CUSUM mean | p95 | max "
          "| window: quarters | mean | p95 | max |")  # fmt: skip
    print("| --- " * 12 + "|")
    for null in (*NULLS, ALL):
        fa = false_alarms(rng, null, cfg, args.quarters)
        old = "– | – | – | –"
        if args.legacy_quarters and null.name in LEGACY_NULLS:
            n = args.legacy_quarters
            sim = simulate(rng, null, n, BASELINE_RUNS + QUARTER_RUNS)
            stop = BASELINE_RUNS + QUARTER_RUNS
            counts = np.array([legacy_run(sim, j, BASELINE_RUNS, stop)[0] for j in range(n)])
            old = f"{n} | {_summary(counts)}"
        row = f"{_summary(fa[NEW])} | {_summary(fa[OLD])} | {old}"
        print(f"| {null.name} | {args.quarters} | {row} |", flush=True)
    print("\nDetection delay: runs from the change to the alarm, the changed run included")
    print(f"(= hours at hourly runs; {args.trials} changes per cell, not found = not within")
    print(f"{FOLLOW} runs)\n")
    print("| change | null | service found | median | p90 | plain CUSUM found | median | p90 "
          "| window found | median | p90 |")  # fmt: skip
    print("| --- " * 11 + "|")
    for label, drop, slow in (
        ("pass rate -5 points", 0.05, 1.0),
        ("pass rate -10 points", 0.10, 1.0),
        ("pass rate -20 points", 0.20, 1.0),
        ("latency +50 %", 0.0, 1.5),
    ):
        # Latency also under the run-level load alone: the null whitening is for.
        for null in (ALL, NULLS[0], *([NULLS[1]] if slow != 1.0 else [])):
            d = delays(rng, cfg, args.trials, drop, slow, null)
            old = "– | – | –"
            if args.legacy_quarters:
                change = BASELINE_RUNS + CHANGE_AFTER
                n = args.legacy_quarters
                sim = simulate(rng, null, n, change + FOLLOW, change_at=change, drop=drop,
                               slow=slow)  # fmt: skip
                od = np.array([legacy_run(sim, j, change - 24, change + FOLLOW, change)[1]
                               for j in range(n)])  # fmt: skip
                old = _delay_text(od)
            busy = d[NEW][1]
            note = f" ({busy} in a false alarm at the change)" if busy else ""
            row = f"{_delay_text(d[NEW][0])} | {_delay_text(d[OLD][0])} | {old}"
            print(f"| {label}{note} | {null.name} | {row} |", flush=True)
    per_run = cfg.false_alarms_per_quarter / len(METRICS) / QUARTER_RUNS
    by = [1, 2, 3, 6, 12]
    print("\nBound: the best test of the runs since a change whose start it knows, at the per-run")
    print(f"false-alarm rate the budget leaves ({per_run:.2g} = budget / metrics / runs per "
          "quarter), with the true process\n")  # fmt: skip
    print("| change | null | metric | measurement sd | " + " | ".join(f"by run {n}" for n in by)
          + " |")  # fmt: skip
    print("| --- " * (4 + len(by)) + "|")
    for label, metric, step, null in (
        ("latency +50 %", "ttft_seconds", float(np.log(1.5)), NULLS[1]),
        ("latency +50 %", "e2e_seconds", float(np.log(1.5)), NULLS[1]),
        ("pass rate -10 points", "pass_rate", 0.10, NULLS[0]),
    ):
        sd = measurement_sd(rng, metric)
        power = known_change_bound(step, sd, per_run, by, null)
        cells = " | ".join(f"{x:.0%}" for x in power)
        print(f"| {label} | {null.name} | {metric} | {sd:.3f} | {cells} |")
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    if budgets:
        print("\nWhat a larger budget buys (service detector; latency +50 % and -10 points:")
        print(f"{args.trials} changes per cell; false alarms: {args.quarters} quarters, all "
              "together)\n")  # fmt: skip
        print("| budget | false alarms mean | p95 | max | +50 % load AR(1): median | p90 "
              "| within 2 runs | +50 % all together: median | p90 | within 2 runs "
              "| -10 points iid: median | p90 |")  # fmt: skip
        print("| --- " * 12 + "|")
        for b in [cfg.false_alarms_per_quarter, *budgets]:
            cb = cfg.model_copy(update={"false_alarms_per_quarter": b})
            fa = false_alarms(rng, ALL, cb, args.quarters)[NEW]
            cells = []
            for drop, slow, null in ((0.0, 1.5, NULLS[1]), (0.0, 1.5, ALL), (0.10, 1.0, NULLS[0])):
                d = delays(rng, cb, args.trials, drop, slow, null)[NEW][0]
                text = _delay_text(d).split(" | ", 1)[1]
                cells.append(text if drop else f"{text} | {_within(d, 2)}")
            print(f"| {b:g} | {_summary(fa)} | " + " | ".join(cells) + " |", flush=True)
    more = [int(n) for n in args.probes.split(",") if n.strip()]
    if more:
        print("\nWhat more probes per run buy (service detector, default budget; false alarms:")
        print(f"{args.quarters} quarters, all together; delays: {args.trials} changes per cell)\n")
        print("| probes per run | tokens per run | false alarms mean | p95 | max "
              "| -10 points iid: median | p90 | -10 points all together: median | p90 "
              "| -5 points iid: median | p90 |")  # fmt: skip
        print("| --- " * 11 + "|")
        run_tokens = cheap_golden_tokens()
        for n in [PROBES, *more]:
            fa = false_alarms(rng, ALL, cfg, args.quarters, probes=n)[NEW]
            cells = []
            for drop, null in ((0.10, NULLS[0]), (0.10, ALL), (0.05, NULLS[0])):
                d = delays(rng, cfg, args.trials, drop, 1.0, null, probes=n)[NEW][0]
                cells.append(_delay_text(d).split(" | ", 1)[1])
            tokens = round(run_tokens * n / PROBES, -1)
            print(f"| {n} | ~{tokens:,.0f} | {_summary(fa)} | " + " | ".join(cells) + " |",
                  flush=True)  # fmt: skip
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
