"""Generate aione-probe's Grafana dashboards: ``python grafana/dashboards.py``.

Writes classic dashboard JSON (schemaVersion 41, provisioned from files) into
grafana/dashboards/. Standalone on purpose: no aione_probe import and no dependency, so it
runs anywhere Python 3.11 does. tests/test_grafana.py regenerates and diffs the output,
and lints it (variables, selectors, units, ids).

Every query selects ``job=~"$job"`` and, where the metric has those labels,
``location=~"$location"`` (fleet mode's vantage point; "All" also matches a single
instance, which has no location label), ``gateway=~"$gateway"`` and ``model=~"$model"``.
Probe traffic is sparse, so rates use the ``$window`` variable (default 1h) instead of
``$__rate_interval``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 41
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["aione-probe"]
SEL = 'job=~"$job", location=~"$location", gateway=~"$gateway", model=~"$model"'
GW_SEL = 'job=~"$job", location=~"$location", gateway=~"$gateway"'
TTFT_SLO_S = 3.0

Json = dict[str, Any]


def m(name: str, extra: str = "", *, sel: str = SEL) -> str:
    """A selector of `name` with the dashboard variables and optional extra matchers."""
    return f"{name}{{{sel}{', ' + extra if extra else ''}}}"


def inc(name: str, extra: str = "", window: str = "$window") -> str:
    """increase() of a selector over `window`."""
    return f"increase({m(name, extra)}[{window}])"


def q(expr: str, legend: str = "", *, instant: bool = False) -> Json:
    """One Prometheus target (refId is filled in by the panel)."""
    target: Json = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        target.update(instant=True, range=False, format="table")
    else:
        target.update(instant=False, range=True)
    return target


def quantile(phi: float, bucket: str, by: str, extra: str = "") -> str:
    """histogram_quantile over `bucket` per `by` labels across `$window`."""
    return f"histogram_quantile({phi}, sum by ({by}, le) (rate({m(bucket, extra)}[$window])))"


def ratio(num: str, den: str, by: str = "gateway, model") -> str:
    """sum(increase(num)) / sum(increase(den)) per `by` over `$window`.

    A group whose numerator has no series (a target with zero successes) reads 0, not
    "no data": ``or 0 * denominator`` fills it in.
    """
    total = f"sum by ({by}) (increase({den}[$window]))"
    return f"(sum by ({by}) (increase({num}[$window])) or 0 * {total}) / {total}"


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    *,
    w: int = 12,
    h: int = 8,
    defaults: Json | None = None,
    overrides: list[Json] | None = None,
    options: Json | None = None,
    transformations: list[Json] | None = None,
) -> Json:
    """A panel of any kind; layout and id are assigned by `Dashboard.add`."""
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {
            "defaults": {"unit": unit, **(defaults or {})},
            "overrides": overrides or [],
        },
        "options": options or {},
        "targets": targets,
    }
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(title: str, description: str, unit: str, *targets: Json, **kw: Any) -> Json:
    """A time series panel with a table legend."""
    kw.setdefault("options", {"legend": {"displayMode": "table", "placement": "bottom"}})
    return panel("timeseries", title, description, unit, list(targets), **kw)


def stat(title: str, description: str, unit: str, *targets: Json, **kw: Any) -> Json:
    """A single-value panel of the latest value."""
    kw.setdefault("w", 6)
    kw.setdefault("h", 4)
    kw.setdefault("options", {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"})
    return panel("stat", title, description, unit, list(targets), **kw)


def table(title: str, description: str, unit: str, *targets: Json, **kw: Any) -> Json:
    """A table of instant queries, merged on their labels, without the time column."""
    kw.setdefault("transformations", [])
    kw["transformations"] = [
        *(([{"id": "merge", "options": {}}]) if len(targets) > 1 else []),
        {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        *kw["transformations"],
    ]
    return panel("table", title, description, unit, list(targets), **kw)


def thresholds(*steps: tuple[float | None, str]) -> Json:
    """Absolute threshold steps: (value or None for the base, colour)."""
    return {
        "thresholds": {
            "mode": "absolute",
            "steps": [{"value": v, "color": c} for v, c in steps],
        }
    }


def value_text(mapping: dict[str, tuple[str, str]]) -> list[Json]:
    """Value mappings from a number (as text) to (display text, colour)."""
    return [
        {
            "type": "value",
            "options": {
                k: {"text": t, "color": c, "index": i}
                for i, (k, (t, c)) in enumerate(mapping.items())
            },
        }
    ]


def column(refid: str, name: str, unit: str, **props: Any) -> Json:
    """Override for one merged table column ("Value #A"): display name, unit, extras."""
    properties = [{"id": "displayName", "value": name}, {"id": "unit", "value": unit}]
    properties += [{"id": k, "value": v} for k, v in props.items()]
    return {"matcher": {"id": "byName", "options": f"Value #{refid}"}, "properties": properties}


def variables() -> list[Json]:
    """$datasource, $job, $location, $gateway, $model (multi, include all) and $window."""

    def query_var(name: str, label: str, query: str) -> Json:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": {"query": query, "refId": name},
            "definition": query,
            "refresh": 2,
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"text": ["All"], "value": ["$__all"]},
            "hide": 0,
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "regex": "",
            "refresh": 1,
            "multi": False,
            "includeAll": False,
            "current": {},
            "hide": 0,
        },
        query_var("job", "Job", "label_values(aione_probe_build_info, job)"),
        query_var(
            "location", "Location", 'label_values(aione_probe_build_info{job=~"$job"}, location)'
        ),
        query_var(
            "gateway",
            "Gateway",
            'label_values(aione_probe_requests_total{job=~"$job"}, gateway)',
        ),
        query_var(
            "model",
            "Model",
            'label_values(aione_probe_requests_total{job=~"$job", gateway=~"$gateway"}, model)',
        ),
        {
            "name": "window",
            "label": "Window",
            "type": "custom",
            "query": "15m,1h,6h,1d,7d",
            "options": [
                {"text": v, "value": v, "selected": v == "1h"}
                for v in ("15m", "1h", "6h", "1d", "7d")
            ],
            "current": {"text": "1h", "value": "1h"},
            "multi": False,
            "includeAll": False,
            "hide": 0,
        },
    ]


class Dashboard:
    """A classic dashboard; panels flow left to right in a 24-column grid."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[Json] = []
        self._x = self._y = self._row_h = 0

    def row(self, title: str) -> None:
        """Start a new full-width row with a header."""
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self._y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self._y += 1

    def add(self, *panels: Json) -> None:
        """Place panels after the previous ones, wrapping at 24 columns."""
        for p in panels:
            w, h = p["gridPos"]["w"], p["gridPos"]["h"]
            if self._x + w > 24:
                self._newline()
            p["gridPos"] = {"x": self._x, "y": self._y, "w": w, "h": h}
            self._x += w
            self._row_h = max(self._row_h, h)
            self.panels.append(p)

    def _newline(self) -> None:
        self._y += self._row_h
        self._x = self._row_h = 0

    def to_json(self) -> Json:
        """The dashboard model, with panel ids numbered in order."""
        panels = [{"id": i, **p} for i, p in enumerate(self.panels, start=1)]
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": TAGS,
            "timezone": "utc",
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": "1m",
            "time": {"from": "now-24h", "to": "now"},
            "annotations": {"list": []},
            "links": [
                {
                    "type": "dashboards",
                    "title": "aione-probe",
                    "tags": TAGS,
                    "asDropdown": True,
                    "includeVars": True,
                    "keepTime": True,
                }
            ],
            "templating": {"list": variables()},
            "panels": panels,
        }


