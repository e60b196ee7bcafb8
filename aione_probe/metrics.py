"""Prometheus metrics: live instruments per attempt and run, plus cached store-derived gauges.

Two sources feed one registry:

* live instruments (counters, histograms, configuration gauges), updated by the runner and
  the service as attempts and runs finish;
* a `Snapshot` of store-derived state (verdicts, pass ratios, last runs, echoed model names)
  that `ProbeMetrics.refresh` rebuilds on a worker thread and a custom collector serves, so
  a scrape never touches the database.

`ProbeMetrics.share` lets another process serve both: the instruments move to
prometheus_client's multiprocess mmap files and every snapshot change is sent as an `Op`.

`METRICS` describes every metric once; the instruments, the collector's families and the
table in docs/metrics.md (``python -m aione_probe.metrics docs/metrics.md``) are built from it.
Labels are bounded by configuration and small enums: never a URL, prompt, response id or
error text.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aione_probe.errors import FailureKind
from aione_probe.redact import printable
from aione_probe.slo import LATENCY_SLOS, SLOS, Objectives, sli_events
from aione_probe.types import CheckResult, CheckValue, Observation, Usage

PREFIX = "aione_probe_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

RUN_STATUSES = ("ok", "failed", "partial", "skipped")
# A run that produced results counts as a success for staleness: "partial" means some
# probes failed at the gateway, which the request metrics already report.
SUCCESS_STATUSES = frozenset({"ok", "partial"})
AUTHENTICITY_VERDICTS = (
    "authentic",
    "suspect",
    "substituted",
    "insufficient_data",
    "reference_error",
)
DRIFT_VERDICTS = ("ok", "regressed", "insufficient_data")
TOKEN_KINDS = ("prompt", "cached_prompt", "completion", "reasoning", "cache_creation")
ERROR_CLASSES = tuple(k.value for k in FailureKind if k is not FailureKind.ok)
SLO_OUTCOMES = ("good", "bad")
RESPONSE_MODELS_PER_TARGET = 3
MAX_LABEL_CHARS = 128

# Every SLO threshold in grafana/rules is a bucket boundary (TTFT objective: 3 s).
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 20, 30, 60, 120)
E2E_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)
GAP_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
SPEED_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)

_T = ("gateway", "model")
_R = ("gateway", "model", "suite")
# Authenticity verdicts are per comparison (reference:<gw>/<model>, baseline, profile:<id>,
# overall), a label that stays put when a baseline is re-pinned.
_A = ("gateway", "model", "comparison")


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: what the registry serves and what docs/metrics.md lists."""

    name: str
    type: str  # counter | gauge | histogram | enum | info
    unit: str
    labels: tuple[str, ...]
    help: str
    store: bool = False  # served from the refreshed snapshot, not a live instrument
    buckets: tuple[float, ...] = field(default=())


def _spec(
    name: str, type_: str, unit: str, labels: tuple[str, ...], help_: str, **kw: Any
) -> MetricSpec:
    return MetricSpec(PREFIX + name, type_, unit, labels, help_, **kw)


