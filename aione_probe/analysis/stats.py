"""Two-sample tests, p-value combination and mixture-share estimates for authenticity signals.

Every function is pure: counts, numbers or strings in, a `StatResult` (or a float) out.
A function that cannot run on the data it was given raises `InsufficientDataError` with
the number of extra samples it needs, so callers can report ``insufficient_data`` instead
of a fake p-value. Permutation p-values use Besag–Clifford sequential stopping (see
`_sequential_perm_p`), valid for any number of draws.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import sparse, stats

DEFAULT_PERMUTATIONS = 49_999
#: Largest p-value the Cauchy combination uses (see `acat`).
ACAT_P_MAX = 0.99


class InsufficientDataError(ValueError):
    """The test cannot run yet; `needed` more samples (on the short side) are required."""

    def __init__(self, reason: str, needed: int) -> None:
        super().__init__(f"{reason} (need {needed} more)")
        self.reason = reason
        self.needed = max(1, int(needed))


@dataclass(frozen=True)
class StatResult:
    """One test's outcome: name, statistic, p-value, sample sizes and how p was computed.

    `method` is ``asymptotic``, ``permutation``, ``exact`` or ``degenerate`` (no variation
    at all: p = 1). `extra` holds test-specific figures (mismatch counts, similarities).
    """

    test: str
    statistic: float
    p_value: float
    n_x: int
    n_y: int
    method: str = "asymptotic"
    df: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShareEstimate:
    """Estimated share of substituted responses with a confidence interval."""

    estimate: float
    ci_low: float
    ci_high: float
    method: str
    n: int
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "method": self.method,
            "n": self.n,
            "level": self.level,
        }


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# --- categorical answers: G-test / chi-square ---------------------------------------------


def _table(x: Mapping[str, int], y: Mapping[str, int]) -> np.ndarray:
    cats = sorted({k for k, v in x.items() if v} | {k for k, v in y.items() if v})
    return np.array([[x.get(c, 0) for c in cats], [y.get(c, 0) for c in cats]], dtype=float)


def _merge_sparse(table: np.ndarray, min_expected: float) -> np.ndarray:
    """Merge the rarest answers together until every column's smallest expected count is
    at least `min_expected` (or one column is left).

    Merging reads only the margins, which permutation leaves unchanged, so merging never
    peeks at which side gave which answer.
    """
    rows = table.sum(axis=1)
    threshold = min_expected * rows.sum() / rows.min()
    columns = sorted((table[:, i] for i in range(table.shape[1])), key=lambda c: c.sum())
    while len(columns) > 1 and columns[0].sum() < threshold:
        merged = columns[0] + columns[1]
        columns = sorted([merged, *columns[2:]], key=lambda c: c.sum())
    return np.column_stack(columns)


def _divergence(observed: np.ndarray, expected: np.ndarray, kind: str) -> np.ndarray:
    """G or Pearson statistic over the last two axes (works on stacks of tables)."""
    if kind == "pearson":
        return ((observed - expected) ** 2 / expected).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(observed > 0, observed * np.log(observed / expected), 0.0)
    return 2.0 * terms.sum(axis=(-2, -1))


def _expected(table: np.ndarray) -> np.ndarray:
    return np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()


def _sequential_perm_p(
    observed: float, draw, n_perm: int, batch: int, hits_to_stop: int
) -> tuple[float, int]:
    """Besag–Clifford sequential Monte Carlo p-value.

    Draw permuted statistics in batches; stop once `hits_to_stop` of them reach the
    observed value (p = hits / draws), else after `n_perm` draws
    (p = (1 + hits) / (1 + n_perm)). Both are valid p-values, and clearly null data stops
    after one batch while strong evidence can reach p = 1 / (1 + n_perm).
    """
    tol = 1e-9 * max(1.0, abs(observed))
    hits = done = 0
    while done < n_perm:
        size = min(batch, n_perm - done)
        hits += int(np.count_nonzero(draw(size) >= observed - tol))
        done += size
        if hits >= hits_to_stop:
            return hits / done, done
    return (1 + hits) / (1 + done), done


def stratified_g_test(
    strata: Sequence[tuple[Mapping[str, int], Mapping[str, int]]],
    *,
    statistic: Literal["g", "pearson"] = "g",
    method: Literal["auto", "asymptotic", "permutation"] = "auto",
    min_expected: float = 5.0,
    min_per_side: int = 5,
    n_perm: int = DEFAULT_PERMUTATIONS,
    rng: np.random.Generator | int | None = None,
) -> StatResult:
    """Test whether two samples of categorical answers come from one distribution per stratum.

    Each stratum (one probe) is a pair of answer counts (x, y). The statistic is the G
    (log-likelihood ratio) or Pearson statistic summed over strata; G adds up exactly
    across strata, with the degrees of freedom summed. How p is computed:

    - ``auto``: chi-square when every stratum has all expected counts >= `min_expected`;
      otherwise the permutation test below (sparse tables break the chi-square
      approximation, and merging answers throws information away).
    - ``asymptotic``: the rarest answers of each stratum are merged until every expected
      count is >= `min_expected`; strata that collapse to one column carry too little data
      and are left out; chi-square on the rest.
    - ``permutation``: labels permuted within each stratum (each stratum's x counts
      redrawn from the multivariate hypergeometric, margins fixed) on the unmerged
      tables, with Besag–Clifford sequential stopping; the smallest p is
      1 / (`n_perm` + 1).

    Raises:
        InsufficientDataError: fewer than `min_per_side` answers on either side overall.
    """
    tables = []
    n_x = n_y = 0
    for x, y in strata:
        sx, sy = sum(x.values()), sum(y.values())
        n_x += sx
        n_y += sy
        if sx and sy:
            tables.append(_table(x, y))
    short = max(min_per_side - n_x, min_per_side - n_y, 0)
    if short or not tables:
        raise InsufficientDataError("too few categorical answers", short or min_per_side)
    name = "g_test" if statistic == "g" else "chi_square"
    varied = [t for t in tables if t.shape[1] >= 2]
    if not varied:
        return StatResult(name, 0.0, 1.0, n_x, n_y, method="degenerate", df=0.0)
    dense = all(_expected(t).min() >= min_expected for t in varied)
    if method == "asymptotic" or (method == "auto" and dense):
        merged = [m for m in (_merge_sparse(t, min_expected) for t in varied) if m.shape[1] >= 2]
        if not merged:
            return StatResult(name, 0.0, 1.0, n_x, n_y, method="degenerate", df=0.0)
        value = float(sum(_divergence(m, _expected(m), statistic) for m in merged))
        df = float(sum(m.shape[1] - 1 for m in merged))
        return StatResult(
            name,
            value,
            float(stats.chi2.sf(value, df)),
            n_x,
            n_y,
            df=df,
            extra={"strata": len(merged), "strata_dropped": len(varied) - len(merged)},
        )
    gen = _rng(rng)
    prepared = []
    observed = 0.0
    for t in varied:
        exp = _expected(t)
        observed += float(_divergence(t, exp, statistic))
        prepared.append((t.sum(axis=0).astype(np.int64), int(t[0].sum()), exp))

    def draw(size: int) -> np.ndarray:
        total = np.zeros(size)
        for cols, nx, exp in prepared:
            xs = gen.multivariate_hypergeometric(cols, nx, size=size).astype(float)
            stack = np.stack([xs, cols[None, :] - xs], axis=1)
            total += _divergence(stack, exp[None, :, :], statistic)
        return total

    p, draws = _sequential_perm_p(observed, draw, n_perm, batch=2000, hits_to_stop=20)
    df = float(sum(t.shape[1] - 1 for t in varied))
    return StatResult(
        name,
        observed,
        p,
        n_x,
        n_y,
        method="permutation",
        df=df,
        extra={"strata": len(varied), "permutations": draws},
    )


def reference_likelihood_test(
    strata: Sequence[tuple[Mapping[str, int], Mapping[str, int]]],
    *,
    min_per_side: int = 5,
    n_perm: int = DEFAULT_PERMUTATIONS,
    rng: np.random.Generator | int | None = None,
) -> StatResult:
    """One-sided paired test: are the target's answers less likely under the reference than
    the reference's own answers are, prompt by prompt?

    Each stratum is one rendered prompt (probe hash and rendered variables) with the target
    answer counts x and the reference answer counts y. Within a stratum with n_y >= 2
    reference answers, every answer a gets the score log(p̂(a) + 1 / (2m)), where p̂ is the
    share of reference answers equal to a among the m = n_y other reference answers (for
    a target answer) or the m = n_y − 1 other reference answers (leave one out, for a
    reference answer). The stratum's statistic is the mean reference score minus the mean
    target score; the test statistic T is their average weighted by n_x·n_y / (n_x + n_y).
    Large T means the target says what the reference rarely says.

    Why this statistic: when a share s of the target's answers come from another model
    with per-prompt distribution q, the target's expected score falls by about
    s·(E_p log p − E_q log p), linear in s, whereas a symmetric divergence (G, Pearson,
    MMD) grows only like s². The log score weighs most the answers the reference almost
    never gives, which is where a substitute shows. Strata with fewer than two reference
    answers carry no within-prompt information and are left out (`extra` counts them).

    Why it holds its level: under the null both endpoints serve the same conditional
    answer distribution, so within one rendered prompt the n_x + n_y answers are
    exchangeable and strata are independent. Permuting the target/reference labels
    within each stratum (margins fixed) therefore draws from the exact conditional null
    distribution of T, whatever the statistic; Besag–Clifford sequential stopping (see
    `_sequential_perm_p`) keeps the p-value valid. Which strata enter depends only on the
    prompts and the sample sizes, never on the answers. Answers pooled over *different*
    prompts (a profile rendered from another seed) are not exchangeable, so this test
    needs strata that are the same rendered prompt on both sides.

    Raises:
        InsufficientDataError: fewer than `min_per_side` answers on either side in the
            usable strata.
    """
    # Per usable stratum: target labels (1 = target), one-hot answers, answer codes,
    # n_x, n_y and the stratum's weight.
    prepared: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int, float]] = []
    n_x = n_y = 0
    dropped = 0
    for x, y in strata:
        sx, sy = sum(x.values()), sum(y.values())
        if not sx or sy < 2:
            dropped += 1
            continue
        labels = sorted({k for k, v in x.items() if v} | {k for k, v in y.items() if v})
        codes = np.repeat(
            np.arange(len(labels)),
            [x.get(c, 0) + y.get(c, 0) for c in labels],
        )
        is_x = np.concatenate([np.r_[np.ones(x.get(c, 0)), np.zeros(y.get(c, 0))] for c in labels])
        prepared.append((is_x, np.eye(len(labels))[codes], codes, sx, sy, sx * sy / (sx + sy)))
        n_x += sx
        n_y += sy
    short = max(min_per_side - n_x, min_per_side - n_y, 0)
    if short or not prepared:
        raise InsufficientDataError(
            "too few answers on prompts rendered identically on both sides", short or min_per_side
        )
    weight = sum(p[5] for p in prepared)

    def statistic(assign: list[np.ndarray]) -> np.ndarray:
        total: np.ndarray | float = 0.0
        for lab, (_, onehot, codes, sx, sy, w) in zip(assign, prepared, strict=True):
            ref_counts = onehot.sum(axis=0)[None, :] - lab @ onehot
            same = ref_counts[:, codes]
            ref_score = np.log(np.maximum(same - 1, 0) / (sy - 1) + 0.5 / (sy - 1))
            tgt_score = np.log(same / sy + 0.5 / sy)
            ref_mean = ((1 - lab) * ref_score).sum(axis=-1) / sy
            tgt_mean = (lab * tgt_score).sum(axis=-1) / sx
            total = total + w * (ref_mean - tgt_mean)
        return np.asarray(total) / weight

    observed = float(statistic([p[0][None, :] for p in prepared])[0])
    gen = _rng(rng)

    def draw(size: int) -> np.ndarray:
        return statistic([gen.permuted(np.tile(p[0], (size, 1)), axis=1) for p in prepared])

    p, draws = _sequential_perm_p(observed, draw, n_perm, batch=2000, hits_to_stop=20)
    return StatResult(
        "reference_likelihood",
        observed,
        p,
        n_x,
        n_y,
        method="permutation",
        extra={"strata": len(prepared), "strata_dropped": dropped, "permutations": draws},
    )


def g_test(
    x: Mapping[str, int],
    y: Mapping[str, int],
    *,
    statistic: Literal["g", "pearson"] = "g",
    method: Literal["auto", "asymptotic", "permutation"] = "auto",
    min_expected: float = 5.0,
    min_per_side: int = 5,
    n_perm: int = DEFAULT_PERMUTATIONS,
    rng: np.random.Generator | int | None = None,
) -> StatResult:
    """Two-sample G-test (or chi-square) on one probe's answer counts; see `stratified_g_test`."""
    return stratified_g_test(
        [(x, y)],
        statistic=statistic,
        method=method,
        min_expected=min_expected,
        min_per_side=min_per_side,
        n_perm=n_perm,
        rng=rng,
    )


