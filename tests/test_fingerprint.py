"""Tests of the authenticity fingerprint: statistics (calibration and power), profiles,
verdict rules, the audit over toy endpoints, and the fingerprint suite file."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from aione_probe.analysis.stats import (
    InsufficientDataError,
    acat,
    exact_match_test,
    g_test,
    greedy_match_test,
    holm,
    mann_whitney,
    metadata_test,
    mismatch_share,
    mixture_share_modal,
    mmd_permutation_test,
    reference_likelihood_test,
    stratified_g_test,
    tokenizer_delta_test,
)
from aione_probe.errors import FailureKind
from aione_probe.fingerprint import (
    Profile,
    SignalResult,
    VerdictKind,
    compare,
    decide,
)
from aione_probe.fingerprint.features import (
    FAMILIES,
    category_of,
    id_shape,
    identity_label,
    model_echo,
    normalize_answer,
)

SUITE = Path(__file__).resolve().parents[1] / "probes" / "fingerprint.toml"
CATS = [f"c{i}" for i in range(8)]


def _counts(rng: np.random.Generator, probs: np.ndarray, n: int) -> dict[str, int]:
    draws = rng.multinomial(n, probs)
    return {CATS[i]: int(c) for i, c in enumerate(draws) if c}


def _upper_bound(alpha: float, reps: int) -> float:
    """Rejection rate a calibrated test stays under with high probability (3 sigma)."""
    return alpha + 3 * (alpha * (1 - alpha) / reps) ** 0.5


# --- categorical -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [15, 80])
def test_g_test_null_calibrated(n: int) -> None:
    rng = np.random.default_rng(1)
    probs = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.015, 0.005])
    reps, alpha = 300, 0.05
    rejections = sum(
        g_test(_counts(rng, probs, n), _counts(rng, probs, n), n_perm=199, rng=rng).p_value <= alpha
        for _ in range(reps)
    )
    assert rejections / reps <= _upper_bound(alpha, reps)


def test_g_test_power_on_different_distributions() -> None:
    rng = np.random.default_rng(2)
    p = np.array([0.5, 0.3, 0.1, 0.1, 0, 0, 0, 0])
    q = np.array([0.1, 0.1, 0.3, 0.5, 0, 0, 0, 0])
    hits = sum(
        g_test(_counts(rng, p, 40), _counts(rng, q, 40), rng=rng).p_value <= 0.01
        for _ in range(100)
    )
    assert hits >= 95


def test_g_test_methods_and_degenerate() -> None:
    big = g_test({"a": 60, "b": 40}, {"a": 55, "b": 45})
    assert big.method == "asymptotic" and big.df == 1
    sparse = g_test({"a": 5}, {"b": 5}, rng=0)
    assert sparse.method == "permutation"
    # Perfect separation at 5 vs 5: the exact permutation p is 2/252.
    assert sparse.p_value < 0.02
    assert g_test({"a": 9}, {"a": 7}).p_value == 1.0
    assert g_test({"a": 9}, {"a": 7}, statistic="pearson").test == "chi_square"


def test_g_test_insufficient_reports_needed() -> None:
    with pytest.raises(InsufficientDataError) as err:
        g_test({"a": 2}, {"a": 10, "b": 3}, min_per_side=5)
    assert err.value.needed == 3


def test_stratified_g_test_adds_strata() -> None:
    one = g_test({"a": 60, "b": 40}, {"a": 40, "b": 60})
    two = stratified_g_test([({"a": 60, "b": 40}, {"a": 40, "b": 60})] * 2)
    assert two.statistic == pytest.approx(2 * one.statistic)
    assert two.df == 2 and two.p_value < one.p_value


def _prompt_strata(
    rng: np.random.Generator,
    dists: list[np.ndarray],
    n: int,
    alt: list[np.ndarray] | None = None,
    share: float = 0.0,
) -> list[tuple[dict[str, int], dict[str, int]]]:
    """(target, reference) answer counts per prompt; a `share` of target answers from `alt`."""
    out = []
    for i, p in enumerate(dists):
        k = rng.binomial(n, share) if alt is not None else 0
        target = Counter(_counts(rng, p, n - k)) + Counter(_counts(rng, alt[i], k) if k else {})
        out.append((dict(target), _counts(rng, p, n)))
    return out


@pytest.mark.parametrize(("prompts", "n"), [(6, 3), (4, 12)])
def test_reference_likelihood_null_calibrated(prompts: int, n: int) -> None:
    rng = np.random.default_rng(21)
    reps = 300
    for alpha in (0.05, 0.01):
        rejections = 0
        for _ in range(reps):
            dists = [rng.dirichlet(np.full(len(CATS), 0.5)) for _ in range(prompts)]
            strata = _prompt_strata(rng, dists, n)
            res = reference_likelihood_test(strata, min_per_side=2, n_perm=199, rng=rng)
            rejections += res.p_value <= alpha
        assert rejections / reps <= _upper_bound(alpha, reps)


def test_reference_likelihood_sees_per_prompt_differences_pooling_hides() -> None:
    # Per prompt the target prefers the other answer; pooled over both prompts the two
    # sides have the same distribution, so the per-probe G-test has no power.
    rng = np.random.default_rng(22)
    p, q = np.array([0.9, 0.1, 0, 0, 0, 0, 0, 0]), np.array([0.1, 0.9, 0, 0, 0, 0, 0, 0])
    hits = pooled_hits = 0
    for _ in range(50):
        strata = [
            (_counts(rng, q, 15), _counts(rng, p, 15)),
            (_counts(rng, p, 15), _counts(rng, q, 15)),
        ]
        hits += reference_likelihood_test(strata, n_perm=999, rng=rng).p_value <= 0.01
        pooled = (
            Counter(strata[0][0]) + Counter(strata[1][0]),
            Counter(strata[0][1]) + Counter(strata[1][1]),
        )
        pooled_hits += g_test(*pooled, n_perm=999, rng=rng).p_value <= 0.01
    assert hits >= 48 and pooled_hits <= 3


def test_reference_likelihood_power_on_a_mixture() -> None:
    rng = np.random.default_rng(23)
    hits = 0
    for _ in range(40):
        dists = [rng.dirichlet(np.full(len(CATS), 0.3)) for _ in range(8)]
        alt = [rng.dirichlet(np.full(len(CATS), 0.3)) for _ in range(8)]
        strata = _prompt_strata(rng, dists, 20, alt=alt, share=0.3)
        hits += reference_likelihood_test(strata, n_perm=999, rng=rng).p_value <= 0.01
    assert hits >= 32


def test_reference_likelihood_needs_repeated_reference_answers() -> None:
    # One reference answer per prompt: no within-prompt information.
    with pytest.raises(InsufficientDataError):
        reference_likelihood_test([({"a": 1}, {"b": 1})] * 20)
    res = reference_likelihood_test([({"a": 3}, {"a": 3})] * 3 + [({"a": 1}, {"b": 1})], rng=0)
    assert res.p_value == 1.0 and res.extra["strata"] == 3 and res.extra["strata_dropped"] == 1


# --- text MMD -------------------------------------------------------------------------------


def _texts(rng: np.random.Generator, vocab: list[str], probs: list[float], n: int) -> list[str]:
    return [str(rng.choice(vocab, p=probs)) for _ in range(n)]


@pytest.mark.parametrize("kernel", ["ngram", "hamming"])
def test_mmd_null_calibrated(kernel: str) -> None:
    rng = np.random.default_rng(3)
    vocab = ["The sky is blue.", "Blue!", "Sky blue", "It is blue", "Azure."]
    probs = [0.4, 0.2, 0.2, 0.1, 0.1]
    reps, alpha = 150, 0.05
    rejections = 0
    for _ in range(reps):
        x = _texts(rng, vocab, probs, 12) + _texts(rng, vocab[::-1], probs, 12)
        y = _texts(rng, vocab, probs, 12) + _texts(rng, vocab[::-1], probs, 12)
        groups = ["p1"] * 12 + ["p2"] * 12
        res = mmd_permutation_test(
            x, y, groups_x=groups, groups_y=groups, kernel=kernel, n_perm=99, rng=rng
        )
        rejections += res.p_value <= alpha
    assert rejections / reps <= _upper_bound(alpha, reps)


def test_mmd_power_and_insufficient() -> None:
    rng = np.random.default_rng(4)
    x = _texts(rng, ["red", "crimson", "scarlet"], [0.6, 0.2, 0.2], 20)
    y = _texts(rng, ["blue", "navy blue", "azure"], [0.6, 0.2, 0.2], 20)
    assert mmd_permutation_test(x, y, rng=rng).p_value <= 0.01
    with pytest.raises(InsufficientDataError):
        mmd_permutation_test(x[:3], y, rng=rng)
    with pytest.raises(InsufficientDataError):
        mmd_permutation_test(x, y, groups_x=["a"] * 20, groups_y=["b"] * 20)


# --- greedy ---------------------------------------------------------------------------------


def test_greedy_match_test() -> None:
    ref = {"k1": ["alpha beta", "alpha beta", "alpha beta"], "k2": ["x y", "x y"]}
    same = greedy_match_test({"k1": ["alpha beta"], "k2": ["x y"]}, ref)
    assert same.p_value == 1.0 and same.extra["mean_ngram_similarity"] == pytest.approx(1.0)
    ref_many = {f"k{i}": ["stable text"] * 3 for i in range(8)}
    diff = greedy_match_test({f"k{i}": ["other words"] for i in range(8)}, ref_many)
    assert diff.p_value <= 0.01
    with pytest.raises(InsufficientDataError):
        greedy_match_test({"k1": ["a"]}, {"k1": ["a"]})
    with pytest.raises(InsufficientDataError):
        exact_match_test(0, 0, 3, 3)


def test_exact_match_null_calibrated() -> None:
    rng = np.random.default_rng(5)
    reps, alpha = 400, 0.05
    rejections = 0
    for _ in range(reps):
        tm, rm = rng.binomial(20, 0.8), rng.binomial(20, 0.8)
        rejections += exact_match_test(int(tm), 20, int(rm), 20).p_value <= alpha
    assert rejections / reps <= _upper_bound(alpha, reps)


# --- tokenizer ------------------------------------------------------------------------------


def test_tokenizer_delta_exact() -> None:
    ref = {"a": [12], "b": [8], "c": [24], "d": [5]}
    assert tokenizer_delta_test(dict(ref), ref).p_value == 1.0
    one = tokenizer_delta_test({"a": [13], "b": [8], "c": [24], "d": [5]}, ref)
    assert one.extra["mismatches"] == 1 and one.p_value == pytest.approx(4e-3, rel=0.01)
    cross = tokenizer_delta_test({"a": [18], "b": [16], "c": [12], "d": [7]}, ref)
    assert cross.p_value < 1e-10 and cross.extra["share"]["estimate"] == 1.0
    with pytest.raises(InsufficientDataError):
        tokenizer_delta_test({"z": [1]}, ref)


def test_tokenizer_delta_realigns_a_substituted_base() -> None:
    ref = {f"k{i}": [10 + i] for i in range(10)}
    # The target's base prompt was answered by a substitute whose template adds 2 tokens:
    # every genuine delta is 2 low; canaries k7..k9 were substituted as well.
    target = {f"k{i}": [10 + i - 2 if i < 7 else 30 + i] for i in range(10)}
    res = tokenizer_delta_test(target, ref)
    assert res.extra["base_shift"] == -2 and res.extra["mismatches"] == 3
    assert res.extra["share"]["estimate"] == pytest.approx(0.3) and res.p_value < 1e-6
    honest = tokenizer_delta_test({k: list(v) for k, v in ref.items()}, ref)
    assert honest.extra["base_shift"] == 0 and honest.p_value == 1.0


def test_tokenizer_delta_noisy_reference_raises_noise_rate() -> None:
    ref = {"a": [12, 12, 12, 13], "b": [8, 8, 8, 8]}
    res = tokenizer_delta_test({"a": [13], "b": [8]}, ref)
    assert res.extra["noise_rate"] == pytest.approx(1 / 8)
    assert res.p_value > 0.2


def _unpaired(tgt: dict[str, list[int]], ref: dict[str, list[int]], rng) -> float:
    """The audit's unpaired tokenizer test: delta distributions per probe, permuted."""
    strata = [(Counter(map(str, tgt[h])), Counter(map(str, ref[h]))) for h in tgt]
    return stratified_g_test(strata, min_per_side=2, n_perm=199, rng=rng).p_value