METRICS: tuple[MetricSpec, ...] = (
    # --- requests (one sample per attempt, retries included)
    _spec("requests_total", "counter", "attempts", (*_R, "stream", "outcome"),
          "Request attempts sent to a gateway, by outcome (ok or error); retries count."),
    _spec("errors_total", "counter", "attempts", (*_R, "stream", "class"),
          "Failed request attempts by failure class (aione_probe.errors.FailureKind)."),
    _spec("ttft_seconds", "histogram", "seconds", (*_R, "stream"),
          "Time to first content token (streamed) or to the full body (plain), successful "
          "attempts.", buckets=LATENCY_BUCKETS),
    _spec("time_to_first_chunk_seconds", "histogram", "seconds", _R,
          "Time to the first SSE event of any kind, successful streamed attempts.",
          buckets=LATENCY_BUCKETS),
    _spec("tpot_seconds", "histogram", "seconds", _R,
          "Time per output token after the first: (e2e - ttft) / (completion_tokens - 1).",
          buckets=TPOT_BUCKETS),
    _spec("inter_chunk_gap_seconds", "histogram", "seconds", _R,
          "Every gap between consecutive stream chunks (stalls, buffering, fake streaming).",
          buckets=GAP_BUCKETS),
    _spec("e2e_seconds", "histogram", "seconds", (*_R, "stream"),
          "End-to-end latency of successful attempts.", buckets=E2E_BUCKETS),
    _spec("output_tokens_per_second", "histogram", "tokens/s", _R,
          "Output speed after the first token: (completion_tokens - 1) / (e2e - ttft).",
          buckets=SPEED_BUCKETS),
    _spec("rate_limited_total", "counter", "attempts", _T,
          "Attempts the gateway answered with 429 (rate limited), retried or not."),
    # --- SLIs (one event per request, judged on its final attempt; see aione_probe.slo)
    _spec("slo_events_total", "counter", "requests", (*_T, "slo", "outcome"),
          "SLI events by SLO (availability: final outcome after retries; ttft, e2e: answers "
          "within the threshold, timeouts miss, HTTP errors are no latency event) and "
          "outcome (good, bad)."),
    _spec("slo_target_ratio", "gauge", "ratio", (*_T, "slo"),
          "Configured SLO target: the share of good events (the error budget is 1 - target)."),
    _spec("slo_threshold_seconds", "gauge", "seconds", (*_T, "slo"),
          "Configured latency threshold of the ttft and e2e SLOs."),
    _spec("tokens_total", "counter", "tokens", (*_T, "kind"),
          "Tokens as reported by the gateway's usage. Kinds overlap (cached_prompt is part of "
          "prompt, reasoning part of completion): never sum over kind."),
    _spec("cost_total", "counter", "currency", _T,
          "Cost of every attempt from usage and the configured price table, in the price "
          "table's currency (budget.currency)."),
    # --- checks and runs
    _spec("checks_total", "counter", "checks", (*_R, "check", "outcome"),
          "Check results by check name and outcome (pass, fail, partial, unscored, missing)."),
    _spec("check_findings_total", "counter", "checks", (*_R, "check", "finding"),
          "Findings of the billing checks (cache: hit, discount_unverified, timing_hit...; "
          "usage_completion_plausible: plausible, inflated...), from a fixed set."),
    _spec("suite_runs_total", "counter", "runs", (*_R, "status"),
          "Finished suite runs by status (ok, failed, partial, skipped)."),
    _spec("suite_interval_seconds", "gauge", "seconds", _R,
          "Configured interval between runs of the suite for the target."),
    _spec("spend_today", "gauge", "currency", ("gateway",),
          "Spend on the gateway so far in the current UTC day (budget.currency)."),
    _spec("spend_daily_cap", "gauge", "currency", ("gateway",),
          "Daily spend cap of the gateway (absent when there is none)."),
    _spec("build_info", "info", "", ("version", "python_version"),
          "Version of aione-probe and of Python; always 1."),
    _spec("start_timestamp_seconds", "gauge", "seconds", (),
          "When this aione-probe process started (Unix time)."),
    # --- cached state: refreshed from the store and live runs, served from memory
    _spec("last_run_timestamp_seconds", "gauge", "seconds", _R,
          "When the last run of the suite finished (Unix time; cached).", store=True),
    _spec("last_success_timestamp_seconds", "gauge", "seconds", _R,
          "When the last ok or partial run finished (Unix time; cached).", store=True),
    _spec("last_run_status", "enum", "", (*_R, "status"),
          "Status of the last run: 1 for the current status, 0 for the others (cached).",
          store=True),
    _spec("response_model_info", "info", "", (*_T, "response_model"),
          f"Model names the gateway echoed in responses; the last "
          f"{RESPONSE_MODELS_PER_TARGET} distinct values per target; always 1.", store=True),
    _spec("golden_pass_ratio", "gauge", "ratio", _R,
          "Golden-answer pass rate seen by the drift detectors: mean of the last 24 runs "
          "(cached).", store=True),
    _spec("golden_baseline_pass_ratio", "gauge", "ratio", _R,
          "Golden-answer pass ratio of the pinned baseline (cached verdict).", store=True),
    _spec("drift_verdict", "enum", "", (*_R, "verdict"),
          "Quality drift verdict: 1 for the current verdict, 0 for the others (cached).",
          store=True),
    _spec("drift_statistic", "gauge", "", (*_R, "metric"),
          "CUSUM statistic of each run-level drift detector (metric: pass_rate, "
          "ttft_seconds, e2e_seconds, output_tokens, error_share; cached verdict).",
          store=True),
    _spec("drift_threshold", "gauge", "", (*_R, "metric"),
          "Alarm threshold of each drift detector, in the statistic's units (cached).",
          store=True),
    _spec("drift_alarm", "gauge", "", (*_R, "metric"),
          "1 while the drift detector of the metric is in alarm, else 0 (cached).", store=True),
    _spec("drift_missed_runs", "gauge", "runs", _R,
          "Runs since the drift baseline that gave the detectors nothing (failed, skipped "
          "or never made), the open gap included (cached).", store=True),
    _spec("authenticity_verdict", "enum", "", (*_A, "verdict"),
          "Authenticity verdict per comparison: 1 for the current verdict, 0 for the others "
          "(cached).", store=True),
    _spec("authenticity_evidence", "gauge", "", _A,
          "Accumulated authenticity evidence: the e-detector statistic, log10 (cached).",
          store=True),
    _spec("authenticity_threshold", "gauge", "", (*_A, "level"),
          "e-detector thresholds, log10: level substituted or suspect (cached).", store=True),
    _spec("authenticity_substituted_share", "gauge", "ratio", (*_A, "bound"),
          "Estimated share of substituted requests in the window: bound estimate, low, high "
          "(cached).", store=True),
    _spec("authenticity_signal_evidence", "gauge", "", (*_A, "signal"),
          "Evidence each signal family contributed in the window, log10 e-value (cached).",
          store=True),
    _spec("cross_protocol_verdict", "enum", "", (*_R, "verdict"),
          "Cross-protocol comparison verdict: the current verdict, value 1 (cached).",
          store=True),
    _spec("reconcile_verdict", "enum", "", (*_T, "verdict"),
          "Reconciliation with the gateway's own usage report: the current verdict, value 1 "
          "(cached).", store=True),
    _spec("verdict_timestamp_seconds", "gauge", "seconds", (*_T, "kind"),
          "When the latest verdict of each kind was computed for the target (Unix time; "
          "cached).", store=True),
    _spec("last_refresh_timestamp_seconds", "gauge", "seconds", (),
          "When the cached store-derived metrics were last refreshed (Unix time).", store=True),
)  # fmt: skip

