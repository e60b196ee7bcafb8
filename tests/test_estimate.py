"""The offline cost estimate that check-config prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from aione_probe.config import SuiteConfig, load_config
from aione_probe.estimate import daily_cost, estimate_suite, runs_per_day
from aione_probe.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("schedule", "per_day"),
    [
        ({"interval": "15m"}, 96.0),
        ({"interval": "1h"}, 24.0),
        ({"cron": "30 3 * * *"}, 1.0),
        ({"cron": "0 */6 * * *"}, 4.0),
        ({"cron": "0 9 * * 1-5"}, 5 / 7),  # weekdays only
    ],
)
def test_runs_per_day(schedule: dict[str, str], per_day: float) -> None:
    assert runs_per_day(SuiteConfig(file="x.toml", **schedule)) == pytest.approx(per_day)


def test_estimate_counts_requests_tokens_and_money() -> None:
    suite = load_suite(ROOT / "probes" / "smoke.toml")
    sc = SuiteConfig(file="smoke.toml", interval="1h")
    est = estimate_suite(sc, suite)
    assert est.requests_per_run == len(suite.expand(0))
    assert est.completion_tokens_per_run == sum(
        i.request("m").max_tokens or 0 for i in suite.expand(0)
    )
    assert 0 < est.prompt_tokens_per_run < 5_000
    assert est.tokens_per_day == 24 * (est.prompt_tokens_per_run + est.completion_tokens_per_run)
    cfg = load_config(ROOT / "examples" / "aione.toml")
    cost = daily_cost(cfg, est, "claude-sonnet-4-6")
    assert cost == pytest.approx(
        24 * (est.prompt_tokens_per_run * 3.0 + est.completion_tokens_per_run * 15.0) / 1e6
    )
    assert daily_cost(cfg, est, "unpriced-model") is None


def test_cheap_only_shrinks_the_estimate() -> None:
    suite = load_suite(ROOT / "probes" / "golden-reasoning.toml")
    full = estimate_suite(SuiteConfig(file="g.toml", interval="1h"), suite)
    cheap = estimate_suite(SuiteConfig(file="g.toml", interval="1h", cheap_only=True), suite)
    assert 0 < cheap.requests_per_run < full.requests_per_run
