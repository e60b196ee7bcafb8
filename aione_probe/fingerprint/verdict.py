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
    """Outcome of one authenticity audit of one (gateway, model)."""

    authentic = "authentic"
    suspect = "suspect"
    substituted = "substituted"
    insufficient_data = "insufficient_data"


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