_BY_NAME = {s.name: s for s in METRICS}

Labels = tuple[str, ...]
Samples = dict[str, dict[Labels, float]]


Op = tuple[str, tuple[Any, ...]]
"""One change to a `Snapshot`: an operation name and its arguments (picklable)."""
Sink = Callable[[Op], None]


# Histograms of streamed attempts only, labelled (gateway, model, suite).
STREAM_HISTOGRAMS = (
    "time_to_first_chunk_seconds",
    "tpot_seconds",
    "output_tokens_per_second",
    "inter_chunk_gap_seconds",
)


@dataclass(frozen=True)
class _Job:
    """A declared (gateway, model, suite) job and the label values it can produce."""

    gateway: str
    model: str
    suite: str
    streams: tuple[bool, ...]
    checks: tuple[str, ...]


@dataclass
class _RunState:
    status: str
    at: float
    success_at: float | None = None


class Snapshot:
    """State behind the cached families: last runs, echoed model names, verdicts.

    Every change is an `Op` applied with `apply`, so a server in another process keeps an
    identical copy by applying the same operations, sent to it as they happen.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[Labels, _RunState] = {}
        self._response_models: dict[Labels, OrderedDict[str, None]] = {}
        self._verdicts: Samples = {}
        self._refreshed_at: float | None = None

    def apply(self, op: Op) -> bool:
        """Apply one operation; False when it changed nothing.

        Operations: ``run`` (labels, status, at) from a finished run, ``model`` (target,
        name) for an echoed model name, ``load`` (verdicts, runs, at) from a refresh and
        ``restore`` (a `dump`).

        Raises:
            ValueError: an unknown operation.
        """
        name, args = op
        with self._lock:
            if name == "run":
                self._merge_run(*args, force=True)
            elif name == "model":
                return self._remember_model(*args)
            elif name == "load":
                verdicts, runs, self._refreshed_at = args
                self._verdicts = verdicts
                for key, status, at in runs:
                    self._merge_run(key, status, at, force=False)
            elif name == "restore":
                runs, models, self._verdicts, self._refreshed_at = args
                self._runs = {k: _RunState(*v) for k, v in runs.items()}
                self._response_models = {k: OrderedDict.fromkeys(v) for k, v in models.items()}
            else:
                raise ValueError(f"unknown snapshot operation {name!r}")
        return True

    def dump(self) -> Op:
        """The ``restore`` operation that copies this state."""
        with self._lock:
            runs = {k: (v.status, v.at, v.success_at) for k, v in self._runs.items()}
            models = {k: list(v) for k, v in self._response_models.items()}
            return ("restore", (runs, models, self._verdicts, self._refreshed_at))

    def samples(self) -> Samples:
        """Every cached family's samples, copied under the lock."""
        with self._lock:
            out: Samples = {name: dict(samples) for name, samples in self._verdicts.items()}
            runs = {k: _RunState(v.status, v.at, v.success_at) for k, v in self._runs.items()}
            models = {k: list(v) for k, v in self._response_models.items()}
            refreshed = self._refreshed_at
        last_run = out.setdefault(PREFIX + "last_run_timestamp_seconds", {})
        last_ok = out.setdefault(PREFIX + "last_success_timestamp_seconds", {})
        status = out.setdefault(PREFIX + "last_run_status", {})
        for key, state in runs.items():
            last_run[key] = state.at
            if state.success_at is not None:
                last_ok[key] = state.success_at
            for s in RUN_STATUSES:
                status[(*key, s)] = 1.0 if s == state.status else 0.0
        info = out.setdefault(PREFIX + "response_model_info", {})
        for (g, m), names in models.items():
            for name in names:
                info[(g, m, name)] = 1.0
        if refreshed is not None:
            out[PREFIX + "last_refresh_timestamp_seconds"] = {(): refreshed}
        return out

    def _merge_run(self, key: Labels, status: str, at: float, *, force: bool) -> None:
        state = self._runs.get(key)
        if state is None:
            state = self._runs[key] = _RunState(status, at)
        elif force or at >= state.at:
            state.status, state.at = status, at
        if status in SUCCESS_STATUSES and (state.success_at is None or at > state.success_at):
            state.success_at = at

    def _remember_model(self, target: Labels, value: str) -> bool:
        seen = self._response_models.setdefault(target, OrderedDict())
        if next(reversed(seen), None) == value:
            return False
        seen[value] = None
        seen.move_to_end(value)
        while len(seen) > RESPONSE_MODELS_PER_TARGET:
            seen.popitem(last=False)
        return True