# --- text samples: MMD with a string kernel ------------------------------------------------


def _hamming_kernel(texts: Sequence[str], length: int) -> np.ndarray:
    codes = np.zeros((len(texts), length), dtype=np.int64)
    for i, t in enumerate(texts):
        cut = [ord(c) for c in t[:length]]
        codes[i, : len(cut)] = cut
    k = np.zeros((len(texts), len(texts)))
    for p in range(length):
        col = codes[:, p]
        k += col[:, None] == col[None, :]
    return k / length


def _ngrams(text: str, n: int) -> Counter[str]:
    padded = f"\x02{text}\x03"
    return Counter(padded[i : i + n] for i in range(max(1, len(padded) - n + 1)))


def _ngram_kernel(texts: Sequence[str], n: int, length: int) -> np.ndarray:
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        for g, c in _ngrams(t[:length], n).items():
            rows.append(i)
            cols.append(vocab.setdefault(g, len(vocab)))
            vals.append(float(c))
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), max(1, len(vocab))))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    m = sparse.diags(1.0 / norms) @ m
    return np.asarray((m @ m.T).todense())


def char_ngram_similarity(a: str, b: str, n: int = 3) -> float:
    """Cosine similarity of character n-gram counts (1.0 for identical strings)."""
    ca, cb = _ngrams(a, n), _ngrams(b, n)
    dot = sum(v * cb.get(g, 0) for g, v in ca.items())
    na = math.sqrt(sum(v * v for v in ca.values()))
    nb = math.sqrt(sum(v * v for v in cb.values()))
    return dot / (na * nb) if na and nb else float(a == b)


