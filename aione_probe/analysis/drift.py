"""Quality and latency drift: sequential run-level detection against a pinned baseline.

**The run is the unit.** Each finished run of a suite yields one value per metric
(`RunValues`): the pass rate on its scored probes, the time to first token and
end-to-end latency *normalised per probe* (`normalised_latency`: each answer against its
own probe's baseline median, so probes that are always slower than others cancel out; a
20 % trimmed mean in which a timed-out request counts as slower than every answer instead
of being dropped; a baseline pinned by version 2 keeps the run median), the median
output length, and the share of requests that failed or timed
out. Detectors see runs, never requests, so a loaded gateway that is slow for a whole run,
or a temperature-0 prompt that gives the same answer every hour, is one observation and
not dozens.

**Residuals.** Against the pinned baseline (`DriftBaseline`) each run value becomes a
residual, oriented so that positive is worse:

- pass rate: expected minus observed, where "expected" is the baseline pass rate *of the
  probes this run scored* (paired by probe hash, so a partial run is compared like with
  like, and a changed prompt, which has a new hash, is left out);
- latency: log of the run's latency value minus the baseline's hour-of-day level (UTC, shrunk
  towards the overall level when an hour has few baseline runs) and day-of-week offset
  (shrunk towards 0 by a day of runs): the daily and weekly cycles are part of the
  expectation;
- output length: log median minus the baseline level (longer is worse);
- error share: observed minus the baseline share.

**Detectors.** One CUSUM per (suite, metric) (`aione_probe.analysis.changepoint`), with
reference value half the smallest change worth a page (`DriftConfig.min_change`) and never
below one probe's (one request's) weight, and a threshold calibrated by a stationary block
bootstrap of the baseline's own residuals for a false-alarm budget of
`DriftConfig.false_alarms_per_quarter` per model, split evenly over every detector of the
target (all its suites and metrics). The latency detectors are *whitened*: they feed on
the one-step prediction errors of the residuals (`MetricSpec.whiten`; an AR(1) load seen
through per-run noise), because a gateway's load persists from run to run.

**Missing runs.** A run that produced nothing (gateway down, spend cap, interrupted) or a
schedule slot with no run at all neither advances nor resets a detector: the gap is
recorded (`Gap`) and shown with the verdict.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from aione_probe.analysis.changepoint import (
    Calibration,
    Cusum,
    calibrate,
    fit_predictor,
    hour_levels,
    weekday_offsets,
)
from aione_probe.config import DriftConfig

Scale = Literal["share", "log"]


@dataclass(frozen=True)
class MetricSpec:
    """How one run-level metric is compared.

    Attributes:
        name: metric name (label value of ``aione_probe_drift_*``).
        scale: ``share`` (compared as is) or ``log`` (compared as log, i.e. relative).
        worse_up: whether a larger value is worse.
        seasonal: whether the baseline level depends on the hour of the day and the day
            of the week.
        cap: the most one run adds to a plain detector, as a fraction of its threshold
            (a whitened one: `WHITENED_CAP`).
        whiten: whether the detector feeds on one-step prediction errors (a run-level
            load that persists from run to run; `aione_probe.analysis.changepoint`).
    """

    name: str
    scale: Scale
    worse_up: bool
    seasonal: bool
    cap: float = 0.5
    whiten: bool = False


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("pass_rate", "share", worse_up=False, seasonal=False),
    MetricSpec("ttft_seconds", "log", worse_up=True, seasonal=True, whiten=True),
    MetricSpec("e2e_seconds", "log", worse_up=True, seasonal=True, whiten=True),
    MetricSpec("output_tokens", "log", worse_up=True, seasonal=False),
    # Error bursts (an outage's first and last run) are the SLO alerts' business; the
    # drift detector pages on a rise that lasts at least three runs.
    MetricSpec("error_share", "share", worse_up=True, seasonal=False, cap=1 / 3),
)
METRIC_NAMES = tuple(m.name for m in METRICS)
_SPEC = {m.name: m for m in METRICS}
#: A run where this share of requests failed is *degraded*: it says nothing reliable about
#: latency, length or quality, so only the error-share detector sees it.
DEGRADED_ERROR_SHARE = 0.25
#: A gap is recorded when two usable runs are further apart than this many intervals.
GAP_FACTOR = 1.5
MAX_GAPS = 20
RECENT_RUNS = 24
#: Runs per probe kept for naming the probes behind a pass-rate change.
PROBE_WINDOW = 6
#: A probe is named in the verdict when its pass rate over its last `PROBE_WINDOW` runs
#: (at least two scored answers) is this far below its baseline pass rate (at most
#: `MAX_PROBES_NAMED`, largest deficit first).
PROBE_DEFICIT_NAMED = 0.25
MAX_PROBES_NAMED = 5
QUARTER_S = 90 * 86400.0
#: A quarter of runs every 5 minutes: faster schedules (tests, demos) are calibrated as if
#: they ran every 5 minutes, so the bootstrap stays small.
MAX_HORIZON_RUNS = 90 * 24 * 12
#: The most one run adds to a whitened detector, as a fraction of its threshold: a step
#: pages on its second run (never on one run alone) although the predictor absorbs most
#: of it after the first.
WHITENED_CAP = 0.9
#: Folds of the baseline's cross-validated residuals (a day each for a week of runs).
CV_FOLDS = 7
_LOG_FLOOR = 1e-3
#: Latency metrics estimated per probe (`normalised_latency`).
LATENCY_METRICS = ("ttft_seconds", "e2e_seconds")
#: Share trimmed from each end of a run's per-probe normalised latencies.
LATENCY_TRIM = 0.2
#: Version of a stored `DriftBaseline`; version 2 (no per-probe latency medians) keeps the
#: run-median latency values it was pinned with.
BASELINE_VERSION = 3


def median_counting_timeouts(values: np.ndarray, timed_out: np.ndarray, axis: int = -1) -> Any:
    """Median of `values` along `axis` where timed-out entries count as +inf.

    A request that timed out took at least the timeout: it is slower than every answer,
    so it moves the median up instead of vanishing. NaN entries (failed for another
    reason, no value) are left out; all-NaN gives NaN.
    """
    v = np.where(timed_out, np.inf, values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, quietly
        return np.nanmedian(v, axis=axis)


def trimmed_mean_counting_timeouts(
    values: np.ndarray, timed_out: np.ndarray, cut: float = LATENCY_TRIM
) -> Any:
    """Trimmed mean along the last axis where timed-out entries count as +inf.

    The smallest and largest ``floor(cut * n)`` of the n non-NaN entries are dropped; a
    timeout that survives the trim (more than `cut` of the entries timed out) counts as
    the largest kept answer (winsorised), and a row with no kept answer is +inf. NaN
    entries are left out; a row with none gives NaN.
    """
    v = np.sort(np.where(timed_out, np.inf, values), axis=-1)  # NaN sorts last
    n = (~np.isnan(v)).sum(axis=-1, keepdims=True)
    g = np.floor(cut * n).astype(int)
    idx = np.arange(v.shape[-1])
    kept = (idx >= g) & (idx < n - g)
    finite = kept & np.isfinite(v)
    top = np.max(np.where(finite, v, -np.inf), axis=-1, keepdims=True)
    core = np.where(np.isinf(v), top, v)
    with np.errstate(invalid="ignore"):
        mean = np.where(kept, core, 0.0).sum(axis=-1) / np.maximum(kept.sum(axis=-1), 1)
    out = np.where(finite.any(axis=-1), mean, np.inf)
    return np.where(n[..., 0] > 0, out, np.nan)


def probe_log_medians(runs: Sequence[RunValues]) -> dict[str, dict[str, float]]:
    """Latency metric -> probe id -> median log latency over `runs` (timeouts as +inf);
    probes whose median timed out are left out."""
    out: dict[str, dict[str, float]] = {}
    for metric in LATENCY_METRICS:
        pooled: dict[str, list[float]] = {}
        for run in runs:
            for probe, xs in run.latency.get(metric, {}).items():
                pooled.setdefault(probe, []).extend(xs)
        medians = {p: float(np.median(np.log(np.maximum(xs, _LOG_FLOOR))))
                   for p, xs in pooled.items()}  # fmt: skip
        out[metric] = {p: m for p, m in medians.items() if math.isfinite(m)}
    return out


def normalised_latency(run: RunValues, medians: dict[str, dict[str, float]]) -> RunValues:
    """`run` with its latency values replaced by the per-probe normalised estimate.

    Each answer's log latency minus its probe's baseline median (`probe_log_medians`),
    reduced by `trimmed_mean_counting_timeouts`, and put back on the scale of seconds by
    the median of the probe medians: probes that are slower than others every run cancel
    out, so the run value moves only when the same probes get slower. Probes the
    baseline does not know are left out; a run with none has no latency value (its
    latency detectors skip it, like a run without answers).
    """
    values = dict(run.values)
    for metric in LATENCY_METRICS:
        known = medians.get(metric, {})
        z = [
            math.log(max(x, _LOG_FLOOR)) - known[p] if math.isfinite(x) else math.inf
            for p, xs in run.latency.get(metric, {}).items() if p in known
            for x in xs
        ]  # fmt: skip
        if not z or not known:
            values[metric] = None
            continue
        a = np.array(z)
        t = float(trimmed_mean_counting_timeouts(a, np.isinf(a)))
        values[metric] = math.exp(t + float(np.median(list(known.values()))))
    return replace(run, values=values)


@dataclass
class RunValues:
    """One run reduced to its metric values (see the module docstring).

    Attributes:
        run_id: the stored run.
        started_at: when it started (UTC).
        status: run status; only ``ok`` and ``partial`` runs are fed to detectors.
        reason: why a run produced nothing (for gaps).
        probes: probe hash -> (passed, scored) of this run's final observations.
        probe_names: probe hash -> probe id (for display).
        values: metric -> value in natural units (None when the run has none).
        timeout_share: share of requests that timed out (shown, part of error_share).
        n_requests: final requests of the run.
        latency: latency metric -> probe id -> the run's answers' latencies in seconds
            (+inf: timed out), for `normalised_latency`.
    """

    run_id: int
    started_at: datetime
    status: str = "ok"
    reason: str | None = None
    probes: dict[str, tuple[int, int]] = field(default_factory=dict)
    probe_names: dict[str, str] = field(default_factory=dict)
    values: dict[str, float | None] = field(default_factory=dict)
    timeout_share: float | None = None
    n_requests: int = 0
    latency: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Whether the run observed anything a detector can use."""
        return self.status in ("ok", "partial")