def test_unpaired_tokenizer_test_rejects_another_tokenizer() -> None:
    rng = np.random.default_rng(5)
    ref = {"cjk": [12] * 30, "emoji": [8] * 30}
    assert _unpaired({"cjk": [12, 12], "emoji": [8, 8]}, ref, rng) == 1.0
    assert _unpaired({"cjk": [24] * 4, "emoji": [16] * 4}, ref, rng) < 0.01


def test_unpaired_tokenizer_test_holds_its_level() -> None:
    # The former novelty + Mann–Whitney pair rejected 7–100x too often at small alpha;
    # the permutation test is exact for exchangeable canaries.
    rng = np.random.default_rng(11)
    reps, alpha = 200, 0.05
    rejections = 0
    for _ in range(reps):
        ref = {"cjk": list(rng.poisson(14, 20)), "hex": list(rng.poisson(20, 20))}
        tgt = {"cjk": list(rng.poisson(14, 5)), "hex": list(rng.poisson(20, 5))}
        rejections += _unpaired(tgt, ref, rng) <= alpha
    assert rejections / reps <= _upper_bound(alpha, reps)


# --- speed ----------------------------------------------------------------------------------


def test_mann_whitney_calibration_power_insufficient() -> None:
    rng = np.random.default_rng(6)
    reps, alpha = 400, 0.05
    null = sum(
        mann_whitney(rng.lognormal(4, 0.2, 10), rng.lognormal(4, 0.2, 10)).p_value <= alpha
        for _ in range(reps)
    )
    assert null / reps <= _upper_bound(alpha, reps)
    power = sum(
        mann_whitney(rng.normal(60, 5, 20), rng.normal(120, 10, 20)).p_value <= 0.01
        for _ in range(50)
    )
    assert power == 50
    with pytest.raises(InsufficientDataError) as err:
        mann_whitney([1.0, 2.0], [1.0] * 9)
    assert err.value.needed == 3