def _mmd_sums(ix: np.ndarray, k0: np.ndarray) -> np.ndarray:
    """Within-x, within-y and cross kernel sums of one prompt block, per row of `ix`."""
    iy = 1.0 - ix
    kx = ix @ k0
    sxx = (kx * ix).sum(axis=-1)
    sxy = (kx * iy).sum(axis=-1)
    syy = ((iy @ k0) * iy).sum(axis=-1)
    return np.stack([sxx, syy, sxy])


def mmd_permutation_test(
    x: Sequence[str],
    y: Sequence[str],
    *,
    groups_x: Sequence[str] | None = None,
    groups_y: Sequence[str] | None = None,
    kernel: Literal["ngram", "hamming"] = "ngram",
    ngram: int = 3,
    length: int = 64,
    min_per_side: int = 5,
    n_perm: int = 9999,
    rng: np.random.Generator | int | None = None,
) -> StatResult:
    """Unbiased MMD² between two samples of completions, p-value by permuting within prompts.

    As in Model Equality Testing (Gao et al., 2024) the kernel is zero across different
    prompts (groups), so the test compares the joint distribution of (prompt, completion)
    while the prompts' mix stays fixed under permutation. Kernels: cosine similarity of
    character n-gram counts (``ngram``) or the share of equal characters over the first
    `length` positions (``hamming``).

    Raises:
        InsufficientDataError: fewer than `min_per_side` texts on either side, or no prompt
            sampled on both sides.
    """
    gx = list(groups_x) if groups_x is not None else [""] * len(x)
    gy = list(groups_y) if groups_y is not None else [""] * len(y)
    shared = set(gx) & set(gy)
    keep_x = [i for i, g in enumerate(gx) if g in shared]
    keep_y = [i for i, g in enumerate(gy) if g in shared]
    nx, ny = len(keep_x), len(keep_y)
    short = max(min_per_side - nx, min_per_side - ny, 2 - nx, 2 - ny, 0)
    if short:
        raise InsufficientDataError("too few text samples on shared prompts", short)
    texts = [x[i] for i in keep_x] + [y[i] for i in keep_y]
    labels = np.r_[np.ones(nx), np.zeros(ny)]
    groups = np.array([gx[i] for i in keep_x] + [gy[i] for i in keep_y])
    # The kernel is block-diagonal by prompt: keep one block per prompt.
    blocks = []
    for g in sorted(shared):
        idx = np.flatnonzero(groups == g)
        sub = [texts[i] for i in idx]
        kg = (
            _hamming_kernel(sub, length)
            if kernel == "hamming"
            else _ngram_kernel(sub, ngram, length)
        )
        np.fill_diagonal(kg, 0.0)  # the diagonal only enters the biased estimate
        blocks.append((labels[idx], kg))
    scale = np.array([1 / (nx * (nx - 1)), 1 / (ny * (ny - 1)), -2 / (nx * ny)])

    def mmd2(assign: list[np.ndarray]) -> np.ndarray:
        sums = sum(_mmd_sums(ix, kg) for ix, (_, kg) in zip(assign, blocks, strict=True))
        return scale @ sums

    observed = float(mmd2([lab[None, :] for lab, _ in blocks])[0])
    gen = _rng(rng)

    def draw(size: int) -> np.ndarray:
        return mmd2([gen.permuted(np.tile(lab, (size, 1)), axis=1) for lab, _ in blocks])

    p, draws = _sequential_perm_p(observed, draw, n_perm, batch=500, hits_to_stop=20)
    return StatResult(
        f"mmd_{kernel}",
        observed,
        p,
        nx,
        ny,
        method="permutation",
        extra={"prompts": len(shared), "permutations": draws},
    )


