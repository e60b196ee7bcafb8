"""Analysis: read the store, compute verdicts, store them. Runs on the store's thread.

Called after each one-shot run and on a timer by the service. Every verdict is derived
from stored observations only, so metrics, reports and verdicts agree and survive
restarts.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from aione_probe.analysis.authenticity import audit_target
from aione_probe.analysis.crossproto import compare_protocols
from aione_probe.analysis.drift import Window, evaluate
from aione_probe.checks import is_quality_check
from aione_probe.config import Config
from aione_probe.errors import FailureKind
from aione_probe.store import Store
from aione_probe.types import CheckValue, utcnow

log = logging.getLogger(__name__)

SCORED = {CheckValue.passed.value, CheckValue.failed.value, CheckValue.partial.value}


def analyse(store: Store, cfg: Config, now: datetime | None = None) -> None:
    """Recompute drift, authenticity and cross-protocol verdicts for every known target."""
    now = now or utcnow()
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


def drift_window(
    store: Store, gateway: str, model: str, suite: str, since: datetime | None, until: datetime
) -> Window:
    """Aggregate one window of stored runs into a drift `Window`."""
    window = Window()
    window.runs = sum(
        1
        for r in store.runs(gateway, model, suite, since=since, until=until)
        if r.status in ("ok", "partial")
    )
    quality: dict[int, list[str]] = defaultdict(list)
    for c in store.check_results(gateway, model, suite, since=since, until=until):
        if c.observation_id is not None and is_quality_check(c.name):
            quality[c.observation_id].append(c.value)
    passes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for o in store.observations(gateway, model, suite, since=since, until=until, final_only=True):
        if o.failure != FailureKind.ok.value:
            continue
        ttft = o.first_token_s if o.stream else o.end_s
        if ttft is not None:
            window.ttft_s.append(ttft)
        if o.end_s is not None:
            window.e2e_s.append(o.end_s)
        if o.completion_tokens is not None:
            window.output_tokens.append(float(o.completion_tokens))
        values = [v for v in quality.get(o.id or -1, []) if v in SCORED]
        if values:
            entry = passes[o.probe_hash]
            entry[0] += all(v == CheckValue.passed.value for v in values)
            entry[1] += 1
    window.passes = {k: (v[0], v[1]) for k, v in passes.items()}
    return window


def _ensure_baseline(
    store: Store, cfg: Config, gateway: str, model: str, suite: str
) -> tuple[int, Window] | None:
    """The active drift baseline, pinning one automatically after enough runs (TOFU)."""
    row = store.active_baseline("drift", gateway, model, suite)
    if row is None:
        runs = [r for r in store.runs(gateway, model, suite) if r.status in ("ok", "partial")]
        if len(runs) < cfg.drift.auto_baseline_runs:
            return None
        first = runs[: cfg.drift.auto_baseline_runs]
        start = first[0].started_at
        end = (first[-1].finished_at or first[-1].started_at) + timedelta(seconds=1)
        data = drift_window(store, gateway, model, suite, start, end)
        bid = store.pin_baseline(
            "drift", gateway, model, suite, start, end, "auto: first runs", data.to_dict()
        )
        log.info("pinned drift baseline %d for %s/%s %s", bid, gateway, model, suite)
        row = store.baseline(bid)
        assert row is not None
    assert row.id is not None
    return row.id, Window.from_dict(row.data)


def analyse_drift(store: Store, cfg: Config, gateway: str, model: str, now: datetime) -> None:
    """Drift verdicts for every suite of one target (Holm across all of them)."""
    suites = sorted({r.suite for r in store.runs(gateway, model)})
    since = now - timedelta(seconds=cfg.drift.window)
    pairs: dict[str, tuple[Window, Window]] = {}
    baseline_ids: dict[str, int] = {}
    for suite in suites:
        base = _ensure_baseline(store, cfg, gateway, model, suite)
        if base is None:
            store.save_verdict(
                "drift",
                gateway,
                model,
                suite,
                "insufficient_data",
                None,
                cfg.drift.alpha,
                0,
                None,
                {
                    "note": "no baseline yet: one is pinned after "
                    f"{cfg.drift.auto_baseline_runs} runs",
                    "needed": cfg.drift.auto_baseline_runs - len(store.runs(gateway, model, suite)),
                    "metrics": [],
                },
            )
            continue
        baseline_ids[suite], base_window = base
        pairs[suite] = (base_window, drift_window(store, gateway, model, suite, since, now))
    previous = {
        v.suite or "": v.verdict
        for v in store.latest_verdicts("drift")
        if (v.gateway, v.model) == (gateway, model)
    }
    verdicts = evaluate(
        pairs, alpha=cfg.drift.alpha, min_runs=cfg.drift.min_runs, previous=previous
    )
    for suite, verdict in verdicts.items():
        base_window, recent = pairs[suite]
        pass_test = next((t for t in verdict.tests if t.metric == "pass_ratio"), None)
        store.save_verdict(
            "drift",
            gateway,
            model,
            suite,
            verdict.verdict,
            verdict.min_p,
            cfg.drift.alpha,
            recent.scored,
            baseline_ids[suite],
            {
                "metrics": [
                    {**t.__dict__, "baseline_id": baseline_ids[suite]} for t in verdict.tests
                ],
                "needed": verdict.needed,
                "note": verdict.note,
                "pass_ratio": recent.pass_ratio,
                "baseline_pass_ratio": base_window.pass_ratio,
                "p_value": pass_test.p_adjusted if pass_test else None,
                "window_seconds": cfg.drift.window,
                "correction": "holm",
            },
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