# --- metadata -------------------------------------------------------------------------------


def test_metadata_test() -> None:
    ref = {"id_shape": {"chatcmpl-alnum29": 12}, "fingerprint_shape": {"fp_hex10": 12}}
    same = metadata_test(dict(ref), ref, rng=0)
    assert same.p_value == 1.0 and same.extra["novel"] == {}
    other = {"id_shape": {"msg_alnum24": 12}, "fingerprint_shape": {"fp_hex10": 12}}
    diff = metadata_test(other, ref, rng=0)
    assert diff.p_value <= 0.01 and diff.extra["novel"] == {"id_shape": ["msg_alnum24"]}
    with pytest.raises(InsufficientDataError):
        metadata_test({"id_shape": {"x": 2}}, ref)


# --- combination ----------------------------------------------------------------------------


def test_acat_and_holm() -> None:
    assert acat([0.03]) == pytest.approx(0.03)
    assert acat([0.0, 0.5]) == 0.0
    assert acat([1e-20, 0.9, 0.9]) < 1e-19
    rng = np.random.default_rng(7)
    reps, alpha = 5000, 0.01
    # Strongly dependent p-values (Gaussian copula, correlation 0.8) with uniform marginals.
    z = 0.8**0.5 * rng.normal(size=(reps, 1)) + 0.2**0.5 * rng.normal(size=(reps, 4))
    ps = stats.norm.sf(z)
    rate = np.mean([acat(row) <= alpha for row in ps])
    assert rate <= _upper_bound(alpha, reps)
    rejected, adjusted = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert rejected == [True, False, False, True]


