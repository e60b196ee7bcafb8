"""The drift detector the run-level CUSUM replaced, kept only so bench/drift.py can run it
beside the new one (not part of the package).

Quality and latency drift: a recent window against a pinned baseline window.

Three families of tests, each two-sided, with Holm's correction across every test of a
target (all its suites and metrics) so one verdict's false-alarm rate stays at `alpha`:

- **pass rate** on the same prompts: a Cochran–Mantel–Haenszel test stratified by probe
  (each probe's pass/fail counts in the baseline and the recent window form one 2×2
  table). Stratifying pairs the comparison by prompt, so a suite mixing easy and hard
  prompts does not inflate the variance; with one sample per probe and window it is
  McNemar's test. Probes present in only one window are left out (a changed prompt has a
  new hash and never compares with an old baseline).
- **latency**: Mann–Whitney U on time to first token and on end-to-end latency.
- **output length**: Mann–Whitney U on completion tokens.

No verdict is given below the minimum sample sizes: the verdict is then
``insufficient_data`` with the number of samples still needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy import stats

from aione_probe.analysis.stats import holm

MIN_SCORED = 40
MIN_LATENCY = 30
#: Hysteresis: a target already ``regressed`` stays so until its worse-way tests rise
#: above `HYSTERESIS` × alpha, so one excursion pages once instead of flickering.
HYSTERESIS = 10.0


@dataclass
class Window:
    """What one time window holds for one (gateway, model, suite).

    Attributes:
        passes: probe hash -> (passed, scored) counts of final observations.
        ttft_s: time to first token of successful final observations.
        e2e_s: end-to-end latency of successful final observations.
        output_tokens: completion tokens of successful final observations.
        runs: number of suite runs in the window.
    """

    passes: dict[str, tuple[int, int]] = field(default_factory=dict)
    ttft_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    output_tokens: list[float] = field(default_factory=list)
    runs: int = 0

    @property
    def scored(self) -> int:
        """Number of scored observations."""
        return sum(n for _, n in self.passes.values())

    @property
    def pass_ratio(self) -> float | None:
        """Share of scored observations that passed."""
        n = self.scored
        return sum(p for p, _ in self.passes.values()) / n if n else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored as a baseline's data)."""
        return {**asdict(self), "passes": {k: list(v) for k, v in self.passes.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        """Inverse of `to_dict`."""
        return cls(
            passes={k: (int(v[0]), int(v[1])) for k, v in data.get("passes", {}).items()},
            ttft_s=[float(x) for x in data.get("ttft_s", [])],
            e2e_s=[float(x) for x in data.get("e2e_s", [])],
            output_tokens=[float(x) for x in data.get("output_tokens", [])],
            runs=int(data.get("runs", 0)),
        )


@dataclass
class DriftTest:
    """One test of one metric: its statistic, p-value, sizes and direction."""

    metric: str
    test: str
    statistic: float
    p_value: float
    n_recent: int
    n_baseline: int
    baseline_value: float | None
    recent_value: float | None
    worse: bool
    p_adjusted: float = 1.0
    result: str = "pass"


@dataclass
class DriftVerdict:
    """The verdict for one (gateway, model, suite)."""

    verdict: str
    tests: list[DriftTest]
    needed: int = 0
    note: str = ""

    @property
    def min_p(self) -> float | None:
        """Smallest Holm-adjusted p-value (None without tests)."""
        return min((t.p_adjusted for t in self.tests), default=None)


def cmh_test(
    baseline: dict[str, tuple[int, int]], recent: dict[str, tuple[int, int]]
) -> tuple[float, float, int, int]:
    """Cochran–Mantel–Haenszel test of equal pass rates, stratified by probe.

    Returns:
        (z, two-sided p, scored in recent, scored in baseline) over the shared probes;
        z < 0 means the recent window passes less often.
    """
    num = var = 0.0
    n_r = n_b = 0
    for key in baseline.keys() & recent.keys():
        pb, nb = baseline[key]
        pr, nr = recent[key]
        total = nb + nr
        n_r += nr
        n_b += nb
        if nb == 0 or nr == 0 or total < 2:
            continue
        passes = pb + pr
        expected = nr * passes / total
        num += pr - expected
        var += nr * nb * passes * (total - passes) / (total * total * (total - 1))
    if var <= 0:
        return 0.0, 1.0, n_r, n_b
    z = num / math.sqrt(var)
    return z, float(2 * stats.norm.sf(abs(z))), n_r, n_b


def _mann_whitney(metric: str, base: Sequence[float], recent: Sequence[float]) -> DriftTest | None:
    if len(base) < MIN_LATENCY or len(recent) < MIN_LATENCY:
        return None
    res = stats.mannwhitneyu(recent, base, alternative="two-sided")
    med_b, med_r = float(_median(base)), float(_median(recent))
    return DriftTest(
        metric=metric,
        test="mann-whitney-u",
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        n_recent=len(recent),
        n_baseline=len(base),
        baseline_value=med_b,
        recent_value=med_r,
        worse=med_r > med_b,
    )


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def tests_for(baseline: Window, recent: Window) -> tuple[list[DriftTest], int]:
    """Every test the two windows have enough data for, and the samples still needed."""
    tests: list[DriftTest] = []
    needed = 0
    z, p, n_r, n_b = cmh_test(baseline.passes, recent.passes)
    if min(n_r, n_b) >= MIN_SCORED:
        shared = baseline.passes.keys() & recent.passes.keys()
        tests.append(
            DriftTest(
                metric="pass_ratio",
                test="cochran-mantel-haenszel",
                statistic=z,
                p_value=p,
                n_recent=n_r,
                n_baseline=n_b,
                baseline_value=_ratio({k: baseline.passes[k] for k in shared}),
                recent_value=_ratio({k: recent.passes[k] for k in shared}),
                worse=z < 0,
            )
        )
    else:
        needed = max(needed, MIN_SCORED - min(n_r, n_b))
    for metric, b, r in (
        ("ttft_seconds", baseline.ttft_s, recent.ttft_s),
        ("e2e_seconds", baseline.e2e_s, recent.e2e_s),
        ("output_tokens", baseline.output_tokens, recent.output_tokens),
    ):
        t = _mann_whitney(metric, b, r)
        if t is None:
            needed = max(needed, MIN_LATENCY - min(len(b), len(r)))
        else:
            tests.append(t)
    return tests, needed


def _ratio(passes: dict[str, tuple[int, int]]) -> float | None:
    n = sum(v[1] for v in passes.values())
    return sum(v[0] for v in passes.values()) / n if n else None


def decide(
    tests: list[DriftTest],
    alpha: float,
    needed: int,
    min_runs_missing: int = 0,
    previous: str | None = None,
) -> DriftVerdict:
    """Turn Holm-adjusted tests into a verdict.

    ``regressed``: some metric moved the worse way (fewer passes, slower, longer) with
    adjusted p < alpha; ``improved``: only moves the better way; ``ok``: none;
    ``insufficient_data``: no pass-rate test yet (quality is what the verdict is about).
    """
    if min_runs_missing > 0 or not any(t.metric == "pass_ratio" for t in tests):
        return DriftVerdict(
            "insufficient_data",
            tests,
            needed=max(needed, 1),
            note=f"{min_runs_missing} more run(s) needed" if min_runs_missing else "",
        )
    worse_alpha = alpha * HYSTERESIS if previous == "regressed" else alpha
    rejected = [t for t in tests if t.p_adjusted < (worse_alpha if t.worse else alpha)]
    for t in tests:
        t.result = "fail" if t in rejected and t.worse else ("changed" if t in rejected else "pass")
    if any(t.worse for t in rejected):
        return DriftVerdict("regressed", tests)
    if rejected:
        return DriftVerdict("improved", tests)
    return DriftVerdict("ok", tests)


def evaluate(
    pairs: dict[str, tuple[Window, Window]],
    *,
    alpha: float,
    min_runs: int,
    previous: dict[str, str] | None = None,
) -> dict[str, DriftVerdict]:
    """Drift verdicts for every suite of one target, Holm-corrected across all their tests.

    Args:
        pairs: suite -> (baseline window, recent window).
        alpha: family-wise error rate of one target's evaluation.
        min_runs: runs each window needs before any verdict.
        previous: suite -> the last verdict (for hysteresis).
    """
    per_suite = {s: tests_for(b, r) for s, (b, r) in pairs.items()}
    flat = [t for tests, _ in per_suite.values() for t in tests]
    _, adjusted = holm([t.p_value for t in flat], alpha)
    for t, p in zip(flat, adjusted, strict=True):
        t.p_adjusted = p
    out = {}
    for suite, (tests, needed) in per_suite.items():
        b, r = pairs[suite]
        missing = max(0, min_runs - min(b.runs, r.runs))
        out[suite] = decide(tests, alpha, needed, missing, (previous or {}).get(suite))
    return out