# --------------------------------------------------------------------- dashboards
REQ = "aione_probe_requests_total"
SLO = "aione_probe_slo_events_total"
AVAILABILITY_BY_JOB = ratio(
    m(SLO, 'slo="availability", outcome="good"'), m(SLO, 'slo="availability"'), by="job"
)
COMPLETION = 'kind="completion"'
CACHED = 'kind="cached_prompt"'
PROMPT = 'kind="prompt"'
CACHE = 'check="cache"'
OVERALL = 'comparison="overall"'
AUTH_CODE = (
    "max by (gateway, model) ("
    + " or ".join(
        f"({m('aione_probe_authenticity_verdict', OVERALL + f', verdict={state!r}')} == 1) * {code}"
        for state, code in (
            ("substituted", 2),
            ("suspect", 1),
            ("authentic", 0),
            ("insufficient_data", -1),
        )
    )
    + ")"
)
AUTH_TEXT = {
    "-1": ("insufficient data", "blue"),
    "0": ("authentic", "green"),
    "1": ("suspect", "orange"),
    "2": ("substituted", "red"),
}


def overview() -> Dashboard:
    """Every gateway x model at a glance."""
    d = Dashboard(
        "aione-probe-overview",
        "aione-probe / Overview",
        "Every probed gateway and model: last run, success, TTFT, quality, authenticity, spend.",
    )
    last_ok = m("aione_probe_last_run_status", 'status=~"ok|partial"')
    d.add(
        stat(
            "Targets with a successful last run",
            "Gateway x model pairs whose last run of every suite was ok or partial, "
            "out of all pairs with a run.",
            "none",
            q(f"sum(min by (gateway, model) (max by (gateway, model, suite) ({last_ok})))", "up"),
            q(f"count(max by (gateway, model) ({m('aione_probe_last_run_status')}))", "all"),
        ),
        stat(
            "Availability",
            "Requests that succeeded after retries over all requests in the window (the "
            "availability SLI). The default objective is AIone's 99 %.",
            "percentunit",
            q(AVAILABILITY_BY_JOB),
            defaults=thresholds((None, "red"), (0.99, "green")),
        ),
        stat(
            "TTFT p99 (streamed)",
            "99th percentile time to first token of streamed requests; "
            f"the default objective is {TTFT_SLO_S:g} s (per target: "
            "aione_probe_slo_threshold_seconds).",
            "s",
            q(quantile(0.99, "aione_probe_ttft_seconds_bucket", "job", 'stream="true"')),
            defaults=thresholds((None, "green"), (TTFT_SLO_S, "red")),
        ),
        stat(
            "Spend today",
            "Spend across the selected gateways in the current UTC day, in the price table's "
            "currency.",
            "short",
            q(f"sum({m('aione_probe_spend_today', sel=GW_SEL)})"),
        ),
    )
    d.add(
        table(
            "Gateway x model",
            "One row per target: every suite's last run ok, availability (after retries) and "
            "TTFT percentiles over the window, worst golden pass ratio, authenticity verdict.",
            "none",
            q(
                f"min by (gateway, model) (max by (gateway, model, suite) ({last_ok}))",
                instant=True,
            ),
            q(
                ratio(m(SLO, 'slo="availability", outcome="good"'), m(SLO, 'slo="availability"')),
                instant=True,
            ),
            q(
                quantile(0.5, "aione_probe_ttft_seconds_bucket", "gateway, model", 'stream="true"'),
                instant=True,
            ),
            q(
                quantile(
                    0.99, "aione_probe_ttft_seconds_bucket", "gateway, model", 'stream="true"'
                ),
                instant=True,
            ),
            q(f"min by (gateway, model) ({m('aione_probe_golden_pass_ratio')})", instant=True),
            q(AUTH_CODE, instant=True),
            w=24,
            h=9,
            overrides=[
                column(
                    "A",
                    "Up",
                    "none",
                    mappings=value_text({"0": ("down", "red"), "1": ("up", "green")}),
                ),
                column("B", "Availability", "percentunit"),
                column("C", "TTFT p50", "s"),
                column("D", "TTFT p99", "s"),
                column("E", "Golden pass ratio", "percentunit"),
                column("F", "Authenticity", "none", mappings=value_text(AUTH_TEXT)),
            ],
        )
    )
    d.add(
        timeseries(
            "Availability and attempt success by target",
            "Requests that succeeded after retries (the availability SLI) and attempts that "
            "succeeded (each retry counts), per gateway and model, over the window.",
            "percentunit",
            q(
                ratio(m(SLO, 'slo="availability", outcome="good"'), m(SLO, 'slo="availability"')),
                "requests {{gateway}} {{model}}",
            ),
            q(ratio(m(REQ, 'outcome="ok"'), m(REQ)), "attempts {{gateway}} {{model}}"),
        ),
        timeseries(
            "Rate-limited share of attempts",
            "Attempts answered 429 over all attempts; AIoneProbeRateLimited files a ticket "
            "above 10 %. Retries decide availability.",
            "percentunit",
            q(ratio(m("aione_probe_rate_limited_total"), m(REQ)), "{{gateway}} {{model}}"),
        ),
        timeseries(
            "TTFT p50 and p99 by target (streamed)",
            "Time to first token of streamed requests over the window.",
            "s",
            q(
                quantile(0.5, "aione_probe_ttft_seconds_bucket", "gateway, model", 'stream="true"'),
                "p50 {{gateway}} {{model}}",
            ),
            q(
                quantile(
                    0.99, "aione_probe_ttft_seconds_bucket", "gateway, model", 'stream="true"'
                ),
                "p99 {{gateway}} {{model}}",
            ),
        ),
        timeseries(
            "Failed attempts by class",
            "Failed request attempts per window, by failure class (FailureKind).",
            "short",
            q(f"sum by (class) (increase({m('aione_probe_errors_total')}[$window]))", "{{class}}"),
        ),
        timeseries(
            "Time since last successful run",
            "Seconds since each suite's last ok or partial run; AIoneProbeStale fires past "
            "twice the configured interval.",
            "s",
            q(
                f"time() - {m('aione_probe_last_success_timestamp_seconds')}",
                "{{gateway}} {{model}} {{suite}}",
            ),
        ),
    )
    return d