# --- mixture share --------------------------------------------------------------------------


def test_mixture_share_modal_recovers_share() -> None:
    rng = np.random.default_rng(9)
    p = np.array([0.6, 0.3, 0.1, 0, 0, 0, 0, 0])
    q = np.array([0, 0.1, 0.1, 0.4, 0.4, 0, 0, 0])
    strata = []
    for _ in range(5):
        strata.append((_counts(rng, 0.8 * p + 0.2 * q, 60), _counts(rng, p, 400)))
    est = mixture_share_modal(strata, rng=rng)
    assert est.ci_low <= 0.2 <= est.ci_high
    assert est.ci_high - est.ci_low < 0.3
    covered = sum(
        mixture_share_modal(
            [(_counts(rng, p, 300), _counts(rng, p, 400))], n_boot=500, rng=rng
        ).ci_low
        == 0.0
        for _ in range(100)
    )
    assert covered >= 90
    with pytest.raises(InsufficientDataError):
        mixture_share_modal([({}, {"a": 3})])


def test_mismatch_share_interval() -> None:
    est = mismatch_share(10, 100)
    assert est.estimate == 0.1 and est.ci_low < 0.1 < est.ci_high


# --- verdict rules --------------------------------------------------------------------------


def _sig(signal: str, p: float | None, status: str = "ok", needed: int = 0) -> SignalResult:
    return SignalResult(signal, "t", status=status, p_value=p, n=10, needed=needed)


