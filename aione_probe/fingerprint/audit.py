"""Audit one (gateway, model): compare its observations with a reference and decide.

The reference is a `Profile` (a pinned baseline or an imported fingerprint) or the raw
observations of a trusted endpoint. Both sides become profiles; each signal family is
tested on the probes both sides observed; `verdict.decide` combines the signals.
Failed requests never count as a mismatch: they are availability, not identity.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from aione_probe.analysis.stats import (
    DEFAULT_PERMUTATIONS,
    InsufficientDataError,
    ShareEstimate,
    StatResult,
    greedy_match_test,
    mann_whitney,
    metadata_test,
    mixture_share_modal,
    mmd_permutation_test,
    reference_likelihood_test,
    stratified_g_test,
    tokenizer_delta_test,
)
from aione_probe.fingerprint.profile import ProbeSummary, Profile
from aione_probe.fingerprint.verdict import SignalResult, Verdict, decide


@dataclass(frozen=True)
class MinSamples:
    """Smallest sample per side before a signal is tested (target side drives `needed`)."""

    categorical: int = 10
    text: int = 10
    identity: int = 3
    metadata: int = 5
    speed: int = 5
    tokenizer_unpaired: int = 2


@dataclass(frozen=True)
class AuditResult:
    """An audit's verdict with everything needed to store and explain it."""

    verdict: Verdict
    target: Profile
    reference: Profile
    substitution_share: ShareEstimate | None

    @property
    def details(self) -> dict[str, Any]:
        """The verdict row's ``details`` JSON."""
        share = self.substitution_share
        return {
            "verdict": str(self.verdict.verdict),
            "reason": self.verdict.reason,
            "signals": [s.to_dict() for s in self.verdict.signals],
            "combined": self.verdict.combined,
            "substitution_share": share.to_dict()
            if share
            else {"estimate": None, "ci_low": None, "ci_high": None, "method": None},
            "needed": self.verdict.needed,
            "probes": sorted({p for s in self.verdict.signals for p in s.probes}),
            "reference_id": self.reference.id,
            "reference": dataclasses.asdict(self.reference.provenance),
            "target": dataclasses.asdict(self.target.provenance),
        }

    def to_row(self, suite: str) -> dict[str, Any]:
        """Fields of the store's ``verdict`` table (kind ``authenticity``)."""
        return {
            "kind": "authenticity",
            "gateway": self.target.provenance.gateway,
            "model": self.target.provenance.model,
            "suite": suite,
            "verdict": str(self.verdict.verdict),
            "score": self.verdict.score,
            "alpha": self.verdict.alpha,
            "n": self.verdict.n,
            "baseline_id": self.reference.id,
            "details": self.details,
        }


def compare(
    observations_target: Iterable[Any],
    reference: Profile | Iterable[Any],
    *,
    alpha: float = 0.01,
    gateway: str = "",
    model: str = "",
    reference_gateway: str = "",
    reference_model: str = "",
    categories: Mapping[str, str] | None = None,
    seed: int = 0,
    n_perm: int = DEFAULT_PERMUTATIONS,
    min_samples: MinSamples | None = None,
    metadata: bool = True,
) -> AuditResult:
    """Audit target observations against a reference profile or reference observations.

    Args:
        observations_target: Observation-like objects of the (gateway, model) under audit.
        reference: A `Profile` (baseline or import) or observations of a trusted endpoint.
        alpha: Bound on the false-positive rate of a non-authentic verdict.
        gateway: Target gateway name (provenance).
        model: Target model name as requested (provenance).
        reference_gateway: Reference gateway name when `reference` is observations.
        reference_model: Reference model name when `reference` is observations.
        categories: Probe id → signal family (each probe's TOML ``category``); by default
            the shipped fingerprint suite's.
        seed: Seed of the permutation and bootstrap draws (same seed, same verdict).
        n_perm: Permutations per permutation test.
        min_samples: Per-signal minimum sample sizes.
        metadata: Compare response metadata (only against the target's own baseline).

    Returns:
        The verdict, both profiles and the substitution-share estimate.
    """
    target = Profile.from_observations(
        observations_target, gateway=gateway, model=model, source="target", categories=categories
    )
    if not isinstance(reference, Profile):
        reference = Profile.from_observations(
            reference,
            gateway=reference_gateway,
            model=reference_model,
            source="reference",
            categories=categories,
        )
    return compare_profiles(
        target,
        reference,
        alpha=alpha,
        seed=seed,
        n_perm=n_perm,
        min_samples=min_samples,
        metadata=metadata,
    )