def latency() -> Dashboard:
    """TTFT, chunks, TPOT, end-to-end, speed and the TTFT SLO."""
    d = Dashboard(
        "aione-probe-latency",
        "aione-probe / Latency",
        "Latency of successful probe requests by phase, the TTFT SLO and the P99 baseline.",
    )
    by = "location, gateway, model"  # a fleet: one series per vantage point
    legend = "{{location}} {{gateway}} {{model}}"
    d.row("Time to first token")
    d.add(
        timeseries(
            "TTFT p50 / p90 / p99",
            "Time to first content token (streamed) or to the full body (plain), by stream mode.",
            "s",
            *(
                q(
                    quantile(p, "aione_probe_ttft_seconds_bucket", f"{by}, stream"),
                    f"p{round(p * 100)} {legend} stream={{{{stream}}}}",
                )
                for p in (0.5, 0.9, 0.99)
            ),
        ),
        timeseries(
            "Time to first chunk p50 / p99 (streamed)",
            "Time to the first SSE event of any kind; a large gap to TTFT means empty "
            "role-only chunks are sent first.",
            "s",
            q(
                quantile(0.5, "aione_probe_time_to_first_chunk_seconds_bucket", by),
                "p50 {{location}} {{gateway}} {{model}}",
            ),
            q(
                quantile(0.99, "aione_probe_time_to_first_chunk_seconds_bucket", by),
                "p99 {{location}} {{gateway}} {{model}}",
            ),
        ),
        timeseries(
            "SLO burn rates",
            "Bad-event ratio over the error budget (1 - target) per SLO (availability, ttft, "
            "e2e) over 1h and 6h; the page thresholds are 14.4x (1h) and 6x (6h).",
            "x",
            q(
                m("gateway_model_slo:aione_probe_slo_burn_rate:ratio_rate1h"),
                "1h {{slo}} {{location}} {{gateway}} {{model}}",
            ),
            q(
                m("gateway_model_slo:aione_probe_slo_burn_rate:ratio_rate6h"),
                "6h {{slo}} {{location}} {{gateway}} {{model}}",
            ),
            defaults=thresholds((None, "green"), (6, "orange"), (14.4, "red")),
        ),
        panel(
            "heatmap",
            "TTFT distribution (streamed)",
            "Streamed requests per TTFT bucket over time.",
            "s",
            [
                {
                    **q(
                        "sum by (le) ("
                        + inc("aione_probe_ttft_seconds_bucket", 'stream="true"')
                        + ")",
                        "{{le}}",
                    ),
                    "format": "heatmap",
                }
            ],
            options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1},
        ),
    )
    d.row("Generation")
    d.add(
        timeseries(
            "TPOT p50 / p99 (streamed)",
            "Time per output token after the first: (e2e - ttft) / (completion_tokens - 1).",
            "s",
            q(quantile(0.5, "aione_probe_tpot_seconds_bucket", by), f"p50 {legend}"),
            q(quantile(0.99, "aione_probe_tpot_seconds_bucket", by), f"p99 {legend}"),
        ),
        timeseries(
            "Output speed p50 (streamed)",
            "Output tokens per second after the first token, from usage (never chunk counts).",
            "suffix:tok/s",
            q(
                quantile(0.5, "aione_probe_output_tokens_per_second_bucket", by),
                "p50 {{location}} {{gateway}} {{model}}",
            ),
            q(
                quantile(0.1, "aione_probe_output_tokens_per_second_bucket", by),
                "p10 {{location}} {{gateway}} {{model}}",
            ),
        ),
        timeseries(
            "Inter-chunk gap p50 / p99",
            "Gaps between consecutive stream chunks: stalls, buffering or fake streaming.",
            "s",
            q(
                quantile(0.5, "aione_probe_inter_chunk_gap_seconds_bucket", by),
                "p50 {{location}} {{gateway}} {{model}}",
            ),
            q(
                quantile(0.99, "aione_probe_inter_chunk_gap_seconds_bucket", by),
                "p99 {{location}} {{gateway}} {{model}}",
            ),
        ),
        timeseries(
            "End-to-end p99 vs 3x baseline",
            "Hourly P99 end-to-end latency against three times its 7-day average (the "
            "AIoneProbeP99LatencyHigh threshold).",
            "s",
            q(m("gateway_model:aione_probe_e2e_seconds:p99_1h"), f"p99 1h {legend}"),
            q(
                f"3 * {m('gateway_model:aione_probe_e2e_seconds:p99_1h_avg7d')}",
                "3x baseline {{location}} {{gateway}} {{model}}",
            ),
        ),
        timeseries(
            "End-to-end p50 / p99",
            "End-to-end latency of successful requests over the window, by stream mode.",
            "s",
            q(
                quantile(0.5, "aione_probe_e2e_seconds_bucket", f"{by}, stream"),
                "p50 {{location}} {{gateway}} {{model}} stream={{stream}}",
            ),
            q(
                quantile(0.99, "aione_probe_e2e_seconds_bucket", f"{by}, stream"),
                "p99 {{location}} {{gateway}} {{model}} stream={{stream}}",
            ),
            w=24,
        ),
    )
    return d