# --- greedy text: exact-match rates ---------------------------------------------------------


def exact_match_test(
    target_matches: int, target_n: int, ref_matches: int, ref_n: int
) -> StatResult:
    """One-sided Fisher exact test: does the target match the reference less often than the
    reference matches itself?

    Raises:
        InsufficientDataError: either side has no comparisons.
    """
    short = max(1 - target_n, 1 - ref_n, 0)
    if short:
        raise InsufficientDataError("no exact-match comparisons", short)
    table = [[target_matches, target_n - target_matches], [ref_matches, ref_n - ref_matches]]
    res = stats.fisher_exact(table, alternative="less")
    return StatResult(
        "fisher_exact",
        target_matches / target_n - ref_matches / ref_n,
        float(res.pvalue),
        target_n,
        ref_n,
        method="exact",
        extra={
            "target_match_rate": target_matches / target_n,
            "ref_match_rate": ref_matches / ref_n,
        },
    )


def _mode(values: Sequence[Any]) -> Any:
    return Counter(values).most_common(1)[0][0]


def greedy_match_test(
    target: Mapping[str, Sequence[str]], reference: Mapping[str, Sequence[str]]
) -> StatResult:
    """Compare temperature-0 completions of the same prompts by exact match.

    Per prompt key the reference's most common completion is the anchor. Each target
    completion scores a match when it equals the anchor; each reference completion scores
    a match when it equals the anchor of the *other* reference completions (leave one
    out), which measures the reference's own nondeterminism. The rates go to
    `exact_match_test`. `extra` reports the mean character 3-gram similarity to the anchor.

    Raises:
        InsufficientDataError: no prompt has a target completion and two reference ones.
    """
    tm = tn = rm = rn = 0
    sims: list[float] = []
    for key, ref_texts in reference.items():
        tgt = target.get(key, ())
        if not tgt or len(ref_texts) < 2:
            continue
        anchor = _mode(ref_texts)
        tn += len(tgt)
        tm += sum(t == anchor for t in tgt)
        sims.extend(char_ngram_similarity(t, anchor) for t in tgt)
        for i, r in enumerate(ref_texts):
            rest = [*ref_texts[:i], *ref_texts[i + 1 :]]
            rn += 1
            rm += r == _mode(rest)
    if not tn:
        raise InsufficientDataError("no greedy prompt with a target and two reference samples", 1)
    res = exact_match_test(tm, tn, rm, rn)
    return StatResult(
        "greedy_exact_match",
        res.statistic,
        res.p_value,
        tn,
        rn,
        method="exact",
        extra={**res.extra, "mean_ngram_similarity": float(np.mean(sims))},
    )


