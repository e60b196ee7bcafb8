"""Turn per-signal test results into one authenticity verdict with a controlled error rate.

Signals and their weight:

- decisive: ``tokenizer``, ``categorical``, ``text``, ``greedy`` (need one with enough data
  for any verdict other than ``insufficient_data``);
- strong: ``tokenizer``, ``categorical`` (only these can make a verdict ``substituted``);
- weak: ``metadata``, ``identity``, ``speed`` (forgeable or confounded; they can make a
  verdict ``suspect``, never ``substituted``).

Rules of `decide` (α = `alpha`, m = number of signals with a p-value):

1. No decisive signal has a p-value → ``insufficient_data``; `needed` is the smallest
   number of extra target samples any decisive signal asked for. A reference endpoint
   that failed is reported in the reason, never as a mismatch.
2. Otherwise two global tests each get α/2: the Cauchy combination (ACAT) of all m
   p-values, and Holm's procedure over the m signals. The endpoint is *not authentic*
   iff ACAT p ≤ α/2 or Holm rejects at least one signal at α/2. By the union bound the
   probability of a non-authentic verdict for an endpoint that serves the reference's
   distribution on every signal is ≤ α.
3. Not authentic and Holm rejects a strong signal → ``substituted``; not authentic
   otherwise (ACAT alone, or only weak signals) → ``suspect``; else ``authentic``.

`score` ∈ [0, 1] is the p-value of that global decision, min(1, 2·min(p_ACAT, m·p_min)):
the verdict is authentic iff score > α; 1 means no evidence against the claim, values near
0 mean strong evidence. Each signal's `result` becomes ``reject``/``accept`` (Holm at α/2)
or ``n/a`` when it has no p-value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aione_probe.analysis.stats import acat, holm

DECISIVE = frozenset({"tokenizer", "categorical", "text", "greedy"})
STRONG = frozenset({"tokenizer", "categorical"})


class VerdictKind(StrEnum):
    """Outcome of one authenticity audit of one (gateway, model).

    ``reference_error``: the trusted reference failed, so evidence is paused (never a
    mismatch).
    """

    authentic = "authentic"
    suspect = "suspect"
    substituted = "substituted"
    insufficient_data = "insufficient_data"
    reference_error = "reference_error"


#: Worst first: a target's overall verdict is the worst of its comparisons'.
SEVERITY = (
    VerdictKind.substituted,
    VerdictKind.suspect,
    VerdictKind.reference_error,
    VerdictKind.authentic,
    VerdictKind.insufficient_data,
)


@dataclass(frozen=True)
class SignalResult:
    """One signal's test against the reference.

    `status`: ``ok`` (has a p-value), ``insufficient`` (needs `needed` more target
    samples), ``disabled`` (cannot apply, e.g. the gateway omits usage; see `note`),
    ``not_probed`` (the target has no observations of this family) or ``reference_error``
    (the reference endpoint failed for this signal's probes).
    """

    signal: str
    test: str
    status: str = "ok"
    statistic: float | None = None
    p_value: float | None = None
    n: int = 0
    n_reference: int = 0
    needed: int = 0
    baseline_id: str | None = None
    probes: tuple[str, ...] = ()
    note: str = ""
    result: str = "n/a"
    p_adjusted: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def strength(self) -> str:
        """``strong``, ``decisive`` or ``weak`` (see module docs)."""
        if self.signal in STRONG:
            return "strong"
        return "decisive" if self.signal in DECISIVE else "weak"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored in the verdict's details."""
        out = dataclasses.asdict(self)
        out["probes"] = list(self.probes)
        out["strength"] = self.strength
        return out


@dataclass(frozen=True)
class Verdict:
    """The decision, its error-rate figures and every signal that fed it."""

    verdict: VerdictKind
    score: float
    alpha: float
    n: int
    needed: int
    reason: str
    signals: tuple[SignalResult, ...]
    combined: dict[str, Any]
    baseline_id: str | None = None


def decide(signals: list[SignalResult], alpha: float = 0.01) -> Verdict:
    """Combine signal results into a verdict; see the module docstring for the exact rules.

    Args:
        signals: One result per signal (any status).
        alpha: Bound on the probability of a non-authentic verdict for a genuine endpoint.

    Returns:
        The verdict, with each signal's `result` and Holm-adjusted p-value filled in.
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    tested = [s for s in signals if s.status == "ok" and s.p_value is not None]
    decisive = [s for s in tested if s.signal in DECISIVE]
    n = max((s.n for s in decisive), default=0)
    baseline = next((s.baseline_id for s in signals if s.baseline_id), None)
    if not decisive:
        waiting = [s.needed for s in signals if s.signal in DECISIVE and s.status == "insufficient"]
        ref_failed = [s.signal for s in signals if s.status == "reference_error"]
        needed = min(waiting) if waiting else 0
        if ref_failed:
            reason = f"reference endpoint failed for {', '.join(ref_failed)}; nothing compared"
        elif waiting:
            reason = f"no decisive signal has enough data; {needed} more target samples needed"
        else:
            reason = "no decisive signal could be computed (none probed, or disabled)"
        return Verdict(
            VerdictKind.insufficient_data,
            1.0,
            alpha,
            n,
            needed,
            reason,
            tuple(signals),
            {"tests": 0},
            baseline,
        )
    half = alpha / 2
    ps = [float(s.p_value) for s in tested]  # type: ignore[arg-type]
    rejected, adjusted = holm(ps, half)
    p_acat = acat(ps)
    p_holm = min(adjusted)
    score = min(1.0, 2 * min(p_acat, p_holm))
    marked = {
        id(s): dataclasses.replace(s, result="reject" if r else "accept", p_adjusted=a)
        for s, r, a in zip(tested, rejected, adjusted, strict=True)
    }
    out = tuple(marked.get(id(s), s) for s in signals)
    strong_hits = [
        s.signal for s, r in zip(tested, rejected, strict=True) if r and s.signal in STRONG
    ]
    other_hits = [
        s.signal for s, r in zip(tested, rejected, strict=True) if r and s.signal not in STRONG
    ]
    if strong_hits:
        kind = VerdictKind.substituted
        reason = f"{', '.join(strong_hits)} differ from the reference (Holm at α/2)"
    elif p_acat <= half or other_hits:
        kind = VerdictKind.suspect
        what = ", ".join(other_hits) if other_hits else "the combined evidence (ACAT)"
        reason = f"{what} differ from the reference; no strong signal rejects on its own"
    else:
        kind = VerdictKind.authentic
        reason = "no signal differs from the reference at the chosen α"
    combined = {
        "acat_p": p_acat,
        "holm_min_adjusted_p": p_holm,
        "global_p": score,
        "alpha_split": [half, half],
        "tests": len(tested),
    }
    return Verdict(kind, score, alpha, n, 0, reason, out, combined, baseline)


@dataclass(frozen=True)
class AuthenticityVerdict:
    """One comparison's monitoring verdict, as stored and as metrics and reports read it.

    `comparison` names what the target was compared with, stably: ``reference:<gw>/<model>``,
    ``baseline`` (whatever baseline is pinned now; its id is `baseline_id`),
    ``profile:<id>``, or ``overall`` (the worst of them). `log_evidence` is the natural log
    of the e-detector's statistic; `threshold` and `suspect_threshold` are on the e-value
    scale; `budget` says how the threshold was derived (false alarms per year, runs per
    year, comparisons sharing the budget). `runs` is the per-run evidence of the window
    (`evidence.RunEvidence` dicts), `history` one ``[started_at, run_id, log_e, log_stat]``
    per counted run (the evidence-over-time chart), `monitor` the detector state the next
    evaluation continues from, `signals` a per-family summary, `share` the substituted-share
    estimate.
    """

    kind: VerdictKind
    gateway: str
    model: str
    comparison: str
    reason: str
    log_evidence: float
    threshold: float
    suspect_threshold: float
    budget: dict[str, Any]
    n: int = 0
    needed: str = ""
    runs: tuple[dict[str, Any], ...] = ()
    history: tuple[tuple[Any, ...], ...] = ()
    monitor: dict[str, Any] = field(default_factory=dict)
    signals: tuple[dict[str, Any], ...] = ()
    share: dict[str, Any] | None = None
    baseline_id: int | None = None
    note: str = ""

    def details(self) -> dict[str, Any]:
        """The stored ``details`` JSON."""
        return {
            "reason": self.reason,
            "comparison": self.comparison,
            "log_evidence": self.log_evidence,
            "threshold": self.threshold,
            "suspect_threshold": self.suspect_threshold,
            "budget": self.budget,
            "needed": self.needed,
            "runs": list(self.runs),
            "history": [list(h) for h in self.history],
            "monitor": self.monitor,
            "signals": list(self.signals),
            "substitution_share": self.share,
            "note": self.note,
        }

    def record(self) -> dict[str, Any]:
        """Keyword arguments of `Store.save_verdict` for this verdict."""
        return {
            "kind": "authenticity",
            "gateway": self.gateway,
            "model": self.model,
            "suite": None,
            "comparison": self.comparison,
            "verdict": str(self.kind),
            "score": self.log_evidence if self.log_evidence > -1e300 else None,
            "alpha": None,
            "n": self.n,
            "baseline_id": self.baseline_id,
            "details": self.details(),
        }

    @classmethod
    def from_row(cls, row: Any) -> AuthenticityVerdict:
        """Read a stored verdict row (kind ``authenticity``) back into the typed value."""
        d = row.details if isinstance(row.details, dict) else {}
        return cls(
            kind=VerdictKind(row.verdict)
            if row.verdict in VerdictKind.__members__
            else VerdictKind.insufficient_data,
            gateway=row.gateway,
            model=row.model,
            comparison=getattr(row, "comparison", None) or d.get("comparison") or "overall",
            reason=str(d.get("reason", "")),
            log_evidence=float(row.score) if row.score is not None else float("-inf"),
            threshold=float(d.get("threshold") or 0.0),
            suspect_threshold=float(d.get("suspect_threshold") or 0.0),
            budget=dict(d.get("budget") or {}),
            n=int(row.n or 0),
            needed=str(d.get("needed") or ""),
            runs=tuple(d.get("runs") or ()),
            history=tuple(tuple(h) for h in d.get("history") or ()),
            monitor=dict(d.get("monitor") or {}),
            signals=tuple(d.get("signals") or ()),
            share=d.get("substitution_share"),
            baseline_id=row.baseline_id,
            note=str(d.get("note", "")),
        )
