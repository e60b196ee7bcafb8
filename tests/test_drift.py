"""Run-level drift detection: values per run, calibrated CUSUM detectors, gaps, store round trip."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aione_probe.analysis.changepoint import (
    MIN_THRESHOLD_K,
    Calibration,
    Cusum,
    calibrate,
    detect,
    fit_predictor,
    lag1_correlation,
    rest_weight,
    siegmund_threshold,
    stationary_bootstrap_paths,
)
from aione_probe.analysis.drift import (
    DriftBaseline,
    Monitor,
    RunArrays,
    RunValues,
    build_baseline,
    median_counting_timeouts,
    normalised_latency,
    probe_log_medians,
    reference_value,
    trimmed_mean_counting_timeouts,
    verdict_of,
)
from aione_probe.analysis.run import analyse_drift, pin_drift_baseline
from aione_probe.config import Config, DriftConfig
from aione_probe.errors import FailureKind
from aione_probe.metrics import ProbeMetrics
from aione_probe.report import build_report_data, render_report
from aione_probe.store import CheckRecord, ObservationRecord, Store
from aione_probe.types import CheckResult, CheckValue, Observation, Usage

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
PROBES = 12


# --- changepoint ----------------------------------------------------------------------


def test_bootstrap_paths_are_blocks_of_the_source() -> None:
    rng = np.random.default_rng(1)
    idx = stationary_bootstrap_paths(50, 400, 10.0, 30, rng)
    assert idx.shape == (30, 400) and idx.min() >= 0 and idx.max() < 50
    steps = np.diff(idx, axis=1)
    continued = (steps == 1) | (steps == -49)  # the next source run, wrapping around
    assert 0.85 < continued.mean() < 0.95  # a new block starts with probability 1/10


def test_detect_matches_the_stateful_detector() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0.0, 1.0, 500)
    r[200:230] += 2.0
    r[100] = np.nan  # a missing run: no update
    count, state = detect(r, 0.5, 4.0, 2.0)
    det = Cusum(k=0.5, h=4.0, cap=2.0)
    path = []
    for x in r:
        if not math.isnan(x):
            det.update(float(x), "t")
        path.append(det.alarm)
    assert state[0].tolist() == path
    assert count[0] == det.alarms >= 1


def test_one_bad_run_never_alarms_alone() -> None:
    det = Cusum(k=0.1, h=1.0, cap=0.5)
    assert not det.update(math.inf, "a")  # e.g. every request timed out
    assert det.s == 0.5
    assert det.update(0.7, "b") and det.alarm_since == "b"
    for _ in range(20):
        det.update(0.0, "c")
    assert not det.alarm and det.alarms == 1  # back at baseline: the alarm clears


def test_siegmund_threshold_grows_with_run_length_and_spread() -> None:
    h1 = siegmund_threshold(0.5, 1.0, 938)
    assert h1 == pytest.approx(5.0, abs=0.01)  # the textbook pair: k = 0.5 sd, h = 5 sd
    assert siegmund_threshold(0.5, 1.0, 10_000) > h1
    assert siegmund_threshold(0.5, 2.0, 1_000) > h1
    with pytest.raises(ValueError):
        siegmund_threshold(0.0, 1.0, 100)


def test_calibrated_threshold_holds_its_budget_on_iid_noise() -> None:
    rng = np.random.default_rng(3)
    k, horizon = 0.5, 2_000
    cal = calibrate(rng.normal(0, 1, 336), k=k, horizon_runs=horizon, rng=rng, reps=100)
    h = cal.threshold(0.5)
    assert h > cal.threshold(2.0) >= MIN_THRESHOLD_K * k
    count, _ = detect(rng.normal(0, 1, (200, horizon)), k, h, h / 2)
    assert count.mean() <= 0.5 * 1.5  # the budget, with room for bootstrap noise


def test_calibration_round_trips() -> None:
    cal = Calibration(k=0.1, horizon_runs=10, mean_block=2.0, long_run_sd=0.3, maxima=[1, 2])
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError):
        cal.threshold(0)
    whitened = Calibration(k=0.2, horizon_runs=10, mean_block=6.0, maxima=[0.1], phi=0.5,
                           clip=0.4, gaussian_maxima=[0.2], whitened=True)  # fmt: skip
    assert Calibration.from_dict(whitened.to_dict()) == whitened


def test_a_baseline_pinned_before_whitening_keeps_its_plain_latency_detector() -> None:
    rng = np.random.default_rng(10)
    base = build_baseline(_arrays(rng, 168, np.full(28, 0.9)), DriftConfig(), rng, reps=20)
    assert base.calibration["e2e_seconds"].whitened
    data = base.to_dict()
    for cal in data["calibration"].values():  # as stored by the previous version
        for key in ("phi", "clip", "gaussian_maxima", "whitened"):
            cal.pop(key)
    data.pop("weekly")
    old = DriftBaseline.from_dict(data)
    assert old is not None and not old.weekly
    new_monitor, old_monitor = Monitor(baseline_id=1), Monitor(baseline_id=2)
    new_monitor.thresholds(base, 0.2)
    old_monitor.thresholds(old, 0.2)
    new, plain = new_monitor.detectors["e2e_seconds"], old_monitor.detectors["e2e_seconds"]
    assert new.cap == pytest.approx(0.9 * new.h) and new.phi == base.calibration["e2e_seconds"].phi
    assert plain.phi == 0 and plain.cap == pytest.approx(0.5 * plain.h)
    assert plain.h >= MIN_THRESHOLD_K * plain.k


def _probe_run(
    rng: np.random.Generator, offsets: np.ndarray, slow: float = 1.0, probes: Any = None
) -> RunValues:
    """A run whose probe i answers in 1.5 s x exp(offsets[i]) x `slow` (run-to-run log-sd
    0.06, as measured on llama.cpp); `probes`: which answered (default all)."""
    lat = {
        f"p{i}": [float(1.5 * slow * math.exp(offsets[i] + rng.normal(0, 0.06)))]
        for i in (range(len(offsets)) if probes is None else probes)
    }
    return RunValues(run_id=0, started_at=T0, latency={"ttft_seconds": lat, "e2e_seconds": lat})


def test_per_probe_latency_cancels_offsets_counts_timeouts_and_trims() -> None:
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 0.38, 28)  # across-probe log-sd on llama.cpp
    medians = probe_log_medians([_probe_run(rng, offsets) for _ in range(24)])
    typical = np.median([normalised_latency(_probe_run(rng, offsets), medians)
                         .values["e2e_seconds"] for _ in range(20)])  # fmt: skip

    def value(run: RunValues) -> float:
        return normalised_latency(run, medians).values["e2e_seconds"]

    # Offsets cancel: a run only the 8 slowest probes answered is not slower.
    slowest = [int(i) for i in np.argsort(offsets)[-8:]]
    partial = _probe_run(rng, offsets, probes=slowest)
    raw = np.median([x for xs in partial.latency["e2e_seconds"].values() for x in xs])
    assert raw > 1.3 * typical and value(partial) == pytest.approx(typical, rel=0.08)
    assert value(_probe_run(rng, offsets, slow=1.5)) == pytest.approx(1.5 * typical, rel=0.08)
    # Timeouts count as slow: ten of 28 timed out moves the value up, not down.
    run = _probe_run(rng, offsets)
    fastest = [f"p{i}" for i in np.argsort(offsets)[:10]]
    dropped = _probe_run(rng, offsets, probes=[i for i in range(28) if f"p{i}" not in fastest])
    for p in fastest:
        run.latency["e2e_seconds"][p] = [math.inf]
    assert value(run) > 1.05 * value(dropped) and value(run) > 1.05 * typical
    everything = {f"p{i}": [math.inf] for i in range(28)}
    assert value(RunValues(0, T0, latency={"e2e_seconds": everything})) == math.inf
    # Trimming resists one wild probe (100 times slower).
    wild = _probe_run(rng, offsets)
    wild.latency["e2e_seconds"]["p0"] = [wild.latency["e2e_seconds"]["p0"][0] * 100]
    assert value(wild) == pytest.approx(typical, rel=0.08)
    # Probes the baseline does not know are left out; a run with none has no value.
    unknown = RunValues(0, T0, latency={"e2e_seconds": {"new": [1.0]}})
    assert normalised_latency(unknown, medians).values["e2e_seconds"] is None
    assert trimmed_mean_counting_timeouts(
        np.array([3.0, 1.0, 2.0, 0.5, 9.0, np.nan]), np.array([0, 0, 0, 1, 1, 0], bool)
    ) == pytest.approx((2.0 + 3.0 + 3.0) / 3)  # 1 trimmed each end; a kept timeout is 3


def test_a_baseline_pinned_before_per_probe_latency_keeps_the_run_median() -> None:
    rng = np.random.default_rng(4)
    offsets = rng.normal(0, 0.38, 28)
    runs = [_probe_run(rng, offsets) for _ in range(3)]
    base = DriftBaseline(runs=3, span_s=7200.0, interval_s=3600.0,
                         probe_latency=probe_log_medians(runs))  # fmt: skip
    data = base.to_dict()
    assert data["version"] == 3
    assert DriftBaseline.from_dict(data).probe_latency == base.probe_latency
    run = _probe_run(rng, offsets, probes=range(4))
    run.values = {"e2e_seconds": 9.0}  # the run median run_values gave it
    assert base.rebase(run).values["e2e_seconds"] != 9.0
    data.pop("probe_latency")
    data["version"] = 2  # as stored by the previous version
    old = DriftBaseline.from_dict(data)
    assert old is not None and not old.probe_latency
    assert old.rebase(run).values["e2e_seconds"] == 9.0


def _loaded_latency(rng: np.random.Generator, rows: int, runs: int) -> np.ndarray:
    """Log-latency residuals of a loaded gateway: run-level AR(1) load (log-sd 0.1,
    coefficient 0.8) plus the noise of a 28-request median (sd 0.07)."""
    innov = rng.normal(0, 0.1 * math.sqrt(1 - 0.8**2), (rows, runs))
    load = np.empty_like(innov)
    load[:, 0] = rng.normal(0, 0.1, rows)
    for t in range(1, runs):
        load[:, t] = 0.8 * load[:, t - 1] + innov[:, t]
    return load + rng.normal(0, 0.07, (rows, runs))


def _latency_detector(seed: int) -> tuple[Calibration, np.ndarray, np.random.Generator]:
    """A whitened detector calibrated on a fortnight of hourly loaded runs."""
    rng = np.random.default_rng(seed)
    baseline = _loaded_latency(rng, 1, 336)[0]
    phi, theta = fit_predictor(baseline)
    assert 0 < theta < phi  # an AR(1) load seen through measurement noise
    k = reference_value("e2e_seconds", DriftConfig(), per_run=28)
    cal = calibrate(baseline, k=k, horizon_runs=2160, rng=rng, reps=100, phi=phi, theta=theta)
    return cal, baseline, rng


def test_fit_predictor_tells_a_load_from_measurement_noise() -> None:
    rng = np.random.default_rng(11)
    assert fit_predictor(rng.normal(0, 0.07, 336)) == (0.0, 0.0)  # white: no whitening
    ar = np.zeros(336)
    for t in range(1, 336):
        ar[t] = 0.8 * ar[t - 1] + rng.normal(0, 0.06)
    phi, theta = fit_predictor(ar)
    assert 0.65 < phi <= 0.9 and theta <= 0.1  # a pure AR(1) load: predicted by phi r
    # A load seen through noise: the predictor trusts the last run less (theta > 0), so a
    # step is absorbed more slowly than a pure AR(1) fit of the same series would absorb it.
    phi, theta = fit_predictor(_loaded_latency(rng, 1, 336)[0])
    assert 0.6 < phi <= 0.9 and 0.1 < theta < phi
    assert rest_weight(phi, theta) > 1 - phi
    series = np.r_[np.nan, 1.0, np.nan, np.nan, 0.5, *rng.normal(0, 1, 20)]
    assert all(np.isfinite(fit_predictor(series)))  # gaps advance the predictor


def test_whitened_detector_finds_a_latency_step_within_two_runs() -> None:
    cal, baseline, rng = _latency_detector(6)
    h = cal.threshold(0.2)
    r = _loaded_latency(rng, 200, 60)
    r[:, 48:] += math.log(1.5)  # +50 % latency from run 48 on
    _, state = detect(r, cal.k, h, 0.9 * h, cal.phi, cal.clip, cal.theta)
    assert state[:, :48].mean() < 0.01
    onset = np.where(state[:, 48:].any(axis=1), state[:, 48:].argmax(axis=1) + 1, 99)
    assert np.median(onset) <= 2  # most steps page on their 1st or 2nd run
    # A pure AR(1) predictor (theta = 0, lag-1 phi) on the same baseline absorbs the step
    # into its prediction faster and pages later.
    phi0 = float(np.clip(lag1_correlation(baseline), 0, 0.9))
    ar = calibrate(baseline, k=cal.k, horizon_runs=2160, rng=rng, reps=100, phi=phi0)
    ha = ar.threshold(0.2)
    _, astate = detect(r, ar.k, ha, 0.9 * ha, ar.phi, ar.clip)
    aonset = np.where(astate[:, 48:].any(axis=1), astate[:, 48:].argmax(axis=1) + 1, 99)
    assert (onset <= 2).mean() > (aonset <= 2).mean()
    # The plain CUSUM, calibrated on the same baseline, needs the long-run spread: slower.
    plain = calibrate(baseline, k=cal.k, horizon_runs=2160, rng=rng, reps=100)
    hp = plain.threshold(0.2)
    _, pstate = detect(r, plain.k, hp, 0.5 * hp)
    assert np.median(pstate[:, 48:].argmax(axis=1) + 1) > 2


def test_whitened_detector_keeps_its_budget_on_a_stationary_loaded_gateway() -> None:
    cal, _, rng = _latency_detector(7)
    h = cal.threshold(0.2)
    assert h >= cal.threshold(2.0) and cal.gaussian_maxima and cal.whitened
    r = _loaded_latency(rng, 100, 2160)
    count, _ = detect(r, cal.k, h, 0.9 * h, cal.phi, cal.clip, cal.theta)
    assert count.mean() <= 0.2 * 1.5  # the budget, with room for bootstrap noise


def test_whitened_detect_matches_the_stateful_detector() -> None:
    rng = np.random.default_rng(8)
    r = _loaded_latency(rng, 1, 400)[0]
    r[150:] += 0.3
    r[[100, 160, 161]] = np.nan  # missing runs: the predictor advances, the statistic stays
    r[120] = math.inf  # every request timed out once: clipped for the predictor
    count, state = detect(r, 0.2, 0.3, 0.27, 0.6, 0.4, 0.3)
    det = Cusum(k=0.2, h=0.3, cap=0.27, phi=0.6, clip=0.4, theta=0.3)
    path = []
    for x in r:
        if math.isnan(x):
            det.skip()
        else:
            det.update(float(x), "t")
        path.append(det.alarm)
    assert state[0].tolist() == path
    assert count[0] == det.alarms >= 1
    assert Cusum.from_dict(det.to_dict()) == det


# --- run values and baselines -----------------------------------------------------------


def test_timeouts_count_as_slower_than_every_answer() -> None:
    values = np.array([1.0, 2.0, 3.0, np.nan, np.nan])
    late = np.array([False, False, False, True, True])
    assert median_counting_timeouts(values, late) == 3.0  # dropping them would give 2.0
    assert math.isnan(median_counting_timeouts(np.array([np.nan]), np.array([False])))


def test_one_prompt_changing_its_answer_cannot_accumulate() -> None:
    cfg = DriftConfig()
    k = reference_value("pass_rate", cfg, per_run=28)
    assert k >= 1 / 28  # one probe of 28 failing every run is a residual of 1/28 <= k
    assert reference_value("e2e_seconds", cfg, per_run=28) == pytest.approx(math.log(1.5) / 2)


def _arrays(rng: np.random.Generator, runs: int, p: np.ndarray, drop: float = 0.0) -> RunArrays:
    passed = (rng.random((runs, len(p))) < np.clip(p - drop, 0, 1)).astype(float)
    hours = np.arange(runs) % 24
    load = 0.1 * np.sin(2 * np.pi * hours / 24)
    return RunArrays(
        hours=hours,
        started=np.arange(runs) * 3600.0,
        values={
            "ttft_seconds": 0.8 * np.exp(load + rng.normal(0, 0.05, runs)),
            "e2e_seconds": 2.0 * np.exp(load + rng.normal(0, 0.05, runs)),
            "output_tokens": rng.poisson(12, runs).astype(float),
            "error_share": np.zeros(runs),
        },
        passed=passed,
        scored=np.ones_like(passed),
        hashes=[f"h{i}" for i in range(len(p))],
        requests=np.full(runs, float(len(p))),
    )


def test_baseline_learns_the_daily_cycle_and_flags_a_drop() -> None:
    rng = np.random.default_rng(4)
    p = rng.beta(5, 1, 28)
    base = build_baseline(_arrays(rng, 168, p), DriftConfig(), rng, reps=50)
    assert set(base.calibration) == {
        "pass_rate",
        "ttft_seconds",
        "e2e_seconds",
        "output_tokens",
        "error_share",
    }
    assert base.interval_s == 3600 and base.horizon_runs == 2160
    levels = np.exp(base.levels["ttft_seconds"])
    assert levels[6] > levels[18]  # sin peaks at 06:00 and dips at 18:00
    same, worse = _arrays(rng, 48, p), _arrays(rng, 48, p, drop=0.25)
    cal = base.calibration["pass_rate"]
    h = cal.threshold(0.2)
    assert detect(same.residuals(base, "pass_rate"), cal.k, h, h / 2)[0][0] == 0
    assert detect(worse.residuals(base, "pass_rate"), cal.k, h, h / 2)[0][0] == 1


def test_baseline_learns_the_weekly_cycle() -> None:
    rng = np.random.default_rng(9)
    runs = _arrays(rng, 336, rng.beta(5, 1, 28))
    start = T0.timestamp()  # a Monday, 00:00 UTC
    runs.started = start + runs.started
    mondays = runs.weekdays == 0
    assert mondays.sum() == 48 and runs.weekdays[24] == 1
    runs.values["e2e_seconds"] = runs.values["e2e_seconds"] * np.where(mondays, 1.3, 1.0)
    base = build_baseline(runs, DriftConfig(), rng, reps=20)
    weekly = np.array(base.weekly["e2e_seconds"])
    assert weekly.argmax() == 0 and weekly[0] > 0.1 > abs(weekly[1:]).max()
    assert abs(np.array(base.weekly["ttft_seconds"])).max() < 0.05  # no cycle there
    slow_monday = runs.residuals(base, "e2e_seconds")[mondays]
    assert abs(float(np.mean(slow_monday))) < 0.1  # the Mondays are expected to be slow
    assert DriftBaseline.from_dict(base.to_dict()).weekly == base.weekly


def test_pass_residuals_pair_by_probe_and_skip_unknown_ones() -> None:
    rng = np.random.default_rng(5)
    base = build_baseline(_arrays(rng, 40, np.full(4, 0.5)), DriftConfig(), rng, reps=20)
    run = RunValues(1, T0, probes={"h0": (1, 1), "new": (0, 1)}, values={})
    r = RunArrays.of([run]).residuals(base, "pass_rate")
    assert r[0] == pytest.approx(base.probe_pass["h0"] - 1.0)
    monitor = Monitor(baseline_id=1)
    monitor.thresholds(base, 0.2)
    changed = RunValues(2, T0 + timedelta(hours=1), probes={"new": (1, 1)},
                        values={"pass_rate": 1.0, "error_share": 0.0}, n_requests=1)  # fmt: skip
    monitor.observe(changed, base)
    assert "re-pinned" in verdict_of(monitor, base).note


def test_a_verdict_names_the_probes_below_their_baseline() -> None:
    base = DriftBaseline(runs=10, span_s=1.0, interval_s=3600.0,
                         probe_pass={"a": 1.0, "b": 0.9, "c": 0.5})  # fmt: skip
    monitor = Monitor(baseline_id=1, detectors={"pass_rate": Cusum(k=0.05, h=9.0, cap=4.5)})
    for i in range(10):
        run = RunValues(i, T0 + timedelta(hours=i), values={"error_share": 0.0},
                        probes={"a": (0 if i >= 6 else 1, 1), "b": (1, 1), "c": (i % 2, 1),
                                "new": (0, 1)},
                        probe_names={"a": "sum-1", "b": "capital", "c": "coin"})  # fmt: skip
        monitor.observe(run, base)
    (named,) = verdict_of(monitor, base).probes  # b and c are at baseline, "new" is unknown
    # The last 6 runs of "a": 2 passes, then 4 failures.
    assert named == {"probe": "sum-1", "hash": "a", "baseline": 1.0, "recent": 2 / 6,
                     "passed": 2, "scored": 6}  # fmt: skip
    again = Monitor.from_dict(monitor.to_dict())
    assert verdict_of(again, base).probes == [named]
    degraded = RunValues(11, T0 + timedelta(hours=11), values={"error_share": 0.5},
                         probes={"a": (1, 1)})  # fmt: skip
    monitor.observe(degraded, base)  # a degraded run says nothing about its probes
    assert verdict_of(monitor, base).probes == [named]


# --- the service path: store -> analysis -> verdicts, metrics, report ---------------------


def _cfg(**drift: object) -> Config:
    defaults = {"baseline_runs": 24, "baseline_span": 86400.0, "bootstrap_reps": 40}
    return Config(
        gateways=[{"name": "gw", "base_url": "http://127.0.0.1:1", "auth": "none"}],
        drift={**defaults, **drift},
    )


def _run(
    store: Store,
    at: datetime,
    passes: int,
    *,
    slow: float = 1.0,
    status: str = "ok",
    location: str | None = None,
) -> None:
    """One stored hourly run of `PROBES` probes, `passes` of them passing, latencies
    scaled by `slow`, run from fleet `location` (None: a single instance)."""
    run_id = store.start_run("gw", "m", "golden", 1, 1, True, started_at=at, location=location)
    if status == "failed":
        store.finish_run(run_id, "failed", "gateway down: connect", [], [], finished_at=at)
        return
    observations, checks = [], []
    for i in range(PROBES):
        obs = Observation(
            gateway="gw",
            model="m",
            started_at=at + timedelta(seconds=i),
            content="x",
            finish_reason="stop",
            usage=Usage(prompt_tokens=10, completion_tokens=5 + i % 3, total_tokens=15, raw={}),
            first_token_s=0.3 * slow * (1 + 0.01 * i),
            end_s=1.0 * slow * (1 + 0.01 * i),
        )
        observations.append(ObservationRecord(obs, "golden", f"p{i}", f"hash{i}"))
        value = CheckValue.passed if i < passes else CheckValue.failed
        checks.append(CheckRecord(CheckResult("exact", value), i, f"p{i}", f"hash{i}"))
    store.finish_run(run_id, status, "", observations, checks, finished_at=at)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    st.migrate()
    yield st
    st.close()


def _latest(store: Store) -> object:
    (v,) = [v for v in store.latest_verdicts("drift") if v.suite == "golden"]
    return v


def test_drift_verdicts_from_stored_runs(store: Store, tmp_path: Path) -> None:
    cfg = _cfg()
    rng = np.random.default_rng(6)
    at = T0
    for _ in range(10):
        _run(store, at, 10 + int(rng.integers(0, 2)))
        at += timedelta(hours=1)
    analyse_drift(store, cfg, "gw", "m", at)
    v = _latest(store)
    assert v.verdict == "insufficient_data"
    assert v.details["needed"] == 14 and "24 runs over at least 1 day" in v.details["note"]

    for _ in range(20):  # the baseline: 30 runs over more than a day
        _run(store, at, 10 + int(rng.integers(0, 2)))
        at += timedelta(hours=1)
    at += timedelta(hours=1)
    analyse_drift(store, cfg, "gw", "m", at)
    v = _latest(store)
    assert v.verdict == "ok" and v.baseline_id is not None
    assert v.details["baseline_runs"] == 30
    rows = {m["metric"]: m for m in v.details["metrics"]}
    assert set(rows) >= {"pass_rate", "ttft_seconds", "e2e_seconds", "error_share"}
    assert all(r["threshold"] > 0 and r["statistic"] == 0 for r in rows.values())

    # An hour without a run, the gateway down for three runs, then a silence of two hours:
    # recorded, not fed.
    for _ in range(3):
        _run(store, at, 0, status="failed")
        at += timedelta(hours=1)
    at += timedelta(hours=2)
    for _ in range(4):
        _run(store, at, 10 + int(rng.integers(0, 2)))
        at += timedelta(hours=1)
    analyse_drift(store, cfg, "gw", "m", at)
    v = _latest(store)
    assert v.verdict == "ok"
    (gap,) = v.details["monitor"]["gaps"]
    assert gap["missed_runs"] == 6
    assert gap["reasons"] == {"gateway down: connect": 3, "no run": 3}
    assert v.details["monitor"]["detectors"]["pass_rate"]["runs"] == 4

    # Quality drops by half: pass_rate trips within a few runs, latency stays quiet.
    waited = 0
    while _latest(store).verdict != "regressed" and waited < 8:
        _run(store, at, 5)
        at += timedelta(hours=1)
        waited += 1
        analyse_drift(store, cfg, "gw", "m", at)  # resumes from the stored monitor
    v = _latest(store)
    assert v.verdict == "regressed" and v.details["tripped"] == ["pass_rate"]
    assert waited <= 4
    rows = {m["metric"]: m for m in v.details["metrics"]}
    assert rows["pass_rate"]["statistic"] >= rows["pass_rate"]["threshold"]
    assert rows["pass_rate"]["alarm_since"] is not None
    # The verdict names the prompts behind the drop: p5-p9 passed every baseline run and
    # fail since (p10, a coin in the baseline, may tie with them).
    named = v.details["probes_below_baseline"]
    assert len(named) == 5 and {p["probe"] for p in named} <= {f"p{i}" for i in range(5, 11)}
    assert all(p["baseline"] - p["passed"] / p["scored"] >= 0.25 for p in named)
    assert not {p["probe"] for p in named} & {f"p{i}" for i in range(5)}

    # The report shows the detector against its threshold over time and the gap.
    data = build_report_data(store, since=T0, until=at + timedelta(hours=1))
    out = tmp_path / "report"
    render_report(data, out)
    page = (out / data.targets[0].page).read_text()
    assert "Tripped:</strong> pass_rate" in page
    assert "Probes below their baseline" in page and f"{named[0]['probe']} 100.0 %" in page
    assert "statistic / threshold" in page and "gateway down: connect ×3" in page

    # Re-pinning starts fresh detectors on the new baseline.
    bid, _ = pin_drift_baseline(store, cfg, "gw", "m", "golden", at - timedelta(hours=30),
                                at, "pinned")  # fmt: skip
    analyse_drift(store, cfg, "gw", "m", at + timedelta(minutes=1))
    v = _latest(store)
    assert v.baseline_id == bid and v.verdict == "ok"


def test_too_small_a_pinned_baseline_says_how_many_runs_are_needed(store: Store) -> None:
    cfg = _cfg()
    at = T0
    for _ in range(5):
        _run(store, at, 10)
        at += timedelta(hours=1)
    pin_drift_baseline(store, cfg, "gw", "m", "golden", None, at, "pinned")
    analyse_drift(store, cfg, "gw", "m", at)
    v = _latest(store)
    assert v.verdict == "insufficient_data" and v.details["needed"] == 19
    assert "holds 5 runs" in v.details["note"]
    with pytest.raises(ValueError, match="need at least 2"):
        pin_drift_baseline(store, cfg, "gw", "m", "golden", at, at, "pinned")


def test_latency_with_timeouts_counts_them(store: Store) -> None:
    from aione_probe.analysis.run import run_values

    at = T0
    run_id = store.start_run("gw", "m", "golden", 1, 1, True, started_at=at)
    records = []
    for i in range(3):
        failure = FailureKind.timeout_total if i < 2 else FailureKind.ok
        obs = Observation(gateway="gw", model="m", started_at=at, content="x", failure=failure,
                          stream=True,
                          first_token_s=0.2, end_s=None if i < 2 else 1.0)  # fmt: skip
        records.append(ObservationRecord(obs, "golden", f"p{i}", f"hash{i}"))
    store.finish_run(run_id, "partial", "2 of 3 probes failed", records, [], finished_at=at)
    values = run_values(store, store.run(run_id))
    assert values.values["e2e_seconds"] == math.inf  # two of three timed out
    assert values.values["ttft_seconds"] == pytest.approx(0.2)
    assert values.values["error_share"] == pytest.approx(2 / 3)
    assert values.timeout_share == pytest.approx(2 / 3)


def test_fleet_drift_is_judged_per_location(store: Store) -> None:
    """Two locations probe one target; only eu slows down: eu's latency detectors trip,
    us's stay quiet, each on its own baseline, and each location exports its own."""
    from prometheus_client import CollectorRegistry

    cfg = _cfg()
    rng = np.random.default_rng(12)
    at = T0

    def hour(eu_slow: float) -> None:
        nonlocal at
        for location, slow in (("eu", eu_slow), ("us", 1.0)):
            jitter = float(rng.lognormal(0.0, 0.05))  # run-to-run latency noise
            passes = 10 + int(rng.integers(0, 2))
            _run(store, at, passes, slow=slow * jitter, location=location)
        at += timedelta(hours=1)

    def latest() -> dict[str | None, object]:
        return {v.location: v for v in store.latest_verdicts("drift") if v.suite == "golden"}

    for _ in range(30):
        hour(1.0)
    analyse_drift(store, cfg, "gw", "m", at)
    verdicts = latest()
    assert set(verdicts) == {"eu", "us"}  # no pooled (location None) verdict
    assert all(v.verdict == "ok" for v in verdicts.values())
    active = {b.location: b for b in store.baselines(kind="drift", active_only=True)}
    assert set(active) == {"eu", "us"}
    assert {v.baseline_id for v in verdicts.values()} == {active["eu"].id, active["us"].id}
    assert all(b.data["runs"] == 30 for b in active.values())

    waited = 0
    while latest()["eu"].verdict != "regressed" and waited < 8:
        hour(1.6)  # eu's answers take 60 % longer; us unchanged
        analyse_drift(store, cfg, "gw", "m", at)
        waited += 1
    eu, us = latest()["eu"], latest()["us"]
    assert eu.verdict == "regressed" and waited <= 4
    assert {"ttft_seconds", "e2e_seconds"} <= set(eu.details["tripped"])
    assert us.verdict == "ok" and us.details["tripped"] == []
    assert not any(m["alarm"] for m in us.details["metrics"])
    # One budget per target, split over every location's detectors.
    assert eu.details["budget"]["detectors"] == 2 * len(eu.details["metrics"])

    # Each location's instance exports its own verdict; a single instance none of them.
    labels = {"gateway": "gw", "model": "m", "suite": "golden", "metric": "e2e_seconds"}
    for location, alarm in (("eu", 1.0), ("us", 0.0), (None, None)):
        metrics = ProbeMetrics(CollectorRegistry())
        metrics.location = location
        metrics.refresh(store)
        assert metrics.registry.get_sample_value("aione_probe_drift_alarm", labels) == alarm

    # Re-pinning one location (here on too few runs) leaves the other's baseline alone.
    bid, _ = pin_drift_baseline(store, cfg, "gw", "m", "golden", at - timedelta(hours=6),
                                at, "pinned", "eu")  # fmt: skip
    analyse_drift(store, cfg, "gw", "m", at + timedelta(minutes=1))
    eu, us = latest()["eu"], latest()["us"]
    assert eu.verdict == "insufficient_data" and f"baseline {bid} holds" in eu.details["note"]
    assert us.verdict == "ok" and us.baseline_id == active["us"].id
    assert store.active_baseline("drift", "gw", "m", "golden", "us").id == active["us"].id
    assert store.active_baseline("drift", "gw", "m", "golden") is None  # nothing pooled