def compare_profiles(
    target: Profile,
    reference: Profile,
    *,
    alpha: float = 0.01,
    seed: int = 0,
    n_perm: int = DEFAULT_PERMUTATIONS,
    min_samples: MinSamples | None = None,
    metadata: bool = True,
) -> AuditResult:
    """Audit a target profile against a reference profile (see `compare`).

    `metadata=False` (a trusted reference of another endpoint, an imported profile)
    leaves response metadata out: a relay rewrites ids and model names legitimately, so
    only the target's own baseline is a fair comparison for it."""
    ms = min_samples or MinSamples()
    rng = np.random.default_rng(seed)
    ref_id = reference.id
    signals = [
        _tokenizer(target, reference, ms, n_perm, rng),
        _categorical(target, reference, ms, n_perm, rng),
        _text(target, reference, ms, n_perm, rng),
        _greedy(target, reference),
        _metadata(target, reference, ms, n_perm, rng)
        if metadata
        else SignalResult(
            "metadata",
            "metadata_g_bonferroni",
            status="disabled",
            note="metadata is compared with the target's own baseline only",
        ),
        _identity(target, reference, ms, n_perm, rng),
        _speed(target, reference, ms),
    ]
    signals = [dataclasses.replace(s, baseline_id=ref_id) for s in signals]
    verdict = dataclasses.replace(decide(signals, alpha), baseline_id=ref_id)
    return AuditResult(verdict, target, reference, _share(signals, target, reference, rng))


# --- helpers ----------------------------------------------------------------------------------


def _shared(
    target: Profile, reference: Profile, category: str
) -> tuple[dict[str, ProbeSummary], dict[str, ProbeSummary], SignalResult | None]:
    """Probes of one family on both sides, or a non-ok SignalResult explaining why none."""
    t, r = target.by_category(category), reference.by_category(category)
    both = sorted(set(t) & set(r))
    ts = {h: t[h] for h in both if t[h].n_ok}
    rs = {h: r[h] for h in both if r[h].n_ok}
    if not t:
        return (
            {},
            {},
            SignalResult(
                category, "-", status="not_probed", note="no target observations of this family"
            ),
        )
    if both and all(not r[h].n_ok and r[h].n_failed for h in both):
        failed = sum(r[h].n_failed for h in both)
        return (
            {},
            {},
            SignalResult(
                category,
                "-",
                status="reference_error",
                probes=_ids(t, both),
                note=f"reference endpoint failed all {failed} requests of these probes",
            ),
        )
    if not both:
        return {}, {}, _missing(category, "reference has no observations of these probes")
    shared = sorted(set(ts) & set(rs))
    if not shared:
        return {}, {}, _missing(category, "no successful target observations of these probes")
    return {h: ts[h] for h in shared}, {h: rs[h] for h in shared}, None


def _missing(category: str, note: str, needed: int = 1) -> SignalResult:
    return SignalResult(category, "-", status="insufficient", needed=needed, note=note)


def _ids(summaries: Mapping[str, ProbeSummary], hashes: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({summaries[h].probe_id for h in hashes}))


def _from_stat(
    signal: str, res: StatResult, probes: tuple[str, ...], note: str = ""
) -> SignalResult:
    return SignalResult(
        signal,
        res.test,
        statistic=res.statistic,
        p_value=res.p_value,
        n=res.n_x,
        n_reference=res.n_y,
        probes=probes,
        note=note,
        extra={"method": res.method, "df": res.df, **res.extra},
    )


def _insufficient(
    signal: str, test: str, exc: InsufficientDataError, probes: Iterable[str] = ()
) -> SignalResult:
    return SignalResult(
        signal,
        test,
        status="insufficient",
        needed=exc.needed,
        probes=tuple(probes),
        note=exc.reason,
    )


# --- signals -----------------------------------------------------------------------------------


