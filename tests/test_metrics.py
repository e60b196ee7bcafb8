"""ProbeMetrics: sample values on a fresh registry, label bounds, cached gauges, sharing, docs."""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aione_probe import metrics as metrics_mod
from aione_probe.errors import FailureKind
from aione_probe.metrics import RESPONSE_MODELS_PER_TARGET, Op, ProbeMetrics, Snapshot
from aione_probe.slo import Objectives
from aione_probe.types import CheckResult, CheckValue, Observation, Usage

ROOT = Path(__file__).resolve().parent.parent
T = {"gateway": "aione", "model": "gpt-x"}
R = {**T, "suite": "smoke"}


@pytest.fixture
def pm() -> ProbeMetrics:
    return ProbeMetrics(CollectorRegistry())


def val(pm: ProbeMetrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return pm.registry.get_sample_value(name, labels or {})


def streamed(**kw: Any) -> Observation:
    base: dict[str, Any] = dict(
        gateway="aione",
        model="gpt-x",
        stream=True,
        first_chunk_s=0.25,
        first_token_s=0.5,
        end_s=2.5,
        gaps_s=[0.01, 0.5],
        usage=Usage(prompt_tokens=100, completion_tokens=5, cached_tokens=64, raw={}),
        response_model="gpt-x-2025",
    )
    base.update(kw)
    return Observation(**base)


@dataclass
class Row:
    kind: str
    verdict: str
    score: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    gateway: str = "aione"
    model: str = "gpt-x"
    suite: str | None = "smoke"
    created_at: datetime | None = None
    comparison: str | None = None


@dataclass
class RunRow:
    status: str
    started_at: datetime
    finished_at: datetime | None
    gateway: str = "aione"
    model: str = "gpt-x"
    suite: str = "smoke"


class FakeStore:
    def __init__(self, verdicts: list[Row] | None = None, runs: list[RunRow] | None = None):
        self.verdicts = verdicts or []
        self.runs = runs or []

    def latest_verdicts(self, kind: str | None = None) -> list[Row]:
        return [v for v in self.verdicts if kind is None or v.kind == kind]

    def last_runs(self) -> list[RunRow]:
        return self.runs


def test_streamed_attempt_records_outcome_timings_tokens_and_cost(pm: ProbeMetrics) -> None:
    pm.observe(streamed(), suite="smoke", cost=0.25)
    s = {**R, "stream": "true"}
    assert val(pm, "aione_probe_requests_total", {**s, "outcome": "ok"}) == 1
    assert val(pm, "aione_probe_ttft_seconds_bucket", {**s, "le": "0.5"}) == 1
    assert val(pm, "aione_probe_ttft_seconds_bucket", {**s, "le": "0.25"}) == 0
    assert val(pm, "aione_probe_ttft_seconds_sum", s) == 0.5
    assert val(pm, "aione_probe_e2e_seconds_sum", s) == 2.5
    assert val(pm, "aione_probe_time_to_first_chunk_seconds_sum", R) == 0.25
    assert val(pm, "aione_probe_tpot_seconds_sum", R) == 0.5  # (2.5 - 0.5) / (5 - 1)
    assert val(pm, "aione_probe_output_tokens_per_second_sum", R) == 2.0
    assert val(pm, "aione_probe_inter_chunk_gap_seconds_count", R) == 2
    assert val(pm, "aione_probe_tokens_total", {**T, "kind": "prompt"}) == 100
    assert val(pm, "aione_probe_tokens_total", {**T, "kind": "cached_prompt"}) == 64
    assert val(pm, "aione_probe_tokens_total", {**T, "kind": "completion"}) == 5
    assert val(pm, "aione_probe_tokens_total", {**T, "kind": "reasoning"}) is None
    assert val(pm, "aione_probe_cost_total", T) == 0.25
    assert val(pm, "aione_probe_response_model_info", {**T, "response_model": "gpt-x-2025"}) == 1


def test_failed_attempt_counts_error_class_and_no_latency(pm: ProbeMetrics) -> None:
    obs = Observation(gateway="aione", model="gpt-x", failure=FailureKind.http_5xx, end_s=0.5)
    pm.observe(obs, suite="smoke", cost=None)
    s = {**R, "stream": "false"}
    assert val(pm, "aione_probe_requests_total", {**s, "outcome": "error"}) == 1
    assert val(pm, "aione_probe_requests_total", {**s, "outcome": "ok"}) is None
    assert val(pm, "aione_probe_errors_total", {**s, "class": "http_5xx"}) == 1
    assert val(pm, "aione_probe_e2e_seconds_count", s) is None
    assert val(pm, "aione_probe_cost_total", T) is None


def test_plain_attempt_uses_full_body_as_ttft(pm: ProbeMetrics) -> None:
    pm.observe(Observation(gateway="aione", model="gpt-x", end_s=1.5), suite="smoke", cost=0.0)
    s = {**R, "stream": "false"}
    assert val(pm, "aione_probe_ttft_seconds_sum", s) == 1.5
    assert val(pm, "aione_probe_time_to_first_chunk_seconds_count", R) is None
    assert val(pm, "aione_probe_cost_total", T) == 0


def test_hostile_usage_and_cost_are_ignored_not_raised(pm: ProbeMetrics) -> None:
    usage = Usage(prompt_tokens=-5, completion_tokens=3, raw={})
    pm.observe(streamed(usage=usage), suite="smoke", cost=float("nan"))
    assert val(pm, "aione_probe_tokens_total", {**T, "kind": "prompt"}) is None
    assert val(pm, "aione_probe_tokens_total", {**T, "kind": "completion"}) == 3
    assert val(pm, "aione_probe_cost_total", T) is None


def test_response_model_flood_stays_bounded_and_truncated(pm: ProbeMetrics) -> None:
    for i in range(500):
        pm.observe(streamed(response_model=f"model-{i}"), suite="smoke", cost=None)
    pm.observe(streamed(response_model="x" * 10_000), suite="smoke", cost=None)
    names = [
        s.labels["response_model"]
        for f in pm.registry.collect()
        if f.name == "aione_probe_response_model_info"
        for s in f.samples
    ]
    assert len(names) == RESPONSE_MODELS_PER_TARGET
    assert names.count("x" * metrics_mod.MAX_LABEL_CHARS) == 1
    assert "model-499" in names and "model-0" not in names


def test_checks_counted_by_name_and_outcome(pm: ProbeMetrics) -> None:
    results = [
        CheckResult("finish_reason", CheckValue.failed),
        CheckResult("finish_reason", CheckValue.passed),
        CheckResult("cache", CheckValue.missing),
        CheckResult("exact", CheckValue.unscored),
    ]
    pm.observe_checks("aione", "gpt-x", "smoke", results)
    assert (
        val(pm, "aione_probe_checks_total", {**R, "check": "finish_reason", "outcome": "fail"}) == 1
    )
    assert (
        val(pm, "aione_probe_checks_total", {**R, "check": "finish_reason", "outcome": "pass"}) == 1
    )
    assert val(pm, "aione_probe_checks_total", {**R, "check": "cache", "outcome": "missing"}) == 1
    assert val(pm, "aione_probe_checks_total", {**R, "check": "exact", "outcome": "unscored"}) == 1


def test_run_finished_counts_status_and_timestamps(pm: ProbeMetrics) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pm.run_finished("aione", "gpt-x", "smoke", "ok", t0)
    pm.run_finished("aione", "gpt-x", "smoke", "failed", t0 + timedelta(minutes=5))
    assert val(pm, "aione_probe_suite_runs_total", {**R, "status": "ok"}) == 1
    assert val(pm, "aione_probe_suite_runs_total", {**R, "status": "failed"}) == 1
    assert val(pm, "aione_probe_last_run_timestamp_seconds", R) == t0.timestamp() + 300
    assert val(pm, "aione_probe_last_success_timestamp_seconds", R) == t0.timestamp()
    assert val(pm, "aione_probe_last_run_status", {**R, "status": "failed"}) == 1
    assert val(pm, "aione_probe_last_run_status", {**R, "status": "ok"}) == 0
    with pytest.raises(ValueError, match="unknown run status"):
        pm.run_finished("aione", "gpt-x", "smoke", "running", t0)


def test_config_spend_and_build_info(pm: ProbeMetrics) -> None:
    pm.set_build_info("1.2.2")
    pm.set_build_info("1.2.3")
    pm.set_suite_config("aione", "gpt-x", "smoke", 300.0)
    pm.set_spend("aione", 4.5, 5.0)
    assert val(pm, "aione_probe_suite_interval_seconds", R) == 300
    assert val(pm, "aione_probe_spend_today", {"gateway": "aione"}) == 4.5
    assert val(pm, "aione_probe_spend_daily_cap", {"gateway": "aione"}) == 5
    pm.set_spend("aione", 4.75, None)
    assert val(pm, "aione_probe_spend_daily_cap", {"gateway": "aione"}) is None
    info = next(f for f in pm.registry.collect() if f.name == "aione_probe_build_info")
    assert [s.labels["version"] for s in info.samples] == ["1.2.3"]
    assert (val(pm, "aione_probe_start_timestamp_seconds") or 0) > 0


def test_refresh_serves_verdicts_from_memory(pm: ProbeMetrics) -> None:
    created = datetime(2026, 1, 2)  # naive, as SQLite returns it: read as UTC
    store = FakeStore(
        verdicts=[
            Row(
                "authenticity",
                "suspect",
                score=math.log(5000.0),
                suite=None,
                comparison="baseline",
                created_at=created,
                details={
                    "threshold": 109500.0,
                    "suspect_threshold": 1095.0,
                    "substitution_share": {"estimate": 0.1, "ci_low": 0.02, "ci_high": 0.3},
                    "signals": [
                        {"signal": "greedy", "log_e": math.log(1000.0), "runs": 4},
                        {"signal": "tokenizer", "log_e": None, "status": "disabled"},
                    ],
                },
            ),
            Row("drift", "regressed", suite="golden",
                details={"pass_ratio": 0.75, "baseline_pass_ratio": 0.95,
                         "metrics": [{"metric": "pass_rate", "statistic": 0.31,
                                      "threshold": 0.25, "alarm": True},
                                     {"metric": "e2e_seconds", "statistic": 0.0,
                                      "threshold": 0.9, "alarm": False}],
                         "monitor": {"missed_runs": 3}, "open_gap": {"missed_runs": 2}}),
            Row("reconcile", "mismatch"),
        ]
    )  # fmt: skip
    pm.refresh(store)
    fp = {**T, "comparison": "baseline"}
    gold = {**T, "suite": "golden"}
    assert val(pm, "aione_probe_authenticity_verdict", {**fp, "verdict": "suspect"}) == 1
    assert val(pm, "aione_probe_authenticity_verdict", {**fp, "verdict": "authentic"}) == 0
    assert val(pm, "aione_probe_authenticity_evidence", fp) == pytest.approx(math.log10(5000))
    thr = val(pm, "aione_probe_authenticity_threshold", {**fp, "level": "substituted"})
    assert thr == pytest.approx(math.log10(109500))
    share = val(pm, "aione_probe_authenticity_substituted_share", {**fp, "bound": "high"})
    assert share == 0.3
    sig = {**fp, "signal": "greedy"}
    assert val(pm, "aione_probe_authenticity_signal_evidence", sig) == pytest.approx(3.0)
    assert (
        val(pm, "aione_probe_authenticity_signal_evidence", {**fp, "signal": "tokenizer"}) is None
    )
    assert val(pm, "aione_probe_drift_verdict", {**gold, "verdict": "regressed"}) == 1
    assert val(pm, "aione_probe_drift_verdict", {**gold, "verdict": "ok"}) == 0
    pr, e2e = {**gold, "metric": "pass_rate"}, {**gold, "metric": "e2e_seconds"}
    assert val(pm, "aione_probe_drift_statistic", pr) == 0.31
    assert val(pm, "aione_probe_drift_threshold", pr) == 0.25
    assert val(pm, "aione_probe_drift_alarm", pr) == 1
    assert val(pm, "aione_probe_drift_alarm", e2e) == 0
    assert val(pm, "aione_probe_drift_missed_runs", gold) == 5
    assert val(pm, "aione_probe_golden_pass_ratio", gold) == 0.75
    assert val(pm, "aione_probe_golden_baseline_pass_ratio", gold) == 0.95
    # a reconciliation is per target: no suite label (and never an empty one)
    assert val(pm, "aione_probe_reconcile_verdict", {**T, "verdict": "mismatch"}) == 1
    ts = {**T, "kind": "authenticity"}
    assert (
        val(pm, "aione_probe_verdict_timestamp_seconds", ts)
        == created.replace(tzinfo=UTC).timestamp()
    )
    # the next refresh replaces the snapshot: verdicts that disappeared are gone
    pm.refresh(FakeStore())
    assert val(pm, "aione_probe_drift_verdict", {**gold, "verdict": "regressed"}) is None


def test_refresh_merges_last_runs_without_going_back_in_time(pm: ProbeMetrics) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pm.run_finished("aione", "gpt-x", "smoke", "failed", t0 + timedelta(hours=1))
    store = FakeStore(
        runs=[
            RunRow("partial", t0, t0 + timedelta(seconds=30)),
            RunRow("ok", t0, t0, model="other"),
            RunRow("running", t0, None, model="busy"),
        ]
    )
    pm.refresh(store)
    assert val(pm, "aione_probe_last_run_status", {**R, "status": "failed"}) == 1
    assert val(pm, "aione_probe_last_run_timestamp_seconds", R) == t0.timestamp() + 3600
    assert val(pm, "aione_probe_last_success_timestamp_seconds", R) == t0.timestamp() + 30
    other = {"gateway": "aione", "model": "other", "suite": "smoke"}
    assert val(pm, "aione_probe_last_success_timestamp_seconds", other) == t0.timestamp()
    busy = {"gateway": "aione", "model": "busy", "suite": "smoke"}
    assert val(pm, "aione_probe_last_run_timestamp_seconds", busy) is None
    assert (val(pm, "aione_probe_last_refresh_timestamp_seconds") or 0) > 0


def test_scrape_does_not_call_the_store(pm: ProbeMetrics) -> None:
    class CountingStore(FakeStore):
        calls = 0

        def latest_verdicts(self, kind: str | None = None) -> list[Row]:
            CountingStore.calls += 1
            return [Row("drift", "ok")]

    pm.refresh(CountingStore())
    for _ in range(3):
        generate_latest(pm.registry)
    assert CountingStore.calls == 1


def test_no_created_series_and_two_registries_are_independent() -> None:
    a, b = ProbeMetrics(), ProbeMetrics()
    a.observe(streamed(), suite="smoke", cost=1.0)
    assert b.registry.get_sample_value("aione_probe_cost_total", T) is None
    text = generate_latest(a.registry).decode()
    assert "_created" not in text


def populated() -> ProbeMetrics:
    pm = ProbeMetrics()
    pm.set_build_info("0.1.0")
    pm.set_suite_config("aione", "gpt-x", "smoke", 60)
    pm.set_spend("aione", 1.0, 5.0)
    pm.observe(streamed(), suite="smoke", cost=0.5)
    pm.observe(
        Observation(gateway="aione", model="gpt-x", failure=FailureKind.timeout_first_token),
        suite="smoke",
        cost=None,
    )
    pm.observe_checks("aione", "gpt-x", "smoke", [CheckResult("cache", CheckValue.passed)])
    pm.run_finished("aione", "gpt-x", "smoke", "partial", datetime.now(UTC))
    pm.refresh(
        FakeStore(
            verdicts=[
                Row("authenticity", "authentic", score=0.9,
                    details={"signals": [{"signal": "s1", "p_value": 0.5, "result": "pass"}]}),
                Row("drift", "ok", details={"pass_ratio": 1.0, "baseline_pass_ratio": 1.0,
                                            "p_value": 1.0}),
                Row("cross_protocol", "consistent", created_at=datetime.now(UTC)),
            ]
        )
    )  # fmt: skip
    return pm


@pytest.mark.promtool
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics_on_a_live_scrape() -> None:
    text = generate_latest(populated().registry)
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.decode().strip() == ""  # no lint warnings either


def test_docs_table_is_current_and_lists_every_exposed_metric() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert metrics_mod.metrics_markdown_table() in doc, (
        "run: python -m aione_probe.metrics docs/metrics.md"
    )
    for family in populated().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in doc, f"{name} is exposed but not documented"
    exposed = {f.name for f in populated().registry.collect()}
    for spec in metrics_mod.METRICS:
        assert spec.name.removesuffix("_total") in exposed, f"{spec.name} documented, not exposed"


def test_refresh_accepts_verdicts_without_a_suite() -> None:
    """Overall verdicts (suite None) export with an empty suite label; scrapes must not fail."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry, generate_latest

    from aione_probe.metrics import ProbeMetrics

    verdict = SimpleNamespace(
        kind="authenticity",
        gateway="gw",
        model="m",
        suite=None,
        verdict="authentic",
        score=0.9,
        details={"signals": []},
        created_at=None,
    )
    store = SimpleNamespace(latest_verdicts=lambda kind=None: [verdict], last_runs=lambda: [])
    metrics = ProbeMetrics(CollectorRegistry())
    metrics.refresh(store)
    text = generate_latest(metrics.registry).decode()
    # A row without a comparison (written before schema 4) is the overall verdict.
    assert (
        'aione_probe_authenticity_verdict{comparison="overall",gateway="gw",model="m",'
        'verdict="authentic"} 1.0' in text
    )


def test_snapshot_dump_restores_an_identical_copy() -> None:
    pm = populated()
    copy = Snapshot()
    copy.apply(pm.snapshot.dump())
    assert copy.samples() == pm.snapshot.samples()
    with pytest.raises(ValueError, match="unknown snapshot operation"):
        copy.apply(("drop", ()))


def test_shared_metrics_write_files_and_send_each_state_change_once(tmp_path: Path) -> None:
    pm = ProbeMetrics(CollectorRegistry())
    pm.set_suite_config("aione", "gpt-x", "smoke", 60.0)
    sent: list[Op] = []
    pm.share(tmp_path, sent.append)
    try:
        for _ in range(3):  # the same echoed model: one change
            pm.observe(streamed(), suite="smoke", cost=0.5)
        pm.run_finished("aione", "gpt-x", "smoke", "ok", datetime.now(UTC))
        pm.refresh(FakeStore(verdicts=[Row("drift", "regressed")]))
    finally:
        pm.unshare()
    assert [name for name, _ in sent] == ["restore", "model", "run", "load"]
    copy = Snapshot()
    for op in sent:
        copy.apply(op)
    assert copy.samples() == pm.snapshot.samples()
    assert {p.name.split("_")[0] for p in tmp_path.glob("*.db")} == {
        "counter",
        "gauge",
        "histogram",
    }
    assert val(pm, "aione_probe_suite_interval_seconds", R) == 60  # carried over
    assert val(pm, "aione_probe_cost_total", T) == 1.5


def test_declared_job_exports_every_series_at_zero_and_its_objectives(pm: ProbeMetrics) -> None:
    objectives = Objectives(availability_target=0.995, ttft_s=1.5, ttft_target=0.95)
    pm.declare_job(
        "aione", "gpt-x", "smoke", streams=[True, False], checks=["finish_reason"],
        objectives=objectives,
    )  # fmt: skip
    for stream in ("true", "false"):
        s = {**R, "stream": stream}
        assert val(pm, "aione_probe_requests_total", {**s, "outcome": "ok"}) == 0
        assert val(pm, "aione_probe_requests_total", {**s, "outcome": "error"}) == 0
        assert val(pm, "aione_probe_errors_total", {**s, "class": "timeout_first_token"}) == 0
        assert val(pm, "aione_probe_ttft_seconds_count", s) == 0
    assert val(pm, "aione_probe_tpot_seconds_count", R) == 0
    for outcome in ("pass", "fail", "partial", "unscored", "missing"):
        labels = {**R, "check": "finish_reason", "outcome": outcome}
        assert val(pm, "aione_probe_checks_total", labels) == 0
    assert val(pm, "aione_probe_suite_runs_total", {**R, "status": "failed"}) == 0
    assert val(pm, "aione_probe_rate_limited_total", T) == 0
    assert val(pm, "aione_probe_cost_total", T) == 0
    assert val(pm, "aione_probe_slo_events_total", {**T, "slo": "availability",
                                                     "outcome": "bad"}) == 0  # fmt: skip
    assert val(pm, "aione_probe_slo_target_ratio", {**T, "slo": "availability"}) == 0.995
    assert val(pm, "aione_probe_slo_target_ratio", {**T, "slo": "ttft"}) == 0.95
    assert val(pm, "aione_probe_slo_threshold_seconds", {**T, "slo": "ttft"}) == 1.5
    assert val(pm, "aione_probe_slo_threshold_seconds", {**T, "slo": "e2e"}) == 30
    # no empty label value anywhere
    for family in pm.registry.collect():
        for sample in family.samples:
            assert all(v != "" for v in sample.labels.values()), sample


def test_requests_count_slo_events_against_the_declared_objectives(pm: ProbeMetrics) -> None:
    pm.declare_job("aione", "gpt-x", "smoke", streams=[True], checks=[],
                   objectives=Objectives(ttft_s=0.4))  # fmt: skip

    def events(slo: str, outcome: str) -> float | None:
        return val(pm, "aione_probe_slo_events_total", {**T, "slo": slo, "outcome": outcome})

    pm.observe_request(streamed())  # ttft 0.5 > 0.4: a latency miss, but available
    assert events("availability", "good") == 1 and events("ttft", "bad") == 1
    assert events("e2e", "good") == 1
    pm.observe_request(streamed(first_token_s=0.3))
    assert events("ttft", "good") == 1
    failed = Observation(gateway="aione", model="gpt-x", stream=True,
                         failure=FailureKind.http_5xx)  # fmt: skip
    pm.observe_request(failed)  # an HTTP error: availability only
    assert events("availability", "bad") == 1 and events("ttft", "bad") == 1
    late = Observation(gateway="aione", model="gpt-x", stream=True,
                       failure=FailureKind.timeout_first_token)  # fmt: skip
    pm.observe_request(late)  # a timeout: unavailable and a latency miss
    assert events("availability", "bad") == 2 and events("ttft", "bad") == 2
    assert events("e2e", "bad") == 1


def test_rate_limited_attempts_have_their_own_counter(pm: ProbeMetrics) -> None:
    limited = Observation(gateway="aione", model="gpt-x", failure=FailureKind.rate_limited)
    pm.observe(limited, suite="smoke", cost=None)
    pm.observe(Observation(gateway="aione", model="gpt-x", failure=FailureKind.http_5xx),
               suite="smoke", cost=None)  # fmt: skip
    assert val(pm, "aione_probe_rate_limited_total", T) == 1