def quality() -> Dashboard:
    """Golden answers, drift verdicts and check outcomes."""
    d = Dashboard(
        "aione-probe-quality",
        "aione-probe / Quality and drift",
        "Golden-answer pass ratios against their baselines, drift verdicts and check outcomes.",
    )
    checks = "aione_probe_checks_total"
    d.add(
        timeseries(
            "Golden pass ratio vs baseline",
            "Pass ratio in the current drift window and the pinned baseline's (cached verdicts).",
            "percentunit",
            q(m("aione_probe_golden_pass_ratio"), "now {{gateway}} {{model}} {{suite}}"),
            q(
                m("aione_probe_golden_baseline_pass_ratio"),
                "baseline {{gateway}} {{model}} {{suite}}",
            ),
            defaults={"min": 0, "max": 1},
        ),
        table(
            "Drift verdicts",
            "Current drift verdict per suite (cached from the store).",
            "none",
            q(f"{m('aione_probe_drift_verdict')} == 1", instant=True),
            overrides=[column("A", "Current", "none")],
        ),
        timeseries(
            "Drift statistic / threshold",
            "Each run-level CUSUM detector's statistic as a fraction of its alarm threshold: "
            "1 is an alarm (regressed); the metric label says which one.",
            "none",
            q(
                f"{m('aione_probe_drift_statistic')} / {m('aione_probe_drift_threshold')}",
                "{{gateway}} {{model}} {{suite}} {{metric}}",
            ),
            defaults={"min": 0},
        ),
        timeseries(
            "Drift: missed runs",
            "Runs since the drift baseline that gave the detectors nothing (gateway down, "
            "spend cap, no run): gaps neither advance nor reset a detector.",
            "none",
            q(m("aione_probe_drift_missed_runs"), "{{gateway}} {{model}} {{suite}}"),
        ),
        timeseries(
            "Check failure ratio by check",
            "fail / (pass + fail) per check over the window; unscored and missing excluded.",
            "percentunit",
            q(
                ratio(m(checks, 'outcome="fail"'), m(checks, 'outcome=~"pass|fail"'), by="check"),
                "{{check}}",
            ),
        ),
        timeseries(
            "Check outcomes",
            "Check results per window by check and outcome "
            "(pass, fail, partial, unscored, missing).",
            "short",
            q(f"sum by (check, outcome) (increase({m(checks)}[$window]))", "{{check}} {{outcome}}"),
            defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        ),
        timeseries(
            "finish_reason and usage failures",
            "Failure ratio of the finish_reason check and of the usage checks (usage_*, "
            "prompt_tokens_consistent) per target over the window.",
            "percentunit",
            q(
                ratio(
                    m(checks, 'check="finish_reason", outcome="fail"'),
                    m(checks, 'check="finish_reason", outcome=~"pass|fail"'),
                ),
                "finish_reason {{gateway}} {{model}}",
            ),
            q(
                ratio(
                    m(checks, 'check=~"usage_.*|prompt_tokens_consistent", outcome="fail"'),
                    m(checks, 'check=~"usage_.*|prompt_tokens_consistent", outcome=~"pass|fail"'),
                ),
                "usage {{gateway}} {{model}}",
            ),
        ),
        table(
            "Echoed response models",
            "Model names the gateway returned in responses (last few distinct per target).",
            "none",
            q(m("aione_probe_response_model_info"), instant=True),
            w=24,
        ),
    )
    return d