def test_decide_rules() -> None:
    v = decide([_sig("tokenizer", None, "insufficient", 2), _sig("speed", 0.5)])
    assert v.verdict is VerdictKind.insufficient_data and v.needed == 2
    v = decide([_sig("tokenizer", 1e-8), _sig("categorical", 0.4), _sig("speed", 0.3)])
    assert v.verdict is VerdictKind.substituted and v.score < 0.01
    assert [s.result for s in v.signals] == ["reject", "accept", "accept"]
    v = decide([_sig("categorical", 0.5), _sig("metadata", 1e-6)])
    assert v.verdict is VerdictKind.suspect
    v = decide([_sig("categorical", 0.5), _sig("greedy", 0.2), _sig("metadata", 0.3)])
    assert v.verdict is VerdictKind.authentic and v.score > 0.01
    v = decide([_sig("tokenizer", None, "reference_error"), _sig("metadata", 0.3)])
    assert v.verdict is VerdictKind.insufficient_data and "reference" in v.reason
    with pytest.raises(ValueError):
        decide([], alpha=0)


def test_decide_false_positive_rate_under_null() -> None:
    rng = np.random.default_rng(10)
    reps, alpha = 3000, 0.05
    names = ["tokenizer", "categorical", "text", "greedy", "metadata", "speed"]
    bad = sum(
        decide(
            [_sig(n, float(p)) for n, p in zip(names, rng.uniform(size=6), strict=True)], alpha
        ).verdict
        is not VerdictKind.authentic
        for _ in range(reps)
    )
    assert bad / reps <= _upper_bound(alpha, reps)


# --- toy endpoints for audit tests ----------------------------------------------------------

CAT_PROBES = ["cat-number", "cat-colour", "cat-animal", "cat-fruit"]
ANSWERS = ["red", "blue", "green", "teal", "gold", "plum", "grey", "rose"]


def _persona(seed: int, tokens_per_cjk: int = 1, id_prefix: str = "chatcmpl-") -> dict:
    rng = np.random.default_rng(seed)
    return {
        "dists": {p: rng.dirichlet(np.full(len(ANSWERS), 0.4)) for p in CAT_PROBES},
        "cjk": tokens_per_cjk,
        "id_prefix": id_prefix,
        "greedy": f"The keeper saw {seed} ships",
        "tps": 60.0 + seed,
    }