def _tokenizer(
    target: Profile, reference: Profile, ms: MinSamples, n_perm: int, rng: np.random.Generator
) -> SignalResult:
    t, r, problem = _shared(target, reference, "tokenizer")
    if problem:
        return dataclasses.replace(
            problem, test="tokenizer_delta_exact", needed=max(2, problem.needed)
        )
    probes = _ids(t, t)
    t_missing = sum(s.missing_usage for s in t.values())
    t_total = sum(s.n_ok for s in t.values())
    if t_missing == t_total:
        return SignalResult(
            "tokenizer",
            "tokenizer_delta_exact",
            status="disabled",
            probes=probes,
            note=f"gateway omitted usage.prompt_tokens on all {t_total} tokenizer requests",
        )
    if all(not s.prompt_tokens for s in r.values()):
        return SignalResult(
            "tokenizer",
            "tokenizer_delta_exact",
            status="disabled",
            probes=probes,
            note="reference omitted usage.prompt_tokens on every tokenizer request",
        )
    if target.base_tokens() is None or reference.base_tokens() is None:
        side = "target" if target.base_tokens() is None else "reference"
        return _missing("tokenizer", f"base prompt not observed on the {side} side")
    note = f"usage missing on {t_missing} of {t_total} requests" if t_missing else ""
    paired_t = {f"{h}|{k}": v for h, s in t.items() for k, v in s.deltas.items()}
    paired_r = {f"{h}|{k}": v for h, s in r.items() for k, v in s.deltas.items()}
    try:
        return _from_stat(
            "tokenizer", tokenizer_delta_test(paired_t, paired_r), probes, note or "paired canaries"
        )
    except InsufficientDataError:
        pass
    # Canaries rendered from different seeds (a baseline or an imported profile): the
    # per-probe distributions of delta values are compared by a stratified G statistic
    # whose p-value comes from permuting target/reference labels within each probe. The
    # former novelty + Mann–Whitney pair was anti-conservative (tied integer deltas, and a
    # "never seen" count that ignores how often the reference sees new values itself).
    strata = [
        (
            Counter(str(d) for v in s.deltas.values() for d in v),
            Counter(str(d) for v in r[h].deltas.values() for d in v),
        )
        for h, s in t.items()
    ]
    try:
        res = stratified_g_test(strata, min_per_side=ms.tokenizer_unpaired, n_perm=n_perm, rng=rng)
    except InsufficientDataError as exc:
        return SignalResult(
            "tokenizer",
            "tokenizer_delta_unpaired",
            status="insufficient",
            needed=exc.needed,
            probes=probes,
            note="no canary rendered identically on both sides; too few for an unpaired test",
        )
    return _from_stat(
        "tokenizer",
        dataclasses.replace(res, test="tokenizer_delta_permutation"),
        probes,
        (note + "; " if note else "") + "unpaired canaries (different seeds), permutation test",
    )


def _categorical(
    target: Profile, reference: Profile, ms: MinSamples, n_perm: int, rng: np.random.Generator
) -> SignalResult:
    t, r, problem = _shared(target, reference, "categorical")
    if problem:
        return dataclasses.replace(
            problem, test="g_test", needed=max(ms.categorical, problem.needed)
        )
    if _paired(t, r):
        prompts = [
            (t[h].answers_by_vars[k], r[h].answers_by_vars.get(k, {}))
            for h in t
            for k in t[h].answers_by_vars
        ]
        try:
            res = reference_likelihood_test(
                prompts, min_per_side=ms.categorical, n_perm=n_perm, rng=rng
            )
            return _from_stat(
                "categorical", res, _ids(t, t), "paired by rendered prompt, permuted within prompts"
            )
        except InsufficientDataError:
            pass  # too few repeated prompts yet: the pooled test below still applies
    strata = [(t[h].answers, r[h].answers) for h in t]
    try:
        res = stratified_g_test(strata, min_per_side=ms.categorical, n_perm=n_perm, rng=rng)
    except InsufficientDataError as exc:
        return _insufficient("categorical", "g_test", exc, _ids(t, t))
    return _from_stat("categorical", res, _ids(t, t), "stratified over probes")


def _paired(t: Mapping[str, ProbeSummary], r: Mapping[str, ProbeSummary]) -> bool:
    """Whether at least half of the target's categorical answers were given on prompts the
    reference also answered with the same rendered variables (as when both sides render
    from one seed, the service's reference comparison).

    Then `reference_likelihood_test` compares answers prompt by prompt; otherwise (a
    baseline or import rendered from other seeds) answers are pooled per probe, which is
    valid because each sample's variables are drawn independently from the same
    generator. The pooled test also runs when the paired one lacks answers on repeated
    prompts. Either test holds its level whichever is chosen; the choice reads only
    prompts and sample sizes, never answers, so it cannot bias the p-value.
    """
    total = shared = 0
    for h, s in t.items():
        ref = r[h].answers_by_vars
        for key, counts in s.answers_by_vars.items():
            n = sum(counts.values())
            total += n
            shared += n if sum(ref.get(key, {}).values()) else 0
    return total > 0 and 2 * shared >= total


def _text(
    target: Profile, reference: Profile, ms: MinSamples, n_perm: int, rng: np.random.Generator
) -> SignalResult:
    t, r, problem = _shared(target, reference, "categorical")
    if problem:
        return dataclasses.replace(
            problem, signal="text", test="mmd_ngram", needed=max(ms.text, problem.needed)
        )
    x = [s for h in t for s in t[h].texts]
    gx = [h for h in t for _ in t[h].texts]
    y = [s for h in r for s in r[h].texts]
    gy = [h for h in r for _ in r[h].texts]
    try:
        res = mmd_permutation_test(
            x, y, groups_x=gx, groups_y=gy, min_per_side=ms.text, n_perm=min(n_perm, 9999), rng=rng
        )
    except InsufficientDataError as exc:
        return _insufficient("text", "mmd_ngram", exc, _ids(t, t))
    return _from_stat("text", res, _ids(t, t), "char 3-gram kernel, permuted within prompts")


