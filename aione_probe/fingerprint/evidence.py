"""Per-response authenticity evidence, calibrated on the reference's own variation.

One target run is compared with the reference run rendered from the same seed. What
counts as "too different" is learned from the reference compared with *itself*, never
assumed: real engines are not deterministic even at temperature 0 (llama.cpp decodes a
prompt served from its KV prefix cache differently from a cold one after a dozen tokens).

**Greedy blocks.** A block is one rendered greedy prompt of one run (the suite sends it
three times). The first request meets a cold KV cache and the second and third a warm one,
and llama.cpp (like batched GPU servers, for other reasons) decodes the two states
differently after a dozen tokens, so each kind of answer has its own null, learned from the
reference's stored history (per probe once it has `min_null` values, else pooled over the
greedy probes):

- a warm target answer t gets S(t) = max over the reference's warm answers r to the same
  prompt of sim(t, r), where sim is the mean of the shared-prefix ratio and the character
  3-gram cosine; its null is sim(r, r') between the reference's two warm answers to one
  prompt;
- the cold target answer gets S(t) = max over all the reference's answers to the prompt;
  its null is the reference's cold answer's best sim to its own warm answers of that prompt
  (one value per run).

If the target serves the reference's distribution, the target's answer is exchangeable with
the reference's answer of the same kind, so S(t) is at least a draw from the null, and
p(t) = (1 + #{null <= S(t)}) / (1 + #null) is a valid (conservative) p-value. A block's
p-value is the smallest of its answers' times their number (Bonferroni), valid however its
answers depend on each other: a relay that caches identical requests repeats one answer,
which then counts once. Its floor is that number times the largest answer floor
1 / (1 + #null), so any answer can reach it. The cold null is wide (a cold answer may share
nothing with the warm ones), so a substitute's cold answer falls below all of it less often
than a warm one; it still adds the requests a router sends to the first slot.

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
of *blocks*: a block holds three requests, so routing 10 % of requests touches about 27 %
of blocks and 20 % about 49 %; (1, 0.4, 0.2) covers a full swap, heavy and light routing.

**Substituted share.** A block is *implausible* when its warm answers fall below everything
the reference did itself (their Bonferroni p at its floor; cold answers are left out, since a
substitute's cold answer can hide in the wider cold null). With F of n blocks implausible,
the share of substituted blocks is F/n with a Clopper–Pearson interval; per request it is
1 − (1 − b)^(1/k) for blocks of k warm requests. It assumes a substitute's warm answers are
implausible (true of another model; a lower bound for near copies).
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
#: Null key suffix of cold greedy answers (see `greedy_null`).
COLD = "|cold"


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


def _greedy_blocks(views: Sequence[ObsView]) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """Greedy answers by (probe hash, rendered vars): (sample, text), in sample order.

    Sample 0 is the *cold* answer (the prompt's first request meets a cold KV prefix
    cache), the later ones are *warm*; llama.cpp (and batched GPU servers, for other
    reasons) decode the two states differently, so each kind has its own null (module docs).
    """
    blocks: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for v in sorted(views, key=lambda v: v.sample):
        if v.ok and v.category == "greedy":
            blocks[(v.probe_hash, v.vars_key)].append((v.sample, v.content))
    return blocks


def _split(answers: Sequence[tuple[int, str]]) -> tuple[list[str], list[str]]:
    """A block's (cold, warm) answer texts."""
    return [t for i, t in answers if i == 0], [t for i, t in answers if i >= 1]


def greedy_null(
    history: Iterable[Sequence[Any]], categories: Mapping[str, str] | None = None
) -> dict[str, np.ndarray]:
    """The reference's own spread of greedy answers, by probe hash (and ``*`` pooled).

    Key ``<probe>``: sim(r, r') of its repeated warm answers to one prompt; key
    ``<probe>|cold``: its cold answer's best similarity to its own warm answers of the same
    prompt (one value per run). `history` holds the reference's stored runs, one sequence
    of observations each.
    """
    by_probe: dict[str, list[float]] = defaultdict(list)
    for run in history:
        for (probe, _), answers in _greedy_blocks(_views(run, categories)).items():
            cold, warm = _split(answers)
            for i in range(len(warm)):
                for j in range(i + 1, len(warm)):
                    by_probe[probe].append(similarity(warm[i], warm[j]))
            if cold and warm:
                by_probe[probe + COLD].append(max(similarity(cold[0], r) for r in warm))
    out = {k: np.sort(np.asarray(v)) for k, v in by_probe.items()}
    for kind in ("", COLD):
        pooled = [x for k, v in by_probe.items() if k.endswith(COLD) == bool(kind) for x in v]
        out["*" + kind] = np.sort(np.asarray(pooled))
    return out


