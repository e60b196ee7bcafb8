"""The report's typed data: one `TargetReport` per (gateway, model) inside a `ReportData`.

Plain dataclasses with the derived figures as properties, and the JSON export.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

PERCENTILES = (50, 90, 95, 99)
INSUFFICIENT = "insufficient_data"

_GOOD = {"pass", "ok", "authentic", "consistent", "match", "same", "stable", "no_drift"}
_BAD = {
    "fail",
    "mismatch",
    "inconsistent",
    "discrepant",
    "substituted",
    "regressed",
    "different",
    "drift",
    "drifted",
}


def verdict_tone(verdict: str | None) -> str:
    """Classify a verdict string for its badge colour: good, bad, insufficient or neutral."""
    if verdict is None or verdict == INSUFFICIENT:
        return "insufficient"
    if verdict in _GOOD:
        return "good"
    if verdict in _BAD:
        return "bad"
    return "neutral"


def category_of(probe_id: str, stored: str | None) -> str:
    """The probe's category as stored by its check, else the probe id's first kebab segment."""
    if stored:
        return stored
    return probe_id.split("-", 1)[0] if probe_id else "(none)"


def slug(gateway: str, model: str) -> str:
    """File-name-safe page name of a target: ``<gateway>--<model>``."""

    def clean(part: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "_"

    return f"{clean(gateway)}--{clean(model)}"


@dataclass
class SignalRow:
    """One authenticity signal: its two-sample test against the reference."""

    signal: str
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    n: int | None = None
    baseline_id: str | None = None
    result: str | None = None
    note: str | None = None


@dataclass
class VerdictView:
    """The latest verdict of one kind for a target (and suite) in the period."""

    kind: str
    verdict: str
    suite: str | None
    created_at: datetime
    score: float | None
    alpha: float | None
    n: int | None
    baseline_id: str | None
    method: str | None = None
    needed: int | str | None = None
    signals: list[SignalRow] = field(default_factory=list)
    comparison: str | None = None
    reason: str | None = None
    threshold: float | None = None
    suspect_threshold: float | None = None
    #: Authenticity: (run start ISO, log10 of the e-detector statistic) per counted run.
    evidence: list[tuple[str, float]] = field(default_factory=list)
    share: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    note: str | None = None

    @property
    def insufficient(self) -> bool:
        """True when the verdict could not be reached for lack of samples."""
        return self.verdict == INSUFFICIENT

    @property
    def tone(self) -> str:
        """Badge colour class."""
        return verdict_tone(self.verdict)


@dataclass
class DriftGap:
    """Runs that gave the drift detectors nothing (see `aione_probe.analysis.drift.Gap`)."""

    start: str | None
    end: str | None
    missed_runs: int
    reasons: str


@dataclass
class DriftProbe:
    """A probe whose recent pass rate is well below its baseline's (drift verdicts)."""

    probe: str
    baseline: float
    passed: int
    scored: int


@dataclass
class DriftDetail:
    """One suite's drift detectors: what tripped, the probes below their baseline, the gaps,
    and statistic / threshold over time (one point per stored verdict in the period, per
    metric)."""

    suite: str
    tripped: list[str] = field(default_factory=list)
    note: str = ""
    budget: str = ""
    missed_runs: int = 0
    gaps: list[DriftGap] = field(default_factory=list)
    history: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)
    probes: list[DriftProbe] = field(default_factory=list)


@dataclass
class LatencyDay:
    """TTFT and end-to-end percentiles (seconds) of one target on one UTC day."""

    day: date
    n: int
    ttft: dict[str, float | None]
    e2e: dict[str, float | None]


@dataclass
class PassRate:
    """Golden-check outcomes of one group (a day or a category)."""

    label: str
    passed: int = 0
    partial: int = 0
    failed: int = 0
    missing: int = 0

    @property
    def scored(self) -> int:
        """Outcomes that judged an answer (unscored ones are excluded)."""
        return self.passed + self.partial + self.failed + self.missing

    @property
    def rate(self) -> float | None:
        """Share of scored outcomes that passed."""
        return self.passed / self.scored if self.scored else None


@dataclass
class Violation:
    """A finish_reason or usage check that failed or found a field missing."""

    at: datetime
    name: str
    probe_id: str
    value: str
    expected: str | None
    observed: str | None
    explanation: str


