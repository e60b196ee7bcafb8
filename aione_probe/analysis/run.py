"""Analysis: read the store, compute verdicts, store them. Runs on the store's thread.

Called after each one-shot run and on a timer by the service. Every verdict is derived
from stored observations only, so metrics, reports and verdicts agree and survive
restarts.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from aione_probe.analysis.authenticity import audit_target
from aione_probe.analysis.crossproto import compare_protocols
from aione_probe.analysis.drift import (
    LATENCY_METRICS,
    DriftBaseline,
    DriftVerdict,
    Monitor,
    RunArrays,
    RunValues,
    baseline_shortfall,
    build_baseline,
    median_counting_timeouts,
    normalised_latency,
    probe_log_medians,
    verdict_of,
)
from aione_probe.checks import is_quality_check
from aione_probe.config import Config
from aione_probe.errors import FailureKind
from aione_probe.store import Store, SuiteRun
from aione_probe.types import CheckValue, utcnow

log = logging.getLogger(__name__)

SCORED = {CheckValue.passed.value, CheckValue.failed.value, CheckValue.partial.value}

Series = tuple[str, str | None]
"""One drift series: (suite, fleet location or None), with its own baseline and detectors."""


ANALYSIS_LOCK = "aione-analysis"
"""The database-wide lock one analysis pass holds (`Store.exclusive`)."""


def analyse(store: Store, cfg: Config, now: datetime | None = None) -> bool:
    """Recompute drift, authenticity and cross-protocol verdicts for every known target.

    One pass at a time per database: in a fleet the periodic pass, a leaving instance's
    last pass and a one-shot `run` may meet, and two passes would pin the same automatic
    baseline twice and advance the same detectors twice. A pass that finds another one
    running returns False at once (that pass covers the same runs); True when it ran.
    """
    with store.exclusive(ANALYSIS_LOCK) as mine:
        if not mine:
            log.info("another analysis pass is running on this database; this one is skipped")
            return False
        _analyse(store, cfg, now or utcnow())
    return True


def _analyse(store: Store, cfg: Config, now: datetime) -> None:
    try:
        analyse_cross_protocol(store, cfg, now)
    except Exception:
        log.exception("cross-protocol analysis failed")
    for gateway, model in store.targets():
        try:
            analyse_drift(store, cfg, gateway, model, now)
        except Exception:
            log.exception("drift analysis of %s/%s failed", gateway, model)
        try:
            audit_target(store, cfg, gateway, model, now)
        except Exception:
            log.exception("authenticity audit of %s/%s failed", gateway, model)


def run_values(store: Store, run: SuiteRun) -> RunValues:
    """Reduce one stored run to its drift metric values (`aione_probe.analysis.drift`).

    Final observations only (retries are the gateway's business, the answer is what
    counts). A timed-out request counts as slower than every answer in the latency
    medians; every failed request, timeouts included, counts in the error share.
    """
    assert run.id is not None
    values = RunValues(
        run_id=run.id, started_at=run.started_at, status=run.status, reason=run.reason
    )
    if not values.usable:
        return values
    quality: dict[int, list[str]] = defaultdict(list)
    for c in store.check_results(run_id=run.id):
        if c.observation_id is not None and is_quality_check(c.name):
            quality[c.observation_id].append(c.value)
    obs = store.observations(run_id=run.id, final_only=True)
    ttft, e2e, tokens, timed_out, failed = [], [], [], [], 0
    per_probe: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in LATENCY_METRICS}
    probes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for o in obs:
        kind = FailureKind(o.failure)
        timeout = kind.is_timeout
        failed += kind != FailureKind.ok
        if kind == FailureKind.ok or timeout:
            first = o.first_token_s if o.stream else o.end_s
            ttft.append(np.nan if first is None else first)
            e2e.append(np.nan if o.end_s is None else o.end_s)
            timed_out.append(timeout)
            # Keyed by probe id: a templated probe's variants share one baseline median.
            for metric, x, censored in (("ttft_seconds", ttft[-1], timeout and first is None),
                                        ("e2e_seconds", e2e[-1], timeout)):  # fmt: skip
                if censored or not math.isnan(x):
                    per_probe[metric][o.probe_id].append(math.inf if censored else x)
        if kind == FailureKind.ok and o.completion_tokens is not None:
            tokens.append(float(o.completion_tokens))
        scored = [v for v in quality.get(o.id or -1, []) if v in SCORED]
        if scored:
            entry = probes[o.probe_hash]
            entry[0] += all(v == CheckValue.passed.value for v in scored)
            entry[1] += 1
            values.probe_names[o.probe_hash] = o.probe_id
    n = len(obs)
    values.n_requests = n
    values.probes = {k: (v[0], v[1]) for k, v in probes.items()}
    scored_n = sum(v[1] for v in values.probes.values())
    ttft_a, e2e_a, late = np.array(ttft), np.array(e2e), np.array(timed_out, dtype=bool)
    # A timeout after the first token still has a real TTFT; before it, TTFT is censored.
    ttft_late = late & np.isnan(ttft_a)
    values.values = {
        "pass_rate": sum(v[0] for v in values.probes.values()) / scored_n if scored_n else None,
        "ttft_seconds": _finite_or_inf(median_counting_timeouts(ttft_a, ttft_late)),
        "e2e_seconds": _finite_or_inf(median_counting_timeouts(e2e_a, late)),
        "output_tokens": float(np.median(tokens)) if tokens else None,
        "error_share": failed / n if n else None,
    }
    values.timeout_share = float(late.sum()) / n if n else None
    values.latency = {m: dict(v) for m, v in per_probe.items()}
    return values


def _finite_or_inf(x: float) -> float | None:
    """None for NaN (no value), the value otherwise (inf: over half the requests timed out)."""
    return None if math.isnan(x) else float(x)


def drift_series(store: Store, gateway: str, model: str) -> list[Series]:
    """The (suite, location) pairs of one target's runs: each has its own drift detectors.

    A fleet's locations are judged apart (a slowdown seen from one region is not diluted
    by the others); a single instance's runs have no location: one series per suite.
    """
    return sorted(
        {(r.suite, r.location) for r in store.runs(gateway, model)},
        key=lambda k: (k[0], k[1] or ""),
    )


def series_name(suite: str | None, location: str | None) -> str:
    """How a drift series is named to people: the suite, ``suite @ location`` in fleet mode."""
    return (suite or "") + ("" if location is None else f" @ {location}")


def _series_runs(
    store: Store, gateway: str, model: str, suite: str, location: str | None, **kw: Any
) -> list[SuiteRun]:
    """Runs of one drift series: exactly this location (None: the runs without one)."""
    runs = store.runs(gateway, model, suite, location=location, **kw)  # None there pools
    return [r for r in runs if r.location == location]


def _usable_runs(
    store: Store, gateway: str, model: str, suite: str, location: str | None, **kw: Any
) -> list[SuiteRun]:
    runs = _series_runs(store, gateway, model, suite, location, **kw)
    return [r for r in runs if r.status in ("ok", "partial")]


def pin_drift_baseline(
    store: Store,
    cfg: Config,
    gateway: str,
    model: str,
    suite: str,
    since: datetime | None,
    until: datetime,
    source: str,
    location: str | None = None,
) -> tuple[int, DriftBaseline]:
    """Pin the usable runs of [since, until) as the drift baseline of one suite, from one
    fleet `location` (None: a single instance's runs).

    The thresholds are calibrated here, once, by a block bootstrap of these runs
    (`aione_probe.analysis.changepoint.calibrate`).

    Raises:
        ValueError: fewer than two usable runs in the window.
    """
    runs = _usable_runs(store, gateway, model, suite, location, since=since, until=until)
    if len(runs) < 2:
        raise ValueError(
            f"{len(runs)} usable run(s) of {series_name(suite, location)} in the window; "
            "need at least 2"
        )
    values = [run_values(store, r) for r in runs]
    medians = probe_log_medians(values)
    arrays = RunArrays.of([normalised_latency(v, medians) for v in values])
    # Seeded by the runs: re-pinning the same runs gives the same thresholds.
    rng = np.random.default_rng([runs[0].id or 0, runs[-1].id or 0, len(runs)])
    baseline = build_baseline(arrays, cfg.drift, rng, reps=cfg.drift.bootstrap_reps)
    baseline.probe_latency = medians
    start = runs[0].started_at
    end = (runs[-1].finished_at or runs[-1].started_at) + timedelta(seconds=1)
    bid = store.pin_baseline(
        "drift", gateway, model, suite, start, end, source, baseline.to_dict(), location=location
    )
    log.info("pinned drift baseline %d for %s/%s %s (%d runs)", bid, gateway, model,
             series_name(suite, location), len(runs))  # fmt: skip
    return bid, baseline


def _baseline(
    store: Store, cfg: Config, gateway: str, model: str, suite: str, location: str | None
) -> tuple[int, DriftBaseline] | tuple[None, DriftVerdict]:
    """The active drift baseline, pinned automatically once enough runs span enough time."""
    row = store.active_baseline("drift", gateway, model, suite, location)
    if row is not None and row.id is not None:
        baseline = DriftBaseline.from_dict(row.data)
        if baseline is None:
            return None, DriftVerdict(
                "insufficient_data", needed=cfg.drift.baseline_runs,
                note=f"baseline {row.id} was pinned by an older version: re-pin it",
            )  # fmt: skip
        short = baseline_shortfall(baseline.runs, math.inf, cfg.drift)
        if short is not None:
            return None, DriftVerdict(
                "insufficient_data", needed=short[0],
                note=f"baseline {row.id} holds {baseline.runs} runs; {short[1]}",
            )  # fmt: skip
        return row.id, baseline
    runs = _usable_runs(store, gateway, model, suite, location)
    span = (runs[-1].started_at - runs[0].started_at).total_seconds() if runs else 0.0
    short = baseline_shortfall(len(runs), span, cfg.drift)
    if short is not None:
        return None, DriftVerdict("insufficient_data", needed=short[0], note=short[1])
    until = runs[-1].started_at + timedelta(seconds=1)
    return pin_drift_baseline(
        store, cfg, gateway, model, suite, None, until, "auto: first runs", location
    )


def analyse_drift(store: Store, cfg: Config, gateway: str, model: str, now: datetime) -> None:
    """Advance the drift detectors of every series (`drift_series`: suite, and location in
    fleet mode) of one target over its new runs; store one verdict per series.

    The false-alarm budget of the target is split evenly over the detectors of all its
    series with a baseline, every location included. Each verdict carries the monitor
    state, so the next pass resumes where this one stopped.
    """
    baselines: dict[Series, tuple[int, DriftBaseline]] = {}
    for suite, location in drift_series(store, gateway, model):
        bid, found = _baseline(store, cfg, gateway, model, suite, location)
        if bid is None:
            assert isinstance(found, DriftVerdict)
            _save_drift(store, gateway, model, (suite, location), found, None, {}, now)
        else:
            assert isinstance(found, DriftBaseline)
            baselines[(suite, location)] = (bid, found)
    detectors = sum(len(b.calibration) for _, b in baselines.values())
    per_detector = cfg.drift.false_alarms_per_quarter / max(detectors, 1)
    previous = {
        (v.suite or "", v.location): v.details
        for v in store.latest_verdicts("drift")
        if (v.gateway, v.model) == (gateway, model)
    }
    for (suite, location), (bid, baseline) in baselines.items():
        monitor = _resume(previous.get((suite, location)), bid)
        monitor.thresholds(baseline, per_detector)
        if monitor.last_at is None:  # a fresh monitor starts right after the baseline
            monitor.last_at = datetime.fromtimestamp(baseline.last_started, UTC).isoformat()
        last = datetime.fromisoformat(monitor.last_at)
        for run in _series_runs(store, gateway, model, suite, location, since=last, until=now):
            seen = run.started_at <= last or (
                monitor.last_run_id is not None and run.id is not None
                and run.id <= monitor.last_run_id
            )  # fmt: skip
            if run.status != "running" and not seen:
                monitor.observe(run_values(store, run), baseline)
        verdict = verdict_of(monitor, baseline)
        extra = {
            "monitor": monitor.to_dict(),
            "open_gap": _as_dict(monitor.open_gap(now, baseline)),
            "budget": {
                "false_alarms_per_quarter": cfg.drift.false_alarms_per_quarter,
                "detectors": detectors,
                "per_detector": per_detector,
                "horizon_runs": baseline.horizon_runs,
            },
            "baseline_runs": baseline.runs,
            "baseline_span_s": baseline.span_s,
            "interval_s": baseline.interval_s,
            "pass_ratio": (
                sum(monitor.recent_pass) / len(monitor.recent_pass)
                if monitor.recent_pass else None
            ),
            "baseline_pass_ratio": baseline.typical.get("pass_rate"),
        }  # fmt: skip
        _save_drift(store, gateway, model, (suite, location), verdict, bid, extra, now)


def _resume(details: dict[str, Any] | None, baseline_id: int) -> Monitor:
    """The stored monitor of this baseline, or a fresh one (new or re-pinned baseline)."""
    state = (details or {}).get("monitor")
    if isinstance(state, dict) and state.get("baseline_id") == baseline_id:
        return Monitor.from_dict(state)
    return Monitor(baseline_id=baseline_id)


def _as_dict(gap: Any) -> dict[str, Any] | None:
    return None if gap is None else dict(gap.__dict__)


def _save_drift(
    store: Store,
    gateway: str,
    model: str,
    series: Series,
    verdict: DriftVerdict,
    baseline_id: int | None,
    extra: dict[str, Any],
    now: datetime,
) -> None:
    n = max((m["n"] for m in verdict.metrics), default=0)
    worst = max((m["ratio"] or 0.0 for m in verdict.metrics), default=None)
    store.save_verdict(
        "drift",
        gateway,
        model,
        series[0],
        verdict.verdict,
        worst,  # score: the largest statistic / threshold (1 = alarm)
        None,
        n,
        baseline_id,
        {
            "method": "run-level CUSUM, block-bootstrap thresholds",
            "metrics": verdict.metrics,
            "tripped": verdict.tripped,
            "probes_below_baseline": verdict.probes,
            "needed": verdict.needed,
            "note": verdict.note,
            **extra,
        },
        location=series[1],
        created_at=now,
    )


def analyse_cross_protocol(store: Store, cfg: Config, now: datetime) -> None:
    """Compare each model served by both an OpenAI-protocol and an Anthropic gateway.

    The verdict is stored under the OpenAI gateway with suite ``vs:<anthropic gateway>``.
    """
    protocol = {g.name: g.protocol for g in cfg.gateways}
    serving: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for gateway, model in store.targets():
        if gateway in protocol:
            serving[model][protocol[gateway]].append(gateway)
    since = now - timedelta(seconds=cfg.authenticity.window)
    for model, by_protocol in serving.items():
        for a in by_protocol.get("openai", []):
            for b in by_protocol.get("anthropic", []):
                rows = [
                    *store.observations(a, model, since=since, until=now, final_only=True),
                    *store.observations(b, model, since=since, until=now, final_only=True),
                ]
                result = compare_protocols(rows, alpha=cfg.authenticity.alpha)
                p_values = [s["p_value"] for s in result["signals"] if s.get("p_value") is not None]
                store.save_verdict(
                    "cross_protocol",
                    a,
                    model,
                    f"vs:{b}",
                    result["verdict"],
                    min(p_values, default=None),
                    cfg.authenticity.alpha,
                    sum(result["n"].values()),  # answers compared, both protocols
                    None,
                    result,
                )