# --- tokenizer deltas -------------------------------------------------------------------------


def mismatch_share(mismatches: int, n: int, level: float = 0.95) -> ShareEstimate:
    """Share of mismatching observations with a Clopper–Pearson interval."""
    ci = stats.binomtest(mismatches, n).proportion_ci(confidence_level=level, method="exact")
    return ShareEstimate(mismatches / n, float(ci.low), float(ci.high), "mismatch_rate", n, level)


def tokenizer_delta_test(
    target: Mapping[str, Sequence[int]],
    reference: Mapping[str, Sequence[int]],
    *,
    noise_floor: float = 1e-3,
) -> StatResult:
    """Exact comparison of per-canary token-count deltas on identical canaries.

    Token counts are deterministic for a tokenizer, so a genuine endpoint reproduces the
    reference's delta for every canary. Noise (a gateway that sometimes injects text,
    whitespace normalisation) is allowed for: the per-observation mismatch probability
    under the null is ε = max(`noise_floor`, the reference's own disagreement with its
    per-canary mode). The number of target mismatches is tested against Binomial(n, ε);
    one mismatch at the default floor gives p = 1e-3, two give about 1e-6.

    Deltas subtract the target's base prompt count; when the base itself was answered by a
    substitute, every genuine delta is off by the same amount. So the target's deltas are
    first shifted by the most common (target − anchor) difference when a strict majority of
    them agree on it. Shifting can only remove mismatches (a genuine endpoint
    still has none), so the test stays valid, and the mismatch share then counts the
    substituted canaries rather than all of them.

    Raises:
        InsufficientDataError: no canary was measured on both sides.
    """
    n = ref_n = ref_off = 0
    pairs: list[tuple[int, int]] = []
    for key, ref_vals in reference.items():
        tgt = target.get(key, ())
        if not tgt or not ref_vals:
            continue
        anchor = _mode(ref_vals)
        ref_n += len(ref_vals)
        ref_off += sum(v != anchor for v in ref_vals)
        n += len(tgt)
        pairs.extend((v, anchor) for v in tgt)
    if not n:
        raise InsufficientDataError("no canary measured on both sides", 1)
    offsets = Counter(v - anchor for v, anchor in pairs)
    shift, agree = offsets.most_common(1)[0]
    if 2 * agree <= len(pairs):
        shift = 0
    k = sum(v - shift != anchor for v, anchor in pairs)
    eps = max(noise_floor, ref_off / ref_n)
    p = float(stats.binomtest(k, n, eps, alternative="greater").pvalue) if k else 1.0
    share = mismatch_share(k, n)
    return StatResult(
        "tokenizer_delta_exact",
        float(k),
        p,
        n,
        ref_n,
        method="exact",
        extra={"mismatches": k, "noise_rate": eps, "base_shift": shift, "share": share.to_dict()},
    )