def _greedy(target: Profile, reference: Profile) -> SignalResult:
    t, r, problem = _shared(target, reference, "greedy")
    if problem:
        return dataclasses.replace(problem, test="greedy_exact_match")
    tx = {f"{h}|{k}": v for h, s in t.items() for k, v in s.greedy.items()}
    rx = {f"{h}|{k}": v for h, s in r.items() for k, v in s.greedy.items()}
    try:
        res = greedy_match_test(tx, rx)
    except InsufficientDataError as exc:
        return _insufficient("greedy", "greedy_exact_match", exc, _ids(t, t))
    return _from_stat("greedy", res, _ids(t, t), "temperature 0 is not fully deterministic")


def _metadata(
    target: Profile, reference: Profile, ms: MinSamples, n_perm: int, rng: np.random.Generator
) -> SignalResult:
    both = sorted(set(target.probes) & set(reference.probes))
    tm: dict[str, dict[str, int]] = {}
    rm: dict[str, dict[str, int]] = {}
    for h in both:
        for side, acc in ((target.probes[h], tm), (reference.probes[h], rm)):
            for feat, counts in side.metadata.items():
                bucket = acc.setdefault(feat, {})
                for value, c in counts.items():
                    bucket[value] = bucket.get(value, 0) + c
    probes = _ids(target.probes, both)
    if not both:
        return _missing("metadata", "no probe observed on both sides", ms.metadata)
    try:
        res = metadata_test(tm, rm, min_per_side=ms.metadata, n_perm=n_perm, rng=rng)
    except InsufficientDataError as exc:
        return _insufficient("metadata", "metadata_g_bonferroni", exc, probes)
    return _from_stat("metadata", res, probes, "weak: response metadata is easy to rewrite")


def _identity(
    target: Profile, reference: Profile, ms: MinSamples, n_perm: int, rng: np.random.Generator
) -> SignalResult:
    t, r, problem = _shared(target, reference, "identity")
    if problem:
        return dataclasses.replace(problem, test="g_test", needed=max(ms.identity, problem.needed))
    strata = [(t[h].answers, r[h].answers) for h in t]
    try:
        res = stratified_g_test(strata, min_per_side=ms.identity, n_perm=n_perm, rng=rng)
    except InsufficientDataError as exc:
        return _insufficient("identity", "g_test", exc, _ids(t, t))
    return _from_stat(
        "identity", res, _ids(t, t), "weak: self-reported identity and cutoff are easy to fake"
    )


def _speed(target: Profile, reference: Profile, ms: MinSamples) -> SignalResult:
    t, r, problem = _shared(target, reference, "speed")
    if problem:
        return dataclasses.replace(
            problem, test="mann_whitney", needed=max(ms.speed, problem.needed)
        )
    results: dict[str, StatResult] = {}
    short = ms.speed
    # One-sided: only a target *faster* than the claimed model allows is evidence (more
    # tokens per second, or an earlier first token); any relay legitimately adds delay.
    for name, alternative in (("tps", "greater"), ("ttft", "less")):
        xs = [v for s in t.values() for v in getattr(s, name)]
        ys = [v for s in r.values() for v in getattr(s, name)]
        try:
            results[name] = mann_whitney(xs, ys, min_per_side=ms.speed, alternative=alternative)
        except InsufficientDataError as exc:
            short = min(short, exc.needed)
    if not results:
        return SignalResult(
            "speed",
            "mann_whitney",
            status="insufficient",
            needed=short,
            probes=_ids(t, t),
            note="too few timed streaming responses",
        )
    best = min(results, key=lambda k: results[k].p_value)
    res = results[best]
    return SignalResult(
        "speed",
        f"mann_whitney_{best}_bonferroni",
        statistic=res.statistic,
        p_value=min(1.0, res.p_value * len(results)),
        n=res.n_x,
        n_reference=res.n_y,
        probes=_ids(t, t),
        note="one-sided: only faster than the reference counts (a relay adds delay)",
        extra={k: {"p_value": v.p_value, **v.extra} for k, v in results.items()},
    )


def _share(
    signals: list[SignalResult], target: Profile, reference: Profile, rng: np.random.Generator
) -> ShareEstimate | None:
    """Substituted share: the tokenizer mismatch rate when canaries disagree (exact for a
    cross-tokenizer substitute), else the modal-answer estimate over categorical probes."""
    tok = next(s for s in signals if s.signal == "tokenizer")
    if tok.status == "ok" and tok.statistic and "share" in tok.extra:
        d = tok.extra["share"]
        return ShareEstimate(d["estimate"], d["ci_low"], d["ci_high"], d["method"], d["n"])
    t, r, problem = _shared(target, reference, "categorical")
    if problem:
        return None
    try:
        return mixture_share_modal([(t[h].answers, r[h].answers) for h in t], rng=rng)
    except InsufficientDataError:
        return None