class ProbeMetrics:
    """Every aione-probe instrument on one registry.

    Example:
        >>> m = ProbeMetrics()
        >>> m.set_spend("aione", 1.5, 10.0)
        >>> m.registry.get_sample_value("aione_probe_spend_today", {"gateway": "aione"})
        1.5
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.snapshot = Snapshot()
        self._sink: Sink | None = None
        self._capped: set[str] = set()
        self._build: Labels | None = None
        self.location: str | None = None
        """Fleet mode: this instance's location (store-derived run gauges are per location)."""
        self._objectives: dict[Labels, Objectives] = {}
        self._declared: list[_Job] = []
        self._live = _instruments(self.registry)
        self.registry.register(SnapshotCollector(self.snapshot))
        self._live[PREFIX + "start_timestamp_seconds"].set(time.time())

    # ----------------------------------------------------------------- serving elsewhere
    def share(self, directory: Path, sink: Sink) -> None:
        """Let another process serve these metrics (see `server.MetricsProcess`).

        The live instruments keep their values in mmap files in `directory`, and every change
        to the cached state goes to `sink`, starting with a copy of the current state.
        Process-wide: prometheus_client has one value store per process, so every instrument
        created from now on, by any `ProbeMetrics`, writes to `directory` until `unshare`.
        The configuration gauges set so far are carried over. Series cannot be removed from
        the files: a version or spend cap changed after sharing would leave its old series
        (neither changes while the service runs).

        Raises:
            RuntimeError: attempts or runs were recorded already (they are not carried over).
        """
        old = self._live
        if any(_has_counts(old[s.name]) for s in METRICS if s.type in ("counter", "histogram")):
            raise RuntimeError("share the metrics before any attempt or run is recorded")
        os.environ[MULTIPROC_ENV] = str(directory)
        values.ValueClass = values.MultiProcessValue()
        for instrument in old.values():
            self.registry.unregister(instrument)
        self._live = _instruments(self.registry)
        for name, instrument in old.items():
            if _BY_NAME[name].type in ("gauge", "info"):
                for family in instrument.collect():
                    for s in family.samples:
                        gauge = self._live[name]
                        (gauge.labels(**s.labels) if s.labels else gauge).set(s.value)
        for job in self._declared:
            self._initialise(job)
        self._sink = sink
        sink(self.snapshot.dump())

    def unshare(self) -> None:
        """Stop sending changes; instruments created from now on keep values in memory again."""
        self._sink = None
        values.ValueClass = values.MutexValue
        os.environ.pop(MULTIPROC_ENV, None)

    def _update(self, op: Op) -> None:
        if self.snapshot.apply(op) and self._sink is not None:
            self._sink(op)

    # ----------------------------------------------------------------- configuration
    def set_build_info(self, version: str) -> None:
        """Export the running version (build_info = 1)."""
        labels = (version, platform.python_version())
        info = self._live[PREFIX + "build_info"]
        if self._build not in (None, labels):
            info.remove(*self._build)
        self._build = labels
        info.labels(*labels).set(1)

    def set_suite_config(self, gateway: str, model: str, suite: str, interval_s: float) -> None:
        """Export the configured interval of a scheduled (gateway, model, suite) job."""
        self._live[PREFIX + "suite_interval_seconds"].labels(gateway, model, suite).set(interval_s)

    def declare_job(
        self,
        gateway: str,
        model: str,
        suite: str,
        *,
        streams: Iterable[bool],
        checks: Iterable[str],
        objectives: Objectives,
    ) -> None:
        """Declare a scheduled job: export its target's SLOs and create, at zero, every
        counter and histogram series the job can produce.

        client_python's documented practice: a series that first appears with a value
        above zero hides that increase from ``rate()`` and ``increase()``, and a missing
        numerator drops a target from a ratio. Label sets come from the configuration
        (stream modes and check names of the suite; every outcome, failure class, token
        kind, run status and SLO), so they stay bounded.
        """
        job = _Job(gateway, model, suite, tuple(sorted(set(streams))), tuple(sorted(set(checks))))
        self._declared.append(job)
        self._objectives[(gateway, model)] = objectives
        targets = self._live[PREFIX + "slo_target_ratio"]
        thresholds = self._live[PREFIX + "slo_threshold_seconds"]
        for slo in SLOS:
            targets.labels(gateway, model, slo).set(objectives.target(slo))
        for slo in LATENCY_SLOS:
            thresholds.labels(gateway, model, slo).set(objectives.threshold_s(slo))
        self._initialise(job)

    def _initialise(self, job: _Job) -> None:
        live = self._live
        g, m, suite = job.gateway, job.model, job.suite
        streams = ["true" if s else "false" for s in job.streams]
        for stream in streams:
            for outcome in ("ok", "error"):
                live[PREFIX + "requests_total"].labels(g, m, suite, stream, outcome)
            for cls in ERROR_CLASSES:
                live[PREFIX + "errors_total"].labels(g, m, suite, stream, cls)
            live[PREFIX + "ttft_seconds"].labels(g, m, suite, stream)
            live[PREFIX + "e2e_seconds"].labels(g, m, suite, stream)
        if True in job.streams:
            for name in STREAM_HISTOGRAMS:
                live[PREFIX + name].labels(g, m, suite)
        for check in job.checks:
            for value in CheckValue:
                live[PREFIX + "checks_total"].labels(g, m, suite, _bounded(check), value.value)
        for status in RUN_STATUSES:
            live[PREFIX + "suite_runs_total"].labels(g, m, suite, status)
        for kind in TOKEN_KINDS:
            live[PREFIX + "tokens_total"].labels(g, m, kind)
        live[PREFIX + "cost_total"].labels(g, m)
        live[PREFIX + "rate_limited_total"].labels(g, m)
        for slo in SLOS:
            for outcome in SLO_OUTCOMES:
                live[PREFIX + "slo_events_total"].labels(g, m, slo, outcome)

    def set_spend(self, gateway: str, spent_today: float, cap: float | None) -> None:
        """Export today's spend on a gateway and its daily cap (None removes the cap series)."""
        self._live[PREFIX + "spend_today"].labels(gateway).set(spent_today)
        caps = self._live[PREFIX + "spend_daily_cap"]
        if cap is not None:
            self._capped.add(gateway)
            caps.labels(gateway).set(cap)
        elif gateway in self._capped:
            self._capped.discard(gateway)
            caps.remove(gateway)

    # ----------------------------------------------------------------- live updates
    def observe(self, obs: Observation, *, suite: str, cost: float | None) -> None:
        """Record one attempt: outcome, timings, usage, cost and the echoed model name.

        Timings are recorded for successful attempts only; values the gateway could have
        made nonsensical (negative or non-finite tokens, costs, durations) are ignored, so
        a dishonest gateway can never make the metrics raise.
        """
        g, m = obs.gateway, obs.model
        stream = "true" if obs.stream else "false"
        live = self._live
        live[PREFIX + "requests_total"].labels(
            g, m, suite, stream, "ok" if obs.ok else "error"
        ).inc()
        if obs.ok:
            self._observe_timings(obs, suite, stream)
            if obs.response_model:
                self._update(("model", ((g, m), _bounded(obs.response_model))))
        else:
            live[PREFIX + "errors_total"].labels(g, m, suite, stream, obs.failure.value).inc()
            if obs.failure is FailureKind.rate_limited:
                live[PREFIX + "rate_limited_total"].labels(g, m).inc()
        for kind, value in _token_counts(obs.usage):
            if _valid(value):
                live[PREFIX + "tokens_total"].labels(g, m, kind).inc(value)
        if cost is not None and _valid(cost):
            live[PREFIX + "cost_total"].labels(g, m).inc(cost)

    def observe_request(self, final: Observation) -> None:
        """Count one request's SLI events from its final attempt (after retries).

        Judged against the objectives `declare_job` set for the target (defaults if none).
        """
        objectives = self._objectives.get((final.gateway, final.model)) or Objectives()
        events = self._live[PREFIX + "slo_events_total"]
        for slo, good in sli_events(final, objectives):
            events.labels(final.gateway, final.model, slo, "good" if good else "bad").inc()

    def observe_checks(
        self, gateway: str, model: str, suite: str, results: list[CheckResult]
    ) -> None:
        """Count check results by check name and outcome."""
        checks = self._live[PREFIX + "checks_total"]
        findings = self._live[PREFIX + "check_findings_total"]
        for r in results:
            outcome = CheckValue(r.value).value
            checks.labels(gateway, model, suite, _bounded(r.name), outcome).inc()
            finding = r.metadata.get("outcome")
            if finding in FINDINGS.get(r.name, ()):
                findings.labels(gateway, model, suite, r.name, finding).inc()

    def run_finished(self, gateway: str, model: str, suite: str, status: str, at: datetime) -> None:
        """Count a finished run and update its last-run (and last-success) timestamp.

        Raises:
            ValueError: `status` is not one of ok, failed, partial, skipped.
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}; expected one of {RUN_STATUSES}")
        self._live[PREFIX + "suite_runs_total"].labels(gateway, model, suite, status).inc()
        self._update(("run", ((gateway, model, suite), status, _unix(at))))

    # ----------------------------------------------------------------- store snapshot
    def refresh(self, store: Any) -> None:
        """Rebuild the store-derived gauges from `store` (call from a worker thread).

        `store` needs ``latest_verdicts(kind=None)`` and ``last_runs(location=)``. The new
        snapshot replaces the old one in one step; scrapes only ever read memory. In fleet
        mode (`location` set) last runs and drift verdicts are this location's: the
        exposition labels them so.
        """
        # Drift is judged per location: an instance exports its own location's verdicts
        # (a single instance those without a location); other kinds span locations.
        verdicts = _verdict_samples(
            v
            for v in store.latest_verdicts()
            if v.kind != "drift" or getattr(v, "location", None) == self.location
        )
        runs = []
        last = store.last_runs(location=self.location) if self.location else store.last_runs()
        for row in last:
            when = row.finished_at or row.started_at
            if row.status in RUN_STATUSES and when is not None:
                runs.append(((row.gateway, row.model, row.suite or ""), row.status, _unix(when)))
        self._update(("load", (verdicts, runs, time.time())))

    def _observe_timings(self, obs: Observation, suite: str, stream: str) -> None:
        g, m = obs.gateway, obs.model
        live = self._live
        pairs: list[tuple[str, Labels, float | None]] = [
            ("ttft_seconds", (g, m, suite, stream), obs.ttft_s),
            ("e2e_seconds", (g, m, suite, stream), obs.e2e_s),
        ]
        if obs.stream:
            pairs += [
                ("time_to_first_chunk_seconds", (g, m, suite), obs.first_chunk_s),
                ("tpot_seconds", (g, m, suite), obs.tpot_s),
                ("output_tokens_per_second", (g, m, suite), obs.output_tokens_per_s),
            ]
            gaps = live[PREFIX + "inter_chunk_gap_seconds"].labels(g, m, suite)
            for gap in obs.gaps_s:
                if _valid(gap):
                    gaps.observe(gap)
        for name, labels, value in pairs:
            if value is not None and _valid(value):
                live[PREFIX + name].labels(*labels).observe(value)


class SnapshotCollector(Collector):
    """Serves the cached families of a `Snapshot`; builds fresh families on every scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for spec in METRICS:
            if spec.store:
                yield GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        samples = self._snapshot.samples()
        for spec in METRICS:
            if spec.store:
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
                for labels, value in sorted(samples.get(spec.name, {}).items()):
                    family.add_metric(list(labels), value)
                yield family