def mann_whitney(
    x: Sequence[float],
    y: Sequence[float],
    *,
    min_per_side: int = 5,
    alternative: str = "two-sided",
) -> StatResult:
    """Mann–Whitney U test of x against y (`alternative` as in SciPy: ``greater`` means
    x tends to be larger).

    Raises:
        InsufficientDataError: fewer than `min_per_side` values on either side.
    """
    xs = np.asarray([v for v in x if v is not None and math.isfinite(v)], dtype=float)
    ys = np.asarray([v for v in y if v is not None and math.isfinite(v)], dtype=float)
    short = max(min_per_side - len(xs), min_per_side - len(ys), 0)
    if short:
        raise InsufficientDataError("too few values", short)
    if np.ptp(np.r_[xs, ys]) == 0:
        return StatResult("mann_whitney", 0.0, 1.0, len(xs), len(ys), method="degenerate")
    res = stats.mannwhitneyu(xs, ys, alternative=alternative, method="auto")
    return StatResult(
        "mann_whitney",
        float(res.statistic),
        float(res.pvalue),
        len(xs),
        len(ys),
        extra={"median_x": float(np.median(xs)), "median_y": float(np.median(ys))},
    )


# --- metadata shapes ----------------------------------------------------------------------


def metadata_test(
    target: Mapping[str, Mapping[str, int]],
    reference: Mapping[str, Mapping[str, int]],
    *,
    min_per_side: int = 5,
    n_perm: int = DEFAULT_PERMUTATIONS,
    rng: np.random.Generator | int | None = None,
) -> StatResult:
    """Compare metadata shapes (id format, fingerprint shape, model echo, ...) feature by
    feature with permutation G-tests; p is Bonferroni over the features tested.

    `extra["novel"]` lists, per feature, target values the reference never produced.

    Raises:
        InsufficientDataError: no feature has `min_per_side` values on both sides.
    """
    gen = _rng(rng)
    results: dict[str, float] = {}
    novel: dict[str, list[str]] = {}
    n_x = n_y = 0
    needed = min_per_side
    for feat in sorted(set(target) & set(reference)):
        tx, ry = target[feat], reference[feat]
        try:
            res = g_test(tx, ry, min_per_side=min_per_side, n_perm=n_perm, rng=gen)
        except InsufficientDataError as exc:
            needed = min(needed, exc.needed)
            continue
        results[feat] = res.p_value
        n_x, n_y = max(n_x, res.n_x), max(n_y, res.n_y)
        new = sorted(v for v, c in tx.items() if c and not ry.get(v))
        if new:
            novel[feat] = new[:5]
    if not results:
        raise InsufficientDataError("too few metadata observations", needed)
    worst = min(results, key=results.__getitem__)
    p = min(1.0, results[worst] * len(results))
    return StatResult(
        "metadata_g_bonferroni",
        float(len(novel)),
        p,
        n_x,
        n_y,
        method="permutation",
        extra={"features": results, "most_different": worst, "novel": novel},
    )