def authenticity() -> Dashboard:
    """Authenticity verdicts, scores and signals."""
    d = Dashboard(
        "aione-probe-authenticity",
        "aione-probe / Authenticity",
        "Is the gateway serving the model it claims? Verdicts, scores and per-signal tests.",
    )
    d.add(
        table(
            "Authenticity verdicts",
            "Current authenticity verdict per target and comparison (reference, baseline, "
            "profile, overall; cached from the store).",
            "none",
            q(f"{m('aione_probe_authenticity_verdict')} == 1", instant=True),
            q(m("aione_probe_authenticity_evidence"), instant=True),
            overrides=[column("A", "Current", "none"), column("B", "Evidence (log10 e)", "none")],
        ),
        timeseries(
            "Accumulated evidence",
            "e-detector statistic per comparison (log10); the verdict is substituted when it "
            "reaches the substituted threshold, suspect above the suspect one.",
            "none",
            q(m("aione_probe_authenticity_evidence"), "{{gateway}} {{model}} {{comparison}}"),
            q(
                m("aione_probe_authenticity_threshold"),
                "{{gateway}} {{model}} {{comparison}} {{level}} threshold",
            ),
        ),
        table(
            "Signals",
            "Evidence each signal family contributed in the window (log10 e-value).",
            "none",
            q(m("aione_probe_authenticity_signal_evidence"), instant=True),
            overrides=[column("A", "log10 e", "none", decimals=2)],
            w=24,
        ),
        timeseries(
            "Substituted share",
            "Estimated share of requests answered by something else, with its interval.",
            "percentunit",
            q(
                m("aione_probe_authenticity_substituted_share"),
                "{{gateway}} {{model}} {{comparison}} {{bound}}",
            ),
            defaults={"min": 0, "max": 1},
        ),
        timeseries(
            "Verdict age",
            "Seconds since each verdict kind was last computed.",
            "s",
            q(
                f"time() - {m('aione_probe_verdict_timestamp_seconds')}",
                "{{kind}} {{gateway}} {{model}}",
            ),
        ),
        table(
            "Cross-protocol and reconciliation verdicts",
            "Current verdicts of the cross-protocol comparison and of the reconciliation with "
            "the gateway's own usage report.",
            "none",
            q(m("aione_probe_cross_protocol_verdict"), instant=True),
            q(m("aione_probe_reconcile_verdict"), instant=True),
            overrides=[column("A", "Cross-protocol", "none"), column("B", "Reconcile", "none")],
        ),
        table(
            "Echoed response models",
            "Model names the gateway returned in responses (last few distinct per target).",
            "none",
            q(m("aione_probe_response_model_info"), instant=True),
        ),
    )
    return d