# --------------------------------------------------------------------- helpers
def _instruments(registry: CollectorRegistry) -> dict[str, Any]:
    return {s.name: _instrument(s, registry) for s in METRICS if not s.store}


def _instrument(spec: MetricSpec, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
    if spec.type == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.type == "histogram":
        return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)
    # One process writes each gauge; "mostrecent" serves its last value without a pid label.
    return Gauge(
        spec.name, spec.help, spec.labels, registry=registry, multiprocess_mode="mostrecent"
    )


def _has_counts(instrument: Counter | Gauge | Histogram) -> bool:
    """Whether any sample is non-zero (series declared at zero do not count)."""
    return any(s.value for family in instrument.collect() for s in family.samples)


def _token_counts(usage: Usage) -> list[tuple[str, int | None]]:
    return [
        ("prompt", usage.prompt_tokens),
        ("cached_prompt", usage.cached_tokens),
        ("completion", usage.completion_tokens),
        ("reasoning", usage.reasoning_tokens),
        ("cache_creation", usage.cache_creation_tokens),
    ]


def _valid(value: float | int | None) -> bool:
    number = _number(value)
    return number is not None and number >= 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _log10(natural_log: Any) -> float | None:
    """A natural-log evidence value in log10 units (None when absent or infinite)."""
    value = _number(natural_log)
    return value / math.log(10) if value is not None else None