def _obs(probe_id: str, content: str = "", vars_: dict | None = None, **kw) -> SimpleNamespace:
    base = {
        "probe_id": probe_id,
        "probe_hash": f"h-{probe_id}",
        "vars": vars_ or {},
        "content": content,
        "model": "m-1",
        "response_model": "m-1",
        "response_id": "chatcmpl-" + "a" * 29,
        "system_fingerprint": "fp_0123456789",
        "prompt_tokens": 20,
        "completion_tokens": 1,
        "usage_raw": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
        "first_token_s": 0.3,
        "output_tps": None,
        "stream": False,
        "chunk_count": 0,
        "tool_calls": [],
        "failure": "ok",
    }
    base.update(kw)
    return SimpleNamespace(**base)


def _endpoint(
    persona: dict,
    *,
    samples: int,
    seed: int,
    alt: dict | None = None,
    share: float = 0.0,
    canaries: int = 4,
    usage: bool = True,
    fail: bool = False,
) -> list[SimpleNamespace]:
    """Observations of a toy endpoint serving `persona`, or `alt` for `share` of requests."""
    rng = np.random.default_rng(seed)

    def who() -> dict:
        return alt if alt is not None and rng.uniform() < share else persona

    out: list[SimpleNamespace] = []

    def add(o: SimpleNamespace) -> None:
        if not usage:
            o.prompt_tokens, o.usage_raw = None, None
        if fail:
            o.failure, o.content = "http_5xx", ""
        out.append(o)

    add(_obs("tok-base", "OK", prompt_tokens=20))
    for k in range(canaries):
        n_chars = 6 + k % 4  # canaries rendered from a fixed seed: identical on both sides
        p = who()
        add(_obs("tok-cjk", "OK", {"s": "字" * n_chars}, prompt_tokens=20 + n_chars * p["cjk"]))
    for probe in CAT_PROBES:
        for _ in range(samples):
            p = who()
            add(_obs(probe, str(rng.choice(ANSWERS, p=p["dists"][probe]))))
    for i in range(2):
        p = who()
        add(_obs("greedy-continue", p["greedy"], response_id=p["id_prefix"] + "b" * 29))
        add(
            _obs(
                "speed-paragraph",
                "text",
                stream=True,
                output_tps=float(rng.normal(p["tps"], 2.0)),
                first_token_s=float(rng.normal(0.3, 0.02)),
                completion_tokens=64,
                chunk_count=66,
            )
        )
        add(_obs("meta-plain", f"hello {i}", response_id=p["id_prefix"] + "c" * 29))
    return out


def _audit(target, reference, alpha: float = 0.01):
    return compare(target, reference, alpha=alpha, gateway="g", model="m-1")


def test_audit_same_model_is_authentic() -> None:
    honest = _persona(1)
    res = _audit(_endpoint(honest, samples=25, seed=2), _endpoint(honest, samples=60, seed=3))
    assert res.verdict.verdict is VerdictKind.authentic
    details = res.details
    assert {s["signal"] for s in details["signals"]} >= {"tokenizer", "categorical", "text"}
    tok = next(s for s in details["signals"] if s["signal"] == "tokenizer")
    assert tok["p_value"] == 1.0 and tok["baseline_id"] == res.reference.id
    assert details["substitution_share"]["ci_low"] == 0.0
    json.dumps(details)
    row = res.to_row("fingerprint")
    assert row["kind"] == "authenticity" and row["verdict"] == "authentic"


def test_audit_null_false_positive_rate() -> None:
    honest = _persona(11)
    reps, alpha = 60, 0.05
    bad = sum(
        _audit(
            _endpoint(honest, samples=15, seed=100 + i),
            _endpoint(honest, samples=40, seed=900 + i),
            alpha,
        ).verdict.verdict
        is not VerdictKind.authentic
        for i in range(reps)
    )
    assert bad / reps <= _upper_bound(alpha, reps)


def test_audit_cross_tokenizer_is_substituted_with_few_requests() -> None:
    ref = _endpoint(_persona(1), samples=40, seed=3)
    target = [o for o in _endpoint(_persona(2, tokens_per_cjk=2), samples=1, seed=4)]
    target = [o for o in target if o.probe_id.startswith("tok-")]
    assert len(target) == 5
    res = _audit(target, ref)
    assert res.verdict.verdict is VerdictKind.substituted
    assert res.substitution_share is not None and res.substitution_share.estimate == 1.0