@dataclass
class CacheStats:
    """Cache check results: mean hit ratio and money saved (negative: lost) vs list price.

    `saved` counts only runs whose repeats were measurably faster (timing verified the
    claimed cache hits); `unverified` is what the other runs claimed, shown as claimed,
    not saved, in `unverified_runs` runs.
    """

    n: int
    hit_ratio: float | None
    saved: float
    currency: str | None
    unverified: float = 0.0
    unverified_runs: int = 0


@dataclass
class Count:
    """A labelled count (error class, echoed model, check outcome)."""

    label: str
    count: int
    final: int = 0


@dataclass
class EvidenceRow:
    """One observation kept as evidence, with the outcomes of its checks."""

    observation_id: int
    probe_id: str
    probe_hash: str
    at: datetime
    response_id: str | None
    response_model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    finish_reason: str | None
    failure: str
    checks: list[str]
    excerpt: str
    thumbnails: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        """True when the request failed or one of its checks did not pass."""
        return self.failure != "ok" or any(
            c.endswith((":fail", ":missing", ":partial")) for c in self.checks
        )


@dataclass
class TargetReport:
    """Everything the report says about one (gateway, model) pair."""

    gateway: str
    model: str
    page: str = ""
    attempts: int = 0
    final: int = 0
    final_ok: int = 0
    spend: float = 0.0
    ttft_p50: float | None = None
    ttft_p99: float | None = None
    e2e_p50: float | None = None
    e2e_p99: float | None = None
    latency_stride: int = 1
    latency_n: int = 0
    authenticity: VerdictView | None = None
    comparisons: list[VerdictView] = field(default_factory=list)
    drift: list[VerdictView] = field(default_factory=list)
    drift_detail: dict[str, DriftDetail] = field(default_factory=dict)
    consistency: list[VerdictView] = field(default_factory=list)
    pass_by_day: list[PassRate] = field(default_factory=list)
    pass_by_category: list[PassRate] = field(default_factory=list)
    latency: list[LatencyDay] = field(default_factory=list)
    conformance: list[PassRate] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    cache: CacheStats | None = None
    spend_by_day: list[tuple[date, float]] = field(default_factory=list)
    errors: list[Count] = field(default_factory=list)
    response_models: list[Count] = field(default_factory=list)
    evidence: list[EvidenceRow] = field(default_factory=list)

    @property
    def success_ratio(self) -> float | None:
        """Share of final attempts that produced a usable response."""
        return self.final_ok / self.final if self.final else None

    @property
    def golden(self) -> PassRate:
        """Golden-check outcomes over the whole period."""
        total = PassRate("all")
        for day in self.pass_by_day:
            total.passed += day.passed
            total.partial += day.partial
            total.failed += day.failed
            total.missing += day.missing
        return total

    @property
    def drift_verdict(self) -> str | None:
        """Worst drift verdict over the suites: a drift beats insufficient data beats stable."""
        if not self.drift:
            return None
        order = {"bad": 0, "neutral": 1, "insufficient": 2, "good": 3}
        return min(self.drift, key=lambda v: order[v.tone]).verdict


@dataclass
class ReportData:
    """The numbers of one verification report; `render_report` turns it into HTML."""

    since: datetime
    until: datetime
    generated_at: datetime
    targets: list[TargetReport] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        """False when the period holds no observation, check result or verdict."""
        return bool(self.targets)

    def to_json(self) -> str:
        """The same numbers as the HTML, as indented JSON (non-finite floats become null).

        ``<``, ``>`` and ``&`` are written as ``\\u`` escapes (they only occur inside
        strings), so model text in the export stays inert even if the file is served or
        opened as HTML.
        """
        text = json.dumps(_jsonable(self), indent=2, sort_keys=True)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, ReportData):
        out = {
            "since": obj.since,
            "until": obj.until,
            "generated_at": obj.generated_at,
            "targets": obj.targets,
        }
        return _jsonable(out)
    if isinstance(obj, TargetReport):
        out = asdict(obj)
        out["success_ratio"] = obj.success_ratio
        out["golden"] = {**asdict(obj.golden), "rate": obj.golden.rate}
        out["pass_by_day"] = [{**asdict(p), "rate": p.rate} for p in obj.pass_by_day]
        out["pass_by_category"] = [{**asdict(p), "rate": p.rate} for p in obj.pass_by_category]
        out["conformance"] = [{**asdict(p), "rate": p.rate} for p in obj.conformance]
        return _jsonable(out)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "__dataclass_fields__"):
        return _jsonable(asdict(obj))
    return obj