def cost() -> Dashboard:
    """Spend, tokens and prompt caching."""
    d = Dashboard(
        "aione-probe-cost",
        "aione-probe / Cost and cache",
        "What probing costs (in the price table's currency), tokens by kind and cache behaviour.",
    )
    tokens = "aione_probe_tokens_total"
    checks = "aione_probe_checks_total"
    d.add(
        stat(
            "Cost in the time range",
            "Priced cost of every attempt over the dashboard's time range.",
            "short",
            q(f"sum(increase({m('aione_probe_cost_total')}[$__range]))"),
        ),
        stat(
            "Cost per 1M completion tokens",
            "Cost over completion tokens in the window, times one million.",
            "short",
            q(f"1e6 * sum({inc('aione_probe_cost_total')}) / sum({inc(tokens, COMPLETION)})"),
        ),
        stat(
            "Cached share of prompt tokens",
            "cached_prompt over prompt tokens in the window.",
            "percentunit",
            q(f"sum({inc(tokens, CACHED)}) / sum({inc(tokens, PROMPT)})"),
        ),
        stat(
            "Cache check failures",
            "Cache checks that failed over the last 6h (recording rule); "
            "AIoneProbeCacheDiscountNotHonoured fires above 50 %.",
            "percentunit",
            q(f"max({m('gateway_model:aione_probe_cache_failures:ratio_increase6h')})"),
        ),
    )
    d.add(
        timeseries(
            "Spend today vs daily cap",
            "Spend per gateway in the current UTC day against its cap.",
            "short",
            q(m("aione_probe_spend_today", sel=GW_SEL), "spent {{gateway}}"),
            q(m("aione_probe_spend_daily_cap", sel=GW_SEL), "cap {{gateway}}"),
        ),
        timeseries(
            "Cost per window by target",
            "Priced cost per gateway and model in each window.",
            "short",
            q(
                f"sum by (gateway, model) (increase({m('aione_probe_cost_total')}[$window]))",
                "{{gateway}} {{model}}",
            ),
        ),
        timeseries(
            "Tokens by kind",
            "Tokens reported in usage per window; cached_prompt is part of prompt and "
            "reasoning part of completion.",
            "short",
            q(f"sum by (kind) (increase({m(tokens)}[$window]))", "{{kind}}"),
        ),
        timeseries(
            "Cache check outcomes",
            "Cache checks per window: pass, fail, or missing (the gateway reports no cache "
            "field at all).",
            "short",
            q(
                f"sum by (gateway, model, outcome) ({inc(checks, CACHE)})",
                "{{gateway}} {{model}} {{outcome}}",
            ),
            defaults={"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}}},
        ),
    )
    return d


DASHBOARDS = (overview, latency, quality, authenticity, cost)


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    out = {}
    for build in DASHBOARDS:
        board = build().to_json()
        out[f"{board['uid']}.json"] = json.dumps(board, indent=2, ensure_ascii=False) + "\n"
    return out


def main(out: Path = OUT) -> int:
    """Write every dashboard into `out`; print what changed."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