#: Checks whose ``metadata.outcome`` is exported, and the values it may take (a label).
FINDINGS: dict[str, frozenset[str]] = {
    "cache": frozenset(
        {"hit", "partial_hit", "no_discount", "discount_unverified", "miss", "no_cache_field",
         "timing_hit", "unscored"}
    ),
    "cache_claims": frozenset({"hit", "discount_unverified", "untested"}),
    "usage_completion_plausible": frozenset(
        {"plausible", "inflated", "deflated", "unmeasured", "unscored"}
    ),
}  # fmt: skip


def _bounded(value: str) -> str:
    # Label values may come from a gateway (echoed model names): no secrets, one line.
    return printable(value)[:MAX_LABEL_CHARS]


def _unix(at: datetime) -> float:
    """Unix time of `at`; naive datetimes (as SQLite returns them) are UTC."""
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def _verdict_samples(rows: Iterable[Any]) -> Samples:
    """Gauge samples for every verdict kind from the store's latest verdict rows."""
    out: Samples = {}

    def put(name: str, labels: Labels, value: float | None) -> None:
        if value is not None:
            out.setdefault(PREFIX + name, {})[labels] = value

    def enum(name: str, labels: Labels, current: str, states: tuple[str, ...]) -> None:
        for state in (*states, *([] if current in states else [current])):
            put(name, (*labels, state), 1.0 if state == current else 0.0)

    for row in rows:
        key: Labels = (row.gateway, row.model, row.suite or "")
        target: Labels = (row.gateway, row.model)
        verdict = _bounded(row.verdict)
        details = row.details if isinstance(row.details, dict) else {}
        created = getattr(row, "created_at", None)
        if isinstance(created, datetime):
            stamps = out.setdefault(PREFIX + "verdict_timestamp_seconds", {})
            when = (*target, row.kind)
            stamps[when] = max(stamps.get(when, 0.0), _unix(created))
        if row.kind == "authenticity":
            comparison = getattr(row, "comparison", None) or "overall"
            akey: Labels = (row.gateway, row.model, _bounded(comparison))
            enum("authenticity_verdict", akey, verdict, AUTHENTICITY_VERDICTS)
            put("authenticity_evidence", akey, _log10(row.score))
            for level, field in (("substituted", "threshold"), ("suspect", "suspect_threshold")):
                value = _number(details.get(field))
                put("authenticity_threshold", (*akey, level),
                    math.log10(value) if value and value > 0 else None)  # fmt: skip
            share = details.get("substitution_share")
            if isinstance(share, dict):
                bounds = (("estimate", "estimate"), ("low", "ci_low"), ("high", "ci_high"))
                for bound, name in bounds:
                    put("authenticity_substituted_share", (*akey, bound), _number(share.get(name)))
            for sig in details.get("signals") or []:
                if isinstance(sig, dict) and "signal" in sig:
                    put("authenticity_signal_evidence", (*akey, _bounded(sig["signal"])),
                        _log10(sig.get("log_e")))  # fmt: skip
        elif row.kind == "drift":
            enum("drift_verdict", key, verdict, DRIFT_VERDICTS)
            for m in details.get("metrics") or []:
                if not isinstance(m, dict) or "metric" not in m:
                    continue
                labels = (*key, _bounded(m["metric"]))
                put("drift_statistic", labels, _number(m.get("statistic")))
                put("drift_threshold", labels, _number(m.get("threshold")))
                put("drift_alarm", labels, 1.0 if m.get("alarm") else 0.0)
            monitor = details.get("monitor") if isinstance(details.get("monitor"), dict) else {}
            gap = details.get("open_gap") if isinstance(details.get("open_gap"), dict) else {}
            missed = _number(monitor.get("missed_runs"))
            if missed is not None:
                put("drift_missed_runs", key, missed + (_number(gap.get("missed_runs")) or 0))
            put("golden_pass_ratio", key, _number(details.get("pass_ratio")))
            put("golden_baseline_pass_ratio", key, _number(details.get("baseline_pass_ratio")))
        elif row.kind == "cross_protocol":
            put("cross_protocol_verdict", (*key, verdict), 1.0)
        elif row.kind == "reconcile":  # per target: a gateway's usage report has no suite
            put("reconcile_verdict", (*target, verdict), 1.0)
    return out