# --- combining p-values -------------------------------------------------------------------


def acat(p_values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Cauchy combination (Liu & Xie 2020): valid under arbitrary dependence (approximately,
    and exactly in the tail). Returns the combined p-value."""
    ps = np.clip(np.asarray(p_values, dtype=float), 0.0, 1.0)
    if ps.size == 0:
        raise ValueError("acat needs at least one p-value")
    w = np.full(ps.size, 1.0 / ps.size) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    if np.any(ps == 0.0):
        return 0.0
    # A p-value of exactly 1 (a degenerate test, a signal with no variation) maps to
    # tan(-π/2) = -inf and would cancel any evidence in the sum. Capping p at ACAT_P_MAX
    # bounds each such term at tan(-0.49π) ≈ -31.8; it only moves mass in the far left tail
    # of the statistic, which the small-α decision never reads.
    ps = np.minimum(ps, ACAT_P_MAX)
    tiny = ps < 1e-15
    terms = np.where(tiny, 1.0 / (np.maximum(ps, 1e-300) * np.pi), np.tan((0.5 - ps) * np.pi))
    t = float(np.dot(w, terms))
    return float(min(1.0, max(0.0, stats.cauchy.sf(t))))


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise `alpha`, and
    the Holm-adjusted p-values (valid under any dependence)."""
    ps = list(p_values)
    m = len(ps)
    order = sorted(range(m), key=ps.__getitem__)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return [a <= alpha for a in adjusted], adjusted


# --- substitution share -------------------------------------------------------------------


def _modal_share(x: np.ndarray, nx: np.ndarray, p: np.ndarray) -> float:
    expected = float(np.dot(nx, p))
    return 1.0 - float(x.sum()) / expected if expected > 0 else 0.0


def mixture_share_modal(
    strata: Sequence[tuple[Mapping[str, int], Mapping[str, int]]],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    rng: np.random.Generator | int | None = None,
) -> ShareEstimate:
    """One-category share estimate when the substitute's distribution is unknown.

    Per stratum (probe) the reference's most common answer c* has probability p; the
    target shows it with frequency f. With q = 0 for the substitute, f = (1 − π)·p, so
    π̂ = 1 − Σ f·n / Σ p·n pooled over strata. If the substitute also gives c* the
    estimate is a lower bound (π·(p − q)/p). The interval is a percentile bootstrap that
    resamples both sides within each stratum; the estimate and bounds are clipped to [0, 1].

    Raises:
        InsufficientDataError: no stratum has answers on both sides.
    """
    rows = []
    for target, reference in strata:
        nt, nr = sum(target.values()), sum(reference.values())
        if not nt or not nr:
            continue
        mode = max(sorted(reference), key=reference.__getitem__)
        rows.append((target.get(mode, 0), nt, reference[mode], nr))
    if not rows:
        raise InsufficientDataError("no probe answered on both sides", 1)
    arr = np.array(rows, dtype=float)
    fx, nx, rx, nr = arr.T
    est = _modal_share(fx, nx, rx / nr)
    gen = _rng(rng)
    bx = gen.binomial(nx.astype(np.int64), np.clip(fx / nx, 0, 1), size=(n_boot, len(rows)))
    br = gen.binomial(nr.astype(np.int64), np.clip(rx / nr, 0, 1), size=(n_boot, len(rows)))
    expected = (nx * br / nr).sum(axis=1)
    boot = 1.0 - bx.sum(axis=1) / np.where(expected > 0, expected, np.nan)
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if boot.size else (0.0, 1.0)
    return ShareEstimate(
        _unit(est), _unit(lo), _unit(hi), "modal_answer_bootstrap", int(nx.sum()), level
    )


def _unit(v: float) -> float:
    return float(min(1.0, max(0.0, v)))
