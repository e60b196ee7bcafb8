"""Drift statistics: calibrated under the null, powerful under a real drop."""

from __future__ import annotations

import numpy as np
import pytest

from aione_probe.analysis.drift import MIN_SCORED, Window, cmh_test, evaluate, holm


def _window(rng: np.random.Generator, p: np.ndarray, runs: int, slow: float = 1.0) -> Window:
    passes = (rng.random((runs, len(p))) < p).sum(axis=0)
    n = runs * len(p)
    return Window(
        passes={f"p{i}": (int(passes[i]), runs) for i in range(len(p))},
        ttft_s=(rng.lognormal(np.log(0.8), 0.3, n) * slow).tolist(),
        e2e_s=(rng.lognormal(np.log(2.0), 0.3, n) * slow).tolist(),
        output_tokens=rng.poisson(12, n).astype(float).tolist(),
        runs=runs,
    )


def test_cmh_is_calibrated_under_the_null() -> None:
    rng = np.random.default_rng(7)
    p = rng.beta(5, 1, 30)
    pvals = [
        cmh_test(_window(rng, p, 10).passes, _window(rng, p, 10).passes)[1] for _ in range(400)
    ]
    rejections = np.mean(np.array(pvals) < 0.05)
    assert rejections <= 0.08  # nominal 5 %, binomial noise on 400 trials


def test_cmh_detects_a_ten_point_drop() -> None:
    rng = np.random.default_rng(8)
    p = rng.beta(5, 1, 30)
    z, pval, n_r, n_b = cmh_test(_window(rng, p, 24).passes, _window(rng, p - 0.10, 24).passes)
    assert z < 0 and pval < 1e-4
    assert n_r == n_b == 24 * 30


def test_cmh_ignores_probes_missing_from_one_window() -> None:
    z, p, n_r, n_b = cmh_test({"a": (5, 10)}, {"b": (0, 10)})
    assert (z, p, n_r, n_b) == (0.0, 1.0, 0, 0)


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


def test_evaluate_regressed_ok_and_insufficient() -> None:
    rng = np.random.default_rng(9)
    p = rng.beta(5, 1, 28)
    base = _window(rng, p, 24)
    verdicts = evaluate(
        {
            "same": (base, _window(rng, p, 24)),
            "worse": (base, _window(rng, np.clip(p - 0.2, 0, 1), 24)),
            "slower": (base, _window(rng, p, 24, slow=1.5)),
            "thin": (base, _window(rng, p[:2], 3)),
        },
        alpha=0.001,
        min_runs=6,
    )
    assert verdicts["same"].verdict == "ok"
    assert verdicts["worse"].verdict == "regressed"
    failing = [t.metric for t in verdicts["worse"].tests if t.result == "fail"]
    assert "pass_ratio" in failing
    assert verdicts["slower"].verdict == "regressed"
    assert {t.metric for t in verdicts["slower"].tests if t.result == "fail"} >= {"ttft_seconds"}
    thin = verdicts["thin"]
    assert thin.verdict == "insufficient_data" and thin.needed > 0
    assert MIN_SCORED > 6  # 2 probes x 3 runs is below the minimum


def test_window_round_trip() -> None:
    w = Window(passes={"a": (3, 4)}, ttft_s=[0.1], e2e_s=[0.2], output_tokens=[5.0], runs=2)
    assert Window.from_dict(w.to_dict()) == w
    assert w.pass_ratio == 0.75


def test_hysteresis_keeps_a_regression_until_it_clearly_clears() -> None:
    from aione_probe.analysis.drift import DriftTest, decide

    def tests(p: float) -> list[DriftTest]:
        return [
            DriftTest("pass_ratio", "cmh", -3.0, p, 500, 500, 0.85, 0.80, worse=True, p_adjusted=p)
        ]

    borderline = 0.004  # above alpha, below 10 x alpha
    assert decide(tests(borderline), 0.001, 0).verdict == "ok"
    assert decide(tests(borderline), 0.001, 0, previous="regressed").verdict == "regressed"
    assert decide(tests(0.05), 0.001, 0, previous="regressed").verdict == "ok"