def test_audit_same_tokenizer_other_model_is_substituted() -> None:
    res = _audit(
        _endpoint(_persona(5), samples=25, seed=4), _endpoint(_persona(1), samples=60, seed=3)
    )
    assert res.verdict.verdict is VerdictKind.substituted
    cat = next(s for s in res.verdict.signals if s.signal == "categorical")
    assert cat.result == "reject"


def test_audit_intermittent_substitution_share() -> None:
    honest, alt = _persona(1), _persona(5)
    res = _audit(
        _endpoint(honest, samples=100, seed=7, alt=alt, share=0.3),
        _endpoint(honest, samples=300, seed=8),
    )
    assert res.verdict.verdict is not VerdictKind.authentic
    share = res.substitution_share
    assert share is not None and share.ci_high > 0.05 and share.ci_low < 0.3


def test_audit_pairs_categorical_answers_by_rendered_prompt() -> None:
    honest = _persona(1)
    target = _endpoint(honest, samples=25, seed=2)
    reference = _endpoint(honest, samples=25, seed=3)
    for obs in (target, reference):
        for i, o in enumerate(x for x in obs if x.probe_id in CAT_PROBES):
            o.vars = {"ask": f"v{i % 3}"}
    cat = next(s for s in _audit(target, reference).verdict.signals if s.signal == "categorical")
    assert cat.test == "reference_likelihood" and cat.extra["strata"] == 3 * len(CAT_PROBES)
    for o in reference:  # rendered from another seed: no prompt in common, pooled per probe
        if o.probe_id in CAT_PROBES:
            o.vars = {"ask": "w" + o.vars["ask"]}
    cat = next(s for s in _audit(target, reference).verdict.signals if s.signal == "categorical")
    assert cat.test == "g_test"


def test_audit_unpaired_canaries_and_imported_profile() -> None:
    ref_obs = _endpoint(_persona(1), samples=40, seed=3, canaries=40)
    for o in ref_obs:
        if o.probe_id == "tok-cjk":  # rendered from another seed: no shared canary
            o.vars = {"s": o.vars["s"] + "x"}
    imported = Profile.from_dict(
        json.loads(
            json.dumps(
                Profile.from_observations(
                    ref_obs, gateway="ref", model="m-1", source="reference"
                ).to_dict()
            )
        )
    )
    honest = _audit(_endpoint(_persona(1), samples=20, seed=4), imported)
    tok = next(s for s in honest.verdict.signals if s.signal == "tokenizer")
    assert "unpaired" in tok.note and tok.p_value == 1.0
    assert honest.verdict.verdict is VerdictKind.authentic
    assert honest.details["reference"]["gateway"] == "ref"
    cross = _audit(_endpoint(_persona(1, tokens_per_cjk=3), samples=20, seed=4), imported)
    assert cross.verdict.verdict is VerdictKind.substituted


def test_audit_usage_missing_disables_tokenizer() -> None:
    honest = _persona(1)
    res = _audit(
        _endpoint(honest, samples=20, seed=2, usage=False), _endpoint(honest, samples=40, seed=3)
    )
    tok = next(s for s in res.verdict.signals if s.signal == "tokenizer")
    assert tok.status == "disabled" and "usage" in tok.note
    assert res.verdict.verdict is not VerdictKind.insufficient_data


def test_audit_reference_errors_are_not_mismatches() -> None:
    honest = _persona(1)
    res = _audit(
        _endpoint(honest, samples=20, seed=2), _endpoint(honest, samples=20, seed=3, fail=True)
    )
    assert res.verdict.verdict is VerdictKind.insufficient_data
    assert "reference endpoint failed" in res.verdict.reason