# --------------------------------------------------------------------- documentation
DOC_BEGIN = "<!-- metrics table: generated by `python -m aione_probe.metrics docs/metrics.md` -->"
DOC_END = "<!-- end of metrics table -->"

_TYPE_DOC = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "enum": "gauge (enum: one series per state)",
    "info": "gauge (info, value 1)",
}


def metrics_markdown_table() -> str:
    """The README table of every metric: name, type, unit, labels, meaning."""
    lines = ["| name | type | unit | labels | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in METRICS:
        labels = ", ".join(f"`{label}`" for label in s.labels) or "-"
        buckets = f" Buckets: {', '.join(f'{b:g}' for b in s.buckets)}." if s.buckets else ""
        unit = s.unit or "-"
        lines.append(
            f"| `{s.name}` | {_TYPE_DOC[s.type]} | {unit} | {labels} | {s.help}{buckets} |"
        )
    return "\n".join(lines) + "\n"


def write_metrics_doc(path: Path) -> bool:
    """Replace the generated table between the markers in `path`; True if it changed.

    Raises:
        ValueError: the file lacks the begin/end markers.
    """
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition(DOC_BEGIN + "\n")
    _, sep2, tail = rest.partition(DOC_END)
    if not sep or not sep2:
        raise ValueError(f"{path}: missing the generated-table markers")
    new = head + DOC_BEGIN + "\n" + metrics_markdown_table() + DOC_END + tail
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    if len(sys.argv) > 1:
        write_metrics_doc(Path(sys.argv[1]))
    else:
        sys.stdout.write(metrics_markdown_table())