def _null_for(
    null: Mapping[str, np.ndarray], probe: str, s: EvidenceSettings, kind: str = ""
) -> np.ndarray:
    own = null.get(probe + kind)
    if own is not None and own.size >= s.min_null:
        return own
    return null.get("*" + kind, np.empty(0))


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
    # A block needs the reference's warm answers: both nulls are measured against them.
    shared = [k for k in tb if _split(rb.get(k, []))[1]]
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
    cold_unscored = 0
    for probe, key in shared:
        warm_null = _null_for(null, probe, s)
        if warm_null.size < s.min_null:
            ev.signals["greedy"] = {
                "status": "insufficient",
                "note": f"the reference's own repeat spread needs {s.min_null - warm_null.size} "
                "more repeated greedy answers",
            }
            return dict.fromkeys(s.mixtures, 0.0)
        cold_null = _null_for(null, probe, s, COLD)
        ref_cold, ref_warm = _split(rb[(probe, key)])
        # (p, floor, score, warm?) per target answer. A warm answer is judged against the
        # reference's warm answers; a cold one against all its answers, cold included
        # (taking the best only raises S, so p stays conservative).
        scored: list[tuple[float, float, float, bool]] = []
        for sample, text in tb[(probe, key)]:
            warm = sample >= 1
            if not warm and cold_null.size < s.min_null:
                cold_unscored += 1
                continue
            own = warm_null if warm else cold_null
            refs = ref_warm if warm else ref_cold + ref_warm
            score = max(similarity(text, r) for r in refs)
            scored.append((_tail_p(own, score), 1.0 / (1 + own.size), score, warm))
        if not scored:
            continue
        p, floor = _bonferroni(scored)
        g = step_calibrator(p, floor, s.weight)
        for share in s.mixtures:
            logs[share] += mixture_log_e(g, share)
        ps.append(p)
        warm_scored = [a for a in scored if a[3]]
        warm_p, warm_floor = _bonferroni(warm_scored) if warm_scored else (1.0, 0.0)
        ev.blocks.append(
            {
                "signal": "greedy",
                "probe": probe,
                "vars": key,
                "score": round(min(a[2] for a in scored), 4),
                "p_value": p,
                "floor": floor,
                "e_value": g,
                "n": len(scored),
                "implausible": bool(p <= floor * (1 + 1e-9)),
                # The share estimate counts warm answers only: a substitute's cold answer
                # can hide in the reference's wider cold spread (module docs).
                "warm_n": len(warm_scored),
                "warm_implausible": bool(warm_p <= warm_floor * (1 + 1e-9)),
            }
        )
    if not ps:
        ev.signals["greedy"] = {
            "status": "insufficient",
            "note": "no greedy answer of the target could be scored in this run",
        }
        return dict.fromkeys(s.mixtures, 0.0)
    ev.signals["greedy"] = {
        "status": "ok",
        "e_value": math.exp(logs[max(s.mixtures)]),
        "p_min": min(ps),
        "blocks": len(ps),
        "note": (
            f"{cold_unscored} cold answers unscored: the reference's cold spread needs "
            f"{s.min_null} runs"
            if cold_unscored
            else ""
        ),
    }
    return logs


def _bonferroni(scored: Sequence[tuple[float, ...]]) -> tuple[float, float]:
    """A block's (p-value, floor) from its answers' (p, floor, …): the smallest p times the
    number of answers, valid however the answers depend on each other; the floor is the
    largest answer floor times that number, so P(p <= floor) <= floor under the null
    (every answer's own p is valid at that level) and any answer can reach it."""
    k = len(scored)
    p = min(1.0, k * min(a[0] for a in scored))
    return p, min(1.0, k * max(a[1] for a in scored))


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
    blocks = [
        b for ev in evidence if ev.status == "ok" for b in ev.blocks if b.get("warm_n", b["n"])
    ]
    if not blocks:
        return None
    n = len(blocks)
    # Warm answers only (older stored blocks without the warm fields held nothing else).
    f = sum(bool(b.get("warm_implausible", b["implausible"])) for b in blocks)
    k = float(np.mean([b.get("warm_n", b["n"]) for b in blocks]))
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