def _transform(spec: MetricSpec, value: Any) -> Any:
    if spec.scale == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.maximum(np.asarray(value, dtype=float), _LOG_FLOOR))
    return np.asarray(value, dtype=float)


@dataclass
class DriftBaseline:
    """What a pinned drift baseline holds: levels, calibrations and its size.

    Attributes:
        runs: usable runs in the baseline.
        span_s: time from its first to its last run.
        interval_s: median spacing of its runs (the schedule as observed).
        last_started: start of its last run (Unix time): detectors resume after it.
        probe_pass: probe hash -> baseline pass rate.
        levels: metric -> expected transformed value, 24 hour-of-day levels or one.
        weekly: metric -> 7 day-of-week offsets (Monday first) added to the level.
        typical: metric -> baseline median in natural units (for display).
        calibration: metric -> bootstrap null of its detector.
        probe_latency: latency metric -> probe id -> baseline median log latency
            (`probe_log_medians`); empty in a version-2 baseline, whose latency run values
            stay the run medians.
    """

    runs: int
    span_s: float
    interval_s: float
    last_started: float = 0.0
    probe_pass: dict[str, float] = field(default_factory=dict)
    levels: dict[str, list[float]] = field(default_factory=dict)
    weekly: dict[str, list[float]] = field(default_factory=dict)
    typical: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Calibration] = field(default_factory=dict)
    probe_latency: dict[str, dict[str, float]] = field(default_factory=dict)

    def rebase(self, run: RunValues) -> RunValues:
        """`run` with the latency values this baseline compares (`normalised_latency`;
        a version-2 baseline: the run medians, unchanged)."""
        return normalised_latency(run, self.probe_latency) if self.probe_latency else run

    @property
    def horizon_runs(self) -> int:
        """Runs in a quarter at the baseline's spacing (at most `MAX_HORIZON_RUNS`)."""
        return max(1, min(MAX_HORIZON_RUNS, round(QUARTER_S / max(self.interval_s, 1.0))))

    def expected(self, metric: str, hours: Any, weekdays: Any = None) -> Any:
        """Expected transformed value of `metric` at UTC hour(s) `hours` (and, for a
        seasonal metric, `weekdays`: Monday = 0)."""
        levels = np.asarray(self.levels[metric])
        out = levels[np.asarray(hours) % len(levels)] if len(levels) > 1 else levels[0]
        offsets = self.weekly.get(metric)
        if offsets and weekdays is not None:
            out = out + np.asarray(offsets)[np.asarray(weekdays) % len(offsets)]
        return out

    def residuals(
        self,
        metric: str,
        values: np.ndarray,
        hours: np.ndarray,
        passed: np.ndarray | None = None,
        scored: np.ndarray | None = None,
        hashes: Sequence[str] = (),
        weekdays: np.ndarray | None = None,
    ) -> np.ndarray:
        """Residuals (positive = worse) of runs; NaN where a run has no value.

        For ``pass_rate`` give `passed` and `scored` (runs × probes, in `hashes` order);
        `values` is then ignored. Probes the baseline does not know are left out.
        `weekdays` (UTC, Monday = 0) select the day-of-week offsets of seasonal metrics.
        """
        if metric == "pass_rate":
            assert passed is not None and scored is not None
            p = np.array([self.probe_pass.get(h, np.nan) for h in hashes], dtype=float)
            known = np.isfinite(p)
            n = (scored * known).sum(axis=-1)
            expected = (scored * np.where(known, p, 0.0)).sum(axis=-1)
            got = (passed * known).sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, (expected - got) / np.maximum(n, 1), np.nan)
        spec = _SPEC[metric]
        r = _transform(spec, values) - self.expected(metric, hours, weekdays)
        return r if spec.worse_up else -r

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored as the baseline's data)."""
        return {
            "version": BASELINE_VERSION if self.probe_latency else 2,
            "runs": self.runs,
            "span_s": self.span_s,
            "interval_s": self.interval_s,
            "last_started": self.last_started,
            "probe_pass": self.probe_pass,
            "levels": self.levels,
            "weekly": self.weekly,
            "typical": self.typical,
            "calibration": {m: c.to_dict() for m, c in self.calibration.items()},
            "probe_latency": self.probe_latency,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftBaseline | None:
        """Inverse of `to_dict`; None for a baseline stored by an older version."""
        if data.get("version") not in (2, BASELINE_VERSION):
            return None
        return cls(
            runs=int(data["runs"]),
            span_s=float(data["span_s"]),
            interval_s=float(data["interval_s"]),
            last_started=float(data.get("last_started", 0.0)),
            probe_pass={k: float(v) for k, v in data["probe_pass"].items()},
            levels={k: [float(x) for x in v] for k, v in data["levels"].items()},
            weekly={k: [float(x) for x in v] for k, v in data.get("weekly", {}).items()},
            typical={k: float(v) for k, v in data["typical"].items()},
            calibration={m: Calibration.from_dict(c) for m, c in data["calibration"].items()},
            probe_latency={
                m: {p: float(x) for p, x in v.items()}
                for m, v in data.get("probe_latency", {}).items()
            }
            if data.get("version") == BASELINE_VERSION
            else {},
        )


def cap_fraction(metric: str, cal: Calibration) -> float:
    """The most one run adds to the detector of `metric`, as a fraction of its threshold
    (a baseline pinned before whitening keeps its plain detector and cap)."""
    return WHITENED_CAP if cal.whitened else _SPEC[metric].cap


def reference_value(metric: str, cfg: DriftConfig, per_run: float) -> float:
    """The CUSUM reference value of `metric`: half its smallest change worth a page.

    For shares it is never below one probe's (one request's) weight ``1 / per_run``: one
    prompt that starts failing, or one request that errors, cannot accumulate evidence.
    """
    change = cfg.min_change[metric]
    if _SPEC[metric].scale == "log":
        return math.log1p(change) / 2.0
    return max(change / 2.0, 1.0 / max(per_run, 1.0))


@dataclass
class RunArrays:
    """Runs as arrays (what `build_baseline` and the benchmark work on).

    Attributes:
        hours: UTC hour of each run's start.
        started: start of each run, seconds (any epoch).
        values: metric -> value per run in natural units (NaN = none).
        passed: runs × probes passes; scored: runs × probes scored answers.
        hashes: probe hash of each column.
        requests: final requests per run.
    """

    hours: np.ndarray
    started: np.ndarray
    values: dict[str, np.ndarray]
    passed: np.ndarray
    scored: np.ndarray
    hashes: list[str]
    requests: np.ndarray

    @classmethod
    def of(cls, runs: Sequence[RunValues]) -> RunArrays:
        """Arrays of `runs` (usable runs only are expected)."""
        hashes = sorted({h for r in runs for h in r.probes})
        col = {h: i for i, h in enumerate(hashes)}
        passed = np.zeros((len(runs), len(hashes)))
        scored = np.zeros((len(runs), len(hashes)))
        for i, r in enumerate(runs):
            for h, (p, n) in r.probes.items():
                passed[i, col[h]], scored[i, col[h]] = p, n
        values = {
            m: np.array(
                [np.nan if r.values.get(m) is None else r.values[m] for r in runs], dtype=float
            )
            for m in METRIC_NAMES
            if m != "pass_rate"
        }
        return cls(
            hours=np.array([r.started_at.hour for r in runs], dtype=int),
            started=np.array([r.started_at.timestamp() for r in runs], dtype=float),
            values=values,
            passed=passed,
            scored=scored,
            hashes=hashes,
            requests=np.array([r.n_requests for r in runs], dtype=float),
        )

    @property
    def weekdays(self) -> np.ndarray:
        """UTC day of the week of each run's start (Monday = 0; `started` in Unix time)."""
        return ((self.started // 86400).astype(np.int64) + 3) % 7  # 1970-01-01: Thursday

    def take(self, mask: np.ndarray) -> RunArrays:
        """The runs where `mask` is true."""
        return RunArrays(
            hours=self.hours[mask],
            started=self.started[mask],
            values={k: v[mask] for k, v in self.values.items()},
            passed=self.passed[mask],
            scored=self.scored[mask],
            hashes=self.hashes,
            requests=self.requests[mask],
        )

    def residuals(self, baseline: DriftBaseline, metric: str) -> np.ndarray:
        """Residuals of every run for `metric` against `baseline` (NaN = not fed).

        Degraded runs (`DEGRADED_ERROR_SHARE`) feed only the error-share detector.
        """
        r = baseline.residuals(
            metric,
            self.values.get(metric, np.full(len(self.hours), np.nan)),
            self.hours,
            self.passed,
            self.scored,
            self.hashes,
            self.weekdays,
        )
        if metric != "error_share":
            errors = self.values.get("error_share", np.zeros(len(self.hours)))
            r = np.where(errors >= DEGRADED_ERROR_SHARE, np.nan, r)
        return r


def _fit(runs: RunArrays) -> DriftBaseline:
    """Levels, per-probe pass rates and typical values of `runs` (no calibration)."""
    gaps = np.diff(np.sort(runs.started))
    tot_scored = runs.scored.sum(axis=0)
    base = DriftBaseline(
        runs=len(runs.hours),
        span_s=float(runs.started.max() - runs.started.min()),
        interval_s=max(float(np.median(gaps)) if len(gaps) else 3600.0, 1.0),
        last_started=float(runs.started.max()),
        probe_pass={
            h: float(runs.passed[:, i].sum() / tot_scored[i])
            for i, h in enumerate(runs.hashes)
            if tot_scored[i] > 0
        },
    )
    if runs.scored.sum():
        base.typical["pass_rate"] = float(runs.passed.sum() / runs.scored.sum())
    errors = runs.values.get("error_share", np.zeros(len(runs.hours)))
    for spec in METRICS:
        if spec.name == "pass_rate":
            continue
        x = runs.values[spec.name]
        ok = np.isfinite(x) if spec.scale == "share" else ~np.isnan(x)
        if spec.name != "error_share":
            ok &= ~(errors >= DEGRADED_ERROR_SHARE)
        if ok.sum() < 2:
            continue
        t = _transform(spec, x[ok])
        # A run where over half the requests timed out has an infinite median: it counts
        # as the slowest run seen rather than dragging the level to infinity.
        finite = np.isfinite(t)
        if not finite.any():
            continue
        t = np.where(finite, t, t[finite].max())
        if spec.seasonal:
            levels = hour_levels(t, runs.hours[ok])
            base.levels[spec.name] = [float(v) for v in levels]
            weekly = weekday_offsets(t - levels[runs.hours[ok]], runs.weekdays[ok])
            base.weekly[spec.name] = [float(v) for v in weekly]
        else:
            base.levels[spec.name] = [float(np.mean(t))]
        base.typical[spec.name] = float(np.median(x[ok]))
    return base


def cross_validated_residuals(runs: RunArrays, metric: str, folds: int = CV_FOLDS) -> np.ndarray:
    """Residuals of each baseline run against levels fitted *without* its fold.

    The baseline is cut into `folds` contiguous stretches (a day each for a week of hourly
    runs). In-sample residuals would be too small (the levels were fitted to them, by up
    to 24 hour-of-day parameters); these carry the estimation error a pinned baseline
    has for runs it has never seen, which is what the threshold is calibrated against.
    """
    n = len(runs.hours)
    out = np.full(n, np.nan)
    cut = np.linspace(0, n, min(folds, n) + 1).astype(int)
    for lo, hi in itertools.pairwise(cut):
        inside = np.zeros(n, dtype=bool)
        inside[lo:hi] = True
        if inside.all() or not inside.any():
            continue
        fitted = _fit(runs.take(~inside))
        if metric != "pass_rate" and metric not in fitted.levels:
            continue
        out[lo:hi] = runs.take(inside).residuals(fitted, metric)
    return out


def build_baseline(
    runs: RunArrays, cfg: DriftConfig, rng: np.random.Generator, reps: int = 500
) -> DriftBaseline:
    """Pin a baseline from usable runs (in start order): levels and calibrated detectors.

    Raises:
        ValueError: fewer than two runs.
    """
    if len(runs.hours) < 2:
        raise ValueError("a drift baseline needs at least two runs")
    base = _fit(runs)
    scored_per_run = float(np.median(runs.scored.sum(axis=1))) if runs.hashes else 0.0
    per_run = {"pass_rate": scored_per_run, "error_share": float(np.median(runs.requests))}
    for spec in METRICS:
        if spec.name == "pass_rate" and not base.probe_pass:
            continue
        if spec.name != "pass_rate" and spec.name not in base.levels:
            continue
        r = cross_validated_residuals(runs, spec.name)
        if np.isfinite(r).sum() < 2:
            base.levels.pop(spec.name, None)
            continue
        k = reference_value(spec.name, cfg, per_run.get(spec.name, 1.0))
        phi, theta = fit_predictor(r) if spec.whiten else (None, 0.0)
        base.calibration[spec.name] = calibrate(
            r, k=k, horizon_runs=base.horizon_runs, rng=rng, reps=reps, phi=phi, theta=theta
        )
    return base


@dataclass
class Gap:
    """Runs that were due but gave a detector nothing.

    Attributes:
        start: last usable run before the gap (ISO time), or None.
        end: first usable run after it (ISO time), or None while the gap is open.
        missed_runs: schedule slots without a usable run.
        reasons: why (run failure reasons, "no run" for slots with no run at all).
    """

    start: str | None
    end: str | None = None
    missed_runs: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class Monitor:
    """The detectors of one (target, suite) and what they have seen since the baseline.

    Stored in each drift verdict's details and resumed by the next analysis pass; a
    re-pinned baseline (another `baseline_id`) starts a fresh monitor.
    """

    baseline_id: int
    detectors: dict[str, Cusum] = field(default_factory=dict)
    last_run_id: int | None = None
    last_at: str | None = None
    gaps: list[Gap] = field(default_factory=list)
    missed_runs: int = 0
    degraded_runs: int = 0
    recent_pass: list[float] = field(default_factory=list)
    last: dict[str, dict[str, float | None]] = field(default_factory=dict)
    probe_recent: dict[str, list[list[int]]] = field(default_factory=dict)
    probe_names: dict[str, str] = field(default_factory=dict)
    _open: Gap | None = None

    def thresholds(self, baseline: DriftBaseline, per_detector: float) -> None:
        """(Re)set every detector's threshold for a per-detector budget per quarter."""
        for metric, cal in baseline.calibration.items():
            h = cal.threshold(per_detector)
            cap = cap_fraction(metric, cal) * h
            clip = cal.clip if math.isfinite(cal.clip) else None
            det = self.detectors.get(metric)
            if det is None:
                det = self.detectors[metric] = Cusum(k=cal.k, h=h, cap=cap)
            det.k, det.h, det.cap, det.clip = cal.k, h, cap, clip
            det.phi, det.theta = cal.phi, cal.theta

    def _gap(self) -> Gap:
        if self._open is None:
            self._open = Gap(start=self.last_at)
        return self._open

    def observe(self, run: RunValues, baseline: DriftBaseline) -> None:
        """Feed one run (in start order). A run that observed nothing is a gap entry."""
        at = run.started_at.isoformat()
        if not run.usable:
            gap = self._gap()
            gap.missed_runs += 1
            reason = (run.reason or run.status)[:80]
            gap.reasons[reason] = gap.reasons.get(reason, 0) + 1
            self.missed_runs += 1
            return
        skipped = 0
        if self.last_at is not None:
            elapsed = (run.started_at - datetime.fromisoformat(self.last_at)).total_seconds()
            slots = round(elapsed / baseline.interval_s) - 1
            skipped = max(slots, 0)
            counted = self._open.missed_runs if self._open else 0
            if elapsed > GAP_FACTOR * baseline.interval_s and slots > counted:
                gap = self._gap()
                gap.reasons["no run"] = gap.reasons.get("no run", 0) + slots - counted
                gap.missed_runs = slots
                self.missed_runs += slots - counted
        if self._open is not None:
            self._open.end = at
            self.gaps = [*self.gaps, self._open][-MAX_GAPS:]
            self._open = None
        run = baseline.rebase(run)
        arrays = RunArrays.of([run])
        hour, weekday = run.started_at.hour, int(arrays.weekdays[0])
        errors = run.values.get("error_share")
        degraded = errors is not None and errors >= DEGRADED_ERROR_SHARE
        if degraded:
            self.degraded_runs += 1  # only the error-share detector sees it
        for metric, det in self.detectors.items():
            r = float(arrays.residuals(baseline, metric)[0])
            value = run.values.get(metric)
            self.last[metric] = {"value": value, "residual": r if math.isfinite(r) else None}
            det.skip(skipped)  # slots without a usable run: the predictor moves on
            if math.isnan(r):
                det.skip()
            else:
                det.update(r, at)
            self.last[metric]["expected"] = _natural(baseline, metric, hour, weekday)
        pr = run.values.get("pass_rate")
        if pr is not None:
            self.recent_pass = [*self.recent_pass, pr][-RECENT_RUNS:]
        if not degraded:
            self._track_probes(run, baseline)
        self.last_run_id, self.last_at = run.run_id, at

    def _track_probes(self, run: RunValues, baseline: DriftBaseline) -> None:
        """Each scored probe's (passed, scored) over its last `PROBE_WINDOW` runs, so a
        verdict can name the prompts behind a pass-rate change."""
        for h, (passed, scored) in run.probes.items():
            if h not in baseline.probe_pass or scored <= 0:
                continue
            self.probe_recent[h] = [*self.probe_recent.get(h, []), [passed, scored]][-PROBE_WINDOW:]
            if h in run.probe_names:
                self.probe_names[h] = run.probe_names[h]

    def open_gap(self, now: datetime, baseline: DriftBaseline) -> Gap | None:
        """The gap still open at `now` (failed runs, or no run for over 1.5 intervals)."""
        gap = Gap(**self._open.__dict__) if self._open else None
        if self.last_at is not None:
            elapsed = (now - datetime.fromisoformat(self.last_at)).total_seconds()
            slots = int(elapsed // baseline.interval_s)
            if elapsed > GAP_FACTOR * baseline.interval_s:
                gap = gap or Gap(start=self.last_at)
                extra = slots - gap.missed_runs
                if extra > 0:
                    gap.reasons["no run"] = gap.reasons.get("no run", 0) + extra
                    gap.missed_runs = slots
        return gap

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the verdict's details as ``monitor``)."""
        return {
            "baseline_id": self.baseline_id,
            "detectors": {m: d.to_dict() for m, d in self.detectors.items()},
            "last_run_id": self.last_run_id,
            "last_at": self.last_at,
            "gaps": [g.__dict__ for g in self.gaps],
            "open": None if self._open is None else self._open.__dict__,
            "missed_runs": self.missed_runs,
            "degraded_runs": self.degraded_runs,
            "recent_pass": self.recent_pass,
            "last": self.last,
            "probe_recent": self.probe_recent,
            "probe_names": self.probe_names,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Monitor:
        """Inverse of `to_dict`."""
        return cls(
            baseline_id=int(data["baseline_id"]),
            detectors={m: Cusum.from_dict(d) for m, d in data.get("detectors", {}).items()},
            last_run_id=data.get("last_run_id"),
            last_at=data.get("last_at"),
            gaps=[Gap(**g) for g in data.get("gaps", [])],
            missed_runs=int(data.get("missed_runs", 0)),
            degraded_runs=int(data.get("degraded_runs", 0)),
            recent_pass=[float(x) for x in data.get("recent_pass", [])],
            last=data.get("last", {}),
            probe_recent={
                h: [[int(p), int(s)] for p, s in runs]
                for h, runs in data.get("probe_recent", {}).items()
            },
            probe_names={h: str(n) for h, n in data.get("probe_names", {}).items()},
            _open=Gap(**data["open"]) if data.get("open") else None,
        )


def _natural(baseline: DriftBaseline, metric: str, hour: int, weekday: int) -> float | None:
    """The baseline's expected value of `metric` at `hour` on `weekday`, in natural units."""
    if metric == "pass_rate":
        return baseline.typical.get("pass_rate")
    e = float(baseline.expected(metric, hour, weekday))
    return math.exp(e) if _SPEC[metric].scale == "log" else e


@dataclass
class DriftVerdict:
    """The verdict of one (target, suite): ``ok``, ``regressed`` or ``insufficient_data``.

    `probes` names the probes whose pass rate over their last `PROBE_WINDOW` runs is at
    least `PROBE_DEFICIT_NAMED` below their baseline pass rate, largest deficit first:
    ``{"probe", "hash", "baseline", "recent", "passed", "scored"}``. It describes, it
    does not test: the detectors decide.
    """

    verdict: str
    needed: int = 0
    note: str = ""
    tripped: list[str] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)


def verdict_of(monitor: Monitor, baseline: DriftBaseline) -> DriftVerdict:
    """The verdict the monitor's detectors give now, one row per metric."""
    rows = []
    for metric, det in monitor.detectors.items():
        last = monitor.last.get(metric, {})
        rows.append(
            {
                "metric": metric,
                "test": "whitened-cusum" if _SPEC[metric].whiten else "cusum",
                "phi": det.phi,
                "theta": det.theta,
                "statistic": det.s,
                "threshold": det.h,
                "k": det.k,
                "ratio": det.s / det.h if det.h > 0 else None,
                "alarm": det.alarm,
                "alarm_since": det.alarm_since,
                "alarms": det.alarms,
                "n": det.runs,
                "recent_value": last.get("value"),
                "baseline_value": last.get("expected", baseline.typical.get(metric)),
                "result": "fail" if det.alarm else "pass",
            }
        )
    tripped = [r["metric"] for r in rows if r["alarm"]]
    if not rows:
        return DriftVerdict("insufficient_data", needed=1, note="baseline has no metric values")
    note = ""
    last = monitor.last.get("pass_rate", {})
    if last.get("value") is not None and last.get("residual") is None:
        note = (
            "the last run scored no probe the baseline knows (the suite changed?): "
            "pass_rate is not monitored until the baseline is re-pinned"
        )
    return DriftVerdict(
        "regressed" if tripped else "ok",
        note=note,
        tripped=tripped,
        metrics=rows,
        probes=_probes_below_baseline(monitor, baseline),
    )


def _probes_below_baseline(monitor: Monitor, baseline: DriftBaseline) -> list[dict[str, Any]]:
    """The probes whose recent pass rate is furthest below their baseline's (see
    `DriftVerdict`)."""
    below = []
    for h, runs in monitor.probe_recent.items():
        base = baseline.probe_pass.get(h)
        passed, scored = sum(p for p, _ in runs), sum(s for _, s in runs)
        if base is None or scored < 2:
            continue
        deficit = base - passed / scored
        if deficit >= PROBE_DEFICIT_NAMED:
            below.append((deficit, monitor.probe_names.get(h, h), h, base, passed, scored))
    below.sort(key=lambda x: (-x[0], x[1]))
    return [
        {"probe": name, "hash": h, "baseline": base, "recent": p / s, "passed": p, "scored": s}
        for _, name, h, base, p, s in below[:MAX_PROBES_NAMED]
    ]


def baseline_shortfall(n_runs: int, span_s: float, cfg: DriftConfig) -> tuple[int, str] | None:
    """What a baseline of `n_runs` over `span_s` seconds lacks: (runs needed, note)."""
    need_runs = max(0, cfg.baseline_runs - n_runs)
    need_span = max(0.0, cfg.baseline_span - span_s)
    if not need_runs and not need_span:
        return None
    parts = []
    if need_runs:
        parts.append(f"{need_runs} more run(s)")
    if need_span:
        parts.append(f"{timedelta(seconds=round(need_span))} more time")
    note = (
        f"a drift baseline needs {cfg.baseline_runs} runs over at least "
        f"{timedelta(seconds=round(cfg.baseline_span))}: {' and '.join(parts)} needed"
    )
    return max(need_runs, 1), note
