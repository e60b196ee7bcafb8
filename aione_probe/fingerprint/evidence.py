"""Per-response authenticity evidence, calibrated on the reference's own variation.

One target run is compared with the reference run rendered from the same seed. What
counts as "too different" is learned from the reference compared with *itself*, never
assumed: real engines are not deterministic even at temperature 0 (llama.cpp decodes a
prompt served from its KV prefix cache differently from a cold one after a dozen tokens).

**Greedy blocks.** A block is one rendered greedy prompt of one run (the suite sends it
three times; the first request meets a cold KV cache, so only the warm second and third
answers are compared, like with like). Each warm target answer t gets the statistic
S(t) = max over the reference's warm answers r to the same prompt of sim(t, r), where sim
is the mean of the shared-prefix ratio and the character 3-gram cosine. The null
distribution is that of sim(r, r') between the reference's two warm answers to one prompt,
collected from the reference's stored history (per probe once it has `min_null` pairs,
else pooled over the greedy probes). If the target serves the reference's distribution,
sim(t, r) for one reference answer is distributed like sim(r, r'), and S(t) is at least
that, so p(t) = (1 + #{null <= S(t)}) / (1 + #null) is a valid (conservative) p-value. A
block's p-value is the smallest of its answers' times their number (Bonferroni), valid
however its answers depend on each other: a relay that caches identical requests repeats
one answer, which then counts once.

**Tokenizer.** Each run's canary deltas subtract *that run's own* base prompt count, and
are compared canary by canary with the reference's (`tokenizer_delta_test`, exact).

**One e-value per run and assumed share.** A greedy block's p-value is discrete with a
known floor q = k / (1 + #null) (its answers fall below everything the reference did
itself); the step calibrator g puts half its mass there (g = 0.5/q at p <= q, about 0.5
above), so E[g] <= 1 for any valid p. For an assumed share π of substituted blocks the
block's e-value is 1 − π + π·g, and the run's e-value is the product over its blocks times
the tokenizer's (1 − 0.2 + 0.2·calibrated p). Blocks are separate requests on separate
prompts; the product is an e-value when their p-values are independent and valid given
the past, which the real-engine benchmark checks (`bench/authenticity_real.py`). One
detector runs per π in `mixtures`, each at a share of the false-alarm budget. π is a share
of *blocks*: a block holds two warm requests, so routing 10 % of requests touches about
19 % of blocks and 20 % about 36 %; (1, 0.4, 0.2) covers a full swap, heavy and light
routing.

**Substituted share.** A block is *implausible* when its smallest S falls at or below the
reference's own `share_quantile` of sim(r, r'). With a the null rate of that event and F of
n blocks implausible, the share of substituted blocks is (F/n − a)/(1 − a), with a
Clopper–Pearson interval on F/n carried through; per request it is 1 − (1 − b)^(1/k) for
blocks of k requests. It assumes a substitute's answers are implausible (true of another
model; a lower bound for near copies).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from aione_probe.analysis.sequential import p_to_e
from aione_probe.analysis.stats import (
    InsufficientDataError,
    ShareEstimate,
    char_ngram_similarity,
    tokenizer_delta_test,
)
from aione_probe.fingerprint.features import ObsView, is_tokenizer_base, view

#: Weight of the tokenizer test's calibrated e-value against 1 (see `_tokenizer`).
TOKENIZER_WEIGHT = 0.2


@dataclass(frozen=True)
class EvidenceSettings:
    """Tuning of the per-run evidence, fixed before any benchmark (see module docs).

    `mixtures`: the assumed shares π of substituted blocks, one e-detector each;
    `weight`: the probability mass w the step calibrator puts at the smallest attainable
    p-value; `min_null`: repeat pairs per probe before its own null is used (else all
    greedy probes' pairs are pooled); `share_level`: the share interval's confidence.
    """

    mixtures: tuple[float, ...] = (1.0, 0.4, 0.2)
    weight: float = 0.5
    min_null: int = 40
    share_level: float = 0.95


@dataclass
class RunEvidence:
    """What one target run says about the claim, as stored with the verdict.

    `status`: ``ok`` (an e-value), ``reference_error`` (the reference run failed: evidence
    paused, the run is not counted), ``insufficient`` (nothing comparable yet: `needed`
    says what is missing) or ``disabled``. `signals` holds per family its e-value, p-values
    and notes; `blocks` the per-response scores.
    """

    run_id: int
    reference_run_id: int | None
    started_at: str
    status: str
    e_value: float = 1.0
    log_e_by_share: dict[str, float] = field(default_factory=dict)
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    needed: str = ""
    note: str = ""

    @property
    def log_e(self) -> float:
        """Natural log of the run's e-value."""
        return math.log(self.e_value) if self.e_value > 0 else -math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunEvidence:
        """Read a stored entry back."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def similarity(a: str, b: str) -> float:
    """Mean of the shared-prefix ratio and the character 3-gram cosine of two answers."""
    if not a and not b:
        return 1.0
    k = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        k += 1
    return 0.5 * k / max(len(a), len(b)) + 0.5 * char_ngram_similarity(a, b)


def step_calibrator(p: float, floor: float, weight: float = 0.5) -> float:
    """The e-value g(p) of a p-value whose smallest attainable value is `floor`.

    g puts mass `weight` on [0, floor] and the rest on (floor, 1]: g(p) = weight / floor
    for p <= floor, (1 − weight) / (1 − floor) above. Its integral over [0, 1] is 1, so
    E[g(p)] <= 1 for a valid p-value; the greedy p-values are discrete with a known floor,
    where a smooth calibrator such as κ·p^(κ−1) would waste most of its mass.
    """
    floor = min(max(floor, 1e-12), 0.5)
    if p <= floor * (1 + 1e-9):
        return weight / floor
    return (1.0 - weight) / (1.0 - floor)


def mixture_log_e(g: float, share: float) -> float:
    """log(1 − π + π·g): one block's e-value when a share π of blocks is substituted."""
    return math.log(1.0 - share + share * g)


def calibrated_e(p: float, s: EvidenceSettings | None = None) -> float:
    """A continuous p-value's e-value: the mixture calibrator (`sequential.p_to_e`)."""
    return p_to_e(min(1.0, max(p, 1e-300)))


def _views(observations: Iterable[Any], categories: Mapping[str, str] | None) -> list[ObsView]:
    return [v for v in (view(o, categories) for o in observations) if v.category]


def _greedy_blocks(views: Sequence[ObsView]) -> dict[tuple[str, str], list[str]]:
    """Warm greedy answers by (probe hash, rendered vars): every sample but the first.

    The first request of a prompt meets a cold KV prefix cache and the later ones a warm
    one; llama.cpp (and batched GPU servers, for other reasons) decode the two states
    differently, so only like is compared with like: warm target answers against warm
    reference answers, with the reference's warm repeats as the null.
    """
    blocks: dict[tuple[str, str], list[str]] = defaultdict(list)
    for v in sorted(views, key=lambda v: v.sample):
        if v.ok and v.category == "greedy" and v.sample >= 1:
            blocks[(v.probe_hash, v.vars_key)].append(v.content)
    return blocks


def greedy_null(
    history: Iterable[Sequence[Any]], categories: Mapping[str, str] | None = None
) -> dict[str, np.ndarray]:
    """sim(r, r') of the reference's repeated greedy answers, by probe hash (and ``*``).

    `history` holds the reference's stored runs, one sequence of observations each.
    """
    by_probe: dict[str, list[float]] = defaultdict(list)
    for run in history:
        for (probe, _), texts in _greedy_blocks(_views(run, categories)).items():
            for i in range(len(texts)):
                for j in range(i + 1, len(texts)):
                    by_probe[probe].append(similarity(texts[i], texts[j]))
    out = {k: np.sort(np.asarray(v)) for k, v in by_probe.items()}
    pooled = [x for v in by_probe.values() for x in v]
    out["*"] = np.sort(np.asarray(pooled))
    return out


def _null_for(null: Mapping[str, np.ndarray], probe: str, s: EvidenceSettings) -> np.ndarray:
    own = null.get(probe)
    if own is not None and own.size >= s.min_null:
        return own
    return null.get("*", np.empty(0))


def _tail_p(sorted_null: np.ndarray, value: float) -> float:
    """(1 + #{null <= value}) / (1 + #null): small when `value` is below the null's range."""
    count = int(np.searchsorted(sorted_null, value + 1e-12, side="right"))
    return (1 + count) / (1 + sorted_null.size)


def _tokenizer_deltas(views: Sequence[ObsView]) -> dict[str, list[int]] | None:
    """Canary deltas of one run against *that run's own* base prompt count (None if the
    run has no base observation with usage)."""
    bases = [
        v.prompt_tokens
        for v in views
        if v.ok and v.category == "tokenizer" and is_tokenizer_base(v.probe_id)
        if v.prompt_tokens is not None
    ]
    if not bases:
        return None
    base = bases[0]
    out: dict[str, list[int]] = defaultdict(list)
    for v in views:
        if (
            v.ok
            and v.category == "tokenizer"
            and not is_tokenizer_base(v.probe_id)
            and v.prompt_tokens is not None
        ):
            out[f"{v.probe_hash}|{v.vars_key}"].append(v.prompt_tokens - base)
    return dict(out)


def run_evidence(
    target_run: Sequence[Any],
    reference_run: Sequence[Any],
    null: Mapping[str, np.ndarray],
    *,
    run_id: int,
    reference_run_id: int | None,
    started_at: str,
    categories: Mapping[str, str] | None = None,
    settings: EvidenceSettings | None = None,
) -> RunEvidence:
    """Score one target run against the reference run of the same seed (module docs).

    Args:
        target_run: The target run's final observations (rows or Observations).
        reference_run: The reference run's final observations.
        null: `greedy_null` of the reference's stored history.
        run_id: The target run's id (the evidence is stored under it).
        reference_run_id: The reference run's id (None when there is none).
        started_at: ISO time the target run started (detector order).
        categories: Probe id → signal family, from each probe's TOML ``category``.
        settings: Evidence tuning.
    """
    s = settings or EvidenceSettings()
    tv, rv = _views(target_run, categories), _views(reference_run, categories)
    ev = RunEvidence(run_id, reference_run_id, started_at, "ok")
    if rv and not any(v.ok for v in rv):
        ev.status = "reference_error"
        failures = sorted({v.failure for v in rv})
        ev.note = f"reference run failed ({', '.join(failures)}): evidence paused for this run"
        return ev
    if not rv:
        ev.status = "reference_error"
        ev.note = "no reference run with this seed: evidence paused for this run"
        return ev
    greedy = _greedy(ev, tv, rv, null, s)
    tok = _tokenizer(ev, tv, rv, s)
    if not any(sig.get("status") == "ok" for sig in ev.signals.values()):
        ev.status = "insufficient"
        ev.needed = "; ".join(
            f"{k}: {sig['note']}" for k, sig in ev.signals.items() if sig.get("note")
        )
        return ev
    # One e-value per assumed share π: the greedy blocks' product times the tokenizer's
    # (separate requests, so independent under the null).
    ev.log_e_by_share = {str(share): greedy[share] + tok for share in s.mixtures}
    ev.e_value = math.exp(min(max(ev.log_e_by_share.values()), 700.0))
    return ev


def _greedy(
    ev: RunEvidence,
    tv: Sequence[ObsView],
    rv: Sequence[ObsView],
    null: Mapping[str, np.ndarray],
    s: EvidenceSettings,
) -> dict[float, float]:
    tb, rb = _greedy_blocks(tv), _greedy_blocks(rv)
    shared = [k for k in tb if rb.get(k)]
    if not tb:
        ev.signals["greedy"] = {"status": "not_probed", "note": ""}
        return dict.fromkeys(s.mixtures, 0.0)
    if not shared:
        ev.signals["greedy"] = {
            "status": "insufficient",
            "note": "no greedy prompt answered by both sides in this run",
        }
        return dict.fromkeys(s.mixtures, 0.0)
    logs = dict.fromkeys(s.mixtures, 0.0)
    ps = []
    for probe, key in shared:
        ref = _null_for(null, probe, s)
        if ref.size < s.min_null:
            ev.signals["greedy"] = {
                "status": "insufficient",
                "note": f"the reference's own repeat spread needs {s.min_null - ref.size} "
                "more repeated greedy answers",
            }
            return dict.fromkeys(s.mixtures, 0.0)
        scores = [max(similarity(t, r) for r in rb[(probe, key)]) for t in tb[(probe, key)]]
        low = min(scores)
        k = len(scores)
        p = min(1.0, k * _tail_p(ref, low))
        floor = min(1.0, k / (1 + ref.size))
        g = step_calibrator(p, floor, s.weight)
        for share in s.mixtures:
            logs[share] += mixture_log_e(g, share)
        ps.append(p)
        ev.blocks.append(
            {
                "signal": "greedy",
                "probe": probe,
                "vars": key,
                "score": round(low, 4),
                "p_value": p,
                "floor": floor,
                "e_value": g,
                "n": k,
                "implausible": bool(p <= floor * (1 + 1e-9)),
            }
        )
    ev.signals["greedy"] = {
        "status": "ok",
        "e_value": math.exp(logs[max(s.mixtures)]),
        "p_min": min(ps),
        "blocks": len(ps),
        "note": "",
    }
    return logs


def _tokenizer(
    ev: RunEvidence, tv: Sequence[ObsView], rv: Sequence[ObsView], s: EvidenceSettings
) -> float:
    tok = [v for v in tv if v.ok and v.category == "tokenizer"]
    if not tok:
        ev.signals["tokenizer"] = {"status": "not_probed", "note": ""}
        return 0.0
    if all(v.prompt_tokens is None for v in tok):
        ev.signals["tokenizer"] = {
            "status": "disabled",
            "note": f"gateway omitted usage.prompt_tokens on all {len(tok)} tokenizer requests",
        }
        return 0.0
    td, rd = _tokenizer_deltas(tv), _tokenizer_deltas(rv)
    if td is None or rd is None:
        side = "target" if td is None else "reference"
        ev.signals["tokenizer"] = {
            "status": "insufficient",
            "note": f"base prompt with usage not observed on the {side} side in this run",
        }
        return 0.0
    try:
        res = tokenizer_delta_test(td, rd)
    except InsufficientDataError as exc:
        ev.signals["tokenizer"] = {"status": "insufficient", "note": exc.reason}
        return 0.0
    # Mixed with 1 (weight TOKENIZER_WEIGHT on the calibrator) so that the usual p = 1 of
    # an honest run costs little: e = 0.9 there, about 1,000 at p = 1e-6.
    e = 1.0 - TOKENIZER_WEIGHT + TOKENIZER_WEIGHT * calibrated_e(res.p_value)
    ev.signals["tokenizer"] = {
        "status": "ok",
        "e_value": e,
        "p_value": res.p_value,
        "n": res.n_x,
        "note": "paired canaries, this run's own base count",
    }
    return math.log(e)


def share_estimate(
    evidence: Iterable[RunEvidence], settings: EvidenceSettings | None = None
) -> ShareEstimate | None:
    """Share of requests answered implausibly (module docs): the substituted share when a
    substitute's greedy answers fall below everything the reference does itself."""
    s = settings or EvidenceSettings()
    blocks = [b for ev in evidence if ev.status == "ok" for b in ev.blocks]
    if not blocks:
        return None
    n = len(blocks)
    f = sum(bool(b["implausible"]) for b in blocks)
    k = float(np.mean([b["n"] for b in blocks]))
    ci = stats.binomtest(f, n).proportion_ci(confidence_level=s.share_level, method="exact")

    def per_request(block_rate: float) -> float:
        b = min(1.0, max(0.0, block_rate))
        return float(1.0 - (1.0 - b) ** (1.0 / k))

    return ShareEstimate(
        per_request(f / n),
        per_request(ci.low),
        per_request(ci.high),
        "implausible_greedy_blocks",
        n,
        s.share_level,
    )
