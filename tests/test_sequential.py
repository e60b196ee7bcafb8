"""The anytime-valid machinery: calibrators, e-detectors and their false-alarm budgets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from aione_probe.analysis.sequential import (
    EDetector,
    count_alarms,
    p_to_e,
    stationary_bootstrap,
    threshold_for_budget,
)


@pytest.mark.parametrize("kappa", [None, 0.1, 0.5, 0.9])
def test_calibrators_integrate_to_one(kappa: float | None) -> None:
    # A calibrator f is valid iff its integral over a uniform p is at most 1. Integrated in
    # log p (the mixture's singularity at 0 is integrable but slow: its mass below p is
    # 1/|ln p|, so 1/690 lies below the clamp at 1e-300).
    total, _ = integrate.quad(
        lambda u: p_to_e(math.exp(u), kappa) * math.exp(u), math.log(1e-300), 0, limit=500
    )
    assert total <= 1.0 + 1e-6
    assert total == pytest.approx(1.0, abs=3e-3)


def test_calibrator_orders_evidence() -> None:
    assert p_to_e(1e-6) > p_to_e(1e-3) > p_to_e(0.05) > 1 > p_to_e(0.5) > 0
    assert p_to_e(1.0) == pytest.approx(0.5)
    assert math.isfinite(p_to_e(0.0))
    with pytest.raises(ValueError):
        p_to_e(1.5)
    with pytest.raises(ValueError):
        p_to_e(0.1, kappa=1.0)


def test_threshold_for_budget() -> None:
    assert threshold_for_budget(1.0, 1080) == 1080
    assert threshold_for_budget(0.01, 1080) == pytest.approx(108_000)
    assert threshold_for_budget(10, 10) == 20  # floor
    with pytest.raises(ValueError):
        threshold_for_budget(0, 100)


def test_cusum_recursion_and_sticky_alarm() -> None:
    det = EDetector(threshold=100)
    assert not det.update(5)  # M = 5
    assert not det.update(0.1)  # M = 0.5
    assert det.statistic == pytest.approx(0.5)
    assert not det.update(10)  # M = 10 * max(0.5, 1) = 10
    assert det.update(20)  # 200 >= 100
    assert det.alarmed_at == 4
    assert det.update(0.001)  # sticky until reset
    assert len(det.history) == 5
    det.reset()
    assert not det.alarm and det.runs == 0 and det.history == []


def test_shiryaev_roberts_dominates_cusum() -> None:
    rng = np.random.default_rng(1)
    es = rng.lognormal(-0.5, 1.0, size=200)
    cusum, sr = EDetector(threshold=1e9), EDetector(threshold=1e9, kind="shiryaev_roberts")
    for e in es:
        cusum.update(float(e))
        sr.update(float(e))
        assert sr.log_stat >= cusum.log_stat - 1e-12


def test_no_overflow_on_extreme_evidence() -> None:
    det = EDetector(threshold=1e6)
    for _ in range(100):
        det.update(1e300)
    assert det.alarm and det.log_stat > 600 * math.log(10)
    det.update(0.0)
    assert det.log_stat == -math.inf


@pytest.mark.parametrize("kind", ["cusum", "shiryaev_roberts"])
def test_null_false_alarms_within_budget(kind: str) -> None:
    # Uniform p-values (a valid null), 1,080 runs (a quarter of 2-hourly runs), budget one
    # false alarm per quarter: the count over many quarters must stay below the budget.
    rng = np.random.default_rng(7)
    c = threshold_for_budget(1.0, 1080)
    counts = [
        count_alarms([p_to_e(float(p)) for p in rng.random(1080)], c, kind)  # type: ignore[arg-type]
        for _ in range(200)
    ]
    assert np.mean(counts) <= 1.0


def test_detects_a_change_quickly() -> None:
    # 300 null runs, then runs whose p-values are about 1e-4: the detector must alarm within
    # a handful of changed runs even at a 1 %-per-quarter budget.
    rng = np.random.default_rng(3)
    det = EDetector(threshold=threshold_for_budget(0.01, 1080))
    for p in rng.random(300):
        det.update(p_to_e(float(p)))
    assert not det.alarm
    changed_runs = 0
    while not det.alarm and changed_runs < 20:
        det.update(p_to_e(1e-4))
        changed_runs += 1
    assert det.alarm and changed_runs <= 6


def test_stationary_bootstrap_keeps_blocks() -> None:
    rng = np.random.default_rng(0)
    idx = stationary_bootstrap(100, 10_000, mean_block=10, rng=rng)
    assert idx.min() >= 0 and idx.max() < 100
    steps = np.diff(idx)
    continued = np.mean((steps == 1) | (steps == -99))
    assert 0.85 < continued < 0.95  # 1 - 1/10 of steps continue a block
    with pytest.raises(ValueError):
        stationary_bootstrap(0, 10, 5, rng)