def test_audit_partial_reference_errors_are_not_mismatches() -> None:
    honest = _persona(1)
    ref = _endpoint(honest, samples=40, seed=3)
    for o in ref:
        if o.probe_id.startswith("cat-"):
            o.failure, o.content = FailureKind.rate_limited, ""
    res = _audit(_endpoint(honest, samples=20, seed=2), ref)
    by_signal = {s.signal: s for s in res.verdict.signals}
    assert by_signal["categorical"].status == "reference_error"
    assert by_signal["text"].status == "reference_error"
    assert by_signal["categorical"].p_value is None
    assert by_signal["tokenizer"].status == "ok"
    assert res.verdict.verdict is VerdictKind.authentic


def test_audit_too_few_samples_reports_needed() -> None:
    honest = _persona(1)
    target = [o for o in _endpoint(honest, samples=1, seed=2) if o.probe_id.startswith("cat-")]
    res = _audit(target[:4], _endpoint(honest, samples=40, seed=3))
    assert res.verdict.verdict is VerdictKind.insufficient_data
    assert res.verdict.needed == 6
    assert res.details["needed"] == 6


# --- profile --------------------------------------------------------------------------------


def test_profile_roundtrip_and_provenance() -> None:
    obs = _endpoint(_persona(1), samples=5, seed=2)
    prof = Profile.from_observations(obs, gateway="ref", model="m-1", source="reference")
    data = json.loads(json.dumps(prof.to_dict()))
    again = Profile.from_dict(data)
    assert again.id == prof.id and again.to_dict() == prof.to_dict()
    assert prof.provenance.n_samples == len(obs) and prof.provenance.gateway == "ref"
    cjk = prof.probes["h-tok-cjk"]
    assert sorted(d for v in cjk.deltas.values() for d in v) == [6, 7, 8, 9]
    with pytest.raises(ValueError):
        Profile.from_dict({**data, "format": 99})
    with pytest.raises(ValueError):
        Profile.from_dict({"format": 1, "provenance": {}, "probes": {}})


# --- features -------------------------------------------------------------------------------


def test_features() -> None:
    assert normalize_answer("  Blue!\n") == "blue"
    assert normalize_answer("...") == "<empty>"
    assert id_shape("chatcmpl-" + "Ab3" * 9 + "xy") == "chatcmpl-alnum29"
    assert id_shape("fp_0123abcd9f") == "fp_hex10"
    assert id_shape(None) == "absent"
    assert model_echo("gpt-4o", "gpt-4o") == "exact"
    assert model_echo("gpt-4o", "GPT-4o") == "case"
    assert model_echo("gpt-4o", "gpt-4o-2024-08-06") == "snapshot"
    assert model_echo("gpt-4o", "llama-3") == "other"
    assert identity_label("I am Claude, made by Anthropic.") == "vendor:anthropic"
    assert identity_label("October 2023") == "year:2023"
    assert category_of("tok-cjk") == "tokenizer"
    assert category_of("x-1", {"x-1": "speed"}) == "speed"
    assert category_of("fact-gold") is None


def test_suite_probes_are_tagged_with_families() -> None:
    suite = tomllib.loads(SUITE.read_text())
    probes = suite["probe"]
    ids = [p["id"] for p in probes]
    assert len(ids) == len(set(ids))
    for p in probes:
        assert p["category"] in FAMILIES
        assert category_of(p["id"]) == p["category"], p["id"]
    by_family = Counter(p["category"] for p in probes)
    assert set(by_family) == set(FAMILIES)
    assert "tok-base" in ids
    base = next(p for p in probes if p["id"] == "tok-base")["prompt"]
    for p in probes:
        if p["category"] == "tokenizer" and p["id"] != "tok-base":
            assert p["prompt"].startswith(base + "\n")
    defaults = suite["suite"]["defaults"]
    for p in probes:
        if p["category"] == "categorical":
            assert p.get("temperature", defaults["temperature"]) == 1.0
            assert p.get("samples", 1) >= 5
        if p["category"] == "greedy":
            # Templated, but both samples of a run share one rendering: the reference's
            # own pair of answers is the greedy tolerance (fingerprint.evidence).
            assert p["temperature"] == 0.0 and p.get("samples", 1) >= 2
            assert p.get("vary_per_sample") is False
