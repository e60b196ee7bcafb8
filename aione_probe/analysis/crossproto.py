"""Cross-protocol consistency: does one model behave the same over OpenAI and Anthropic?

A gateway that serves a model on both surfaces should route both to the same model.
Given observations of the same model and probes over the two protocols, three signals:

- ``token_accounting`` (deterministic): prompt tokens of the same rendered prompt must
  match exactly, or differ by one constant (each protocol wraps messages in its own
  template, so a fixed overhead is allowed; an overhead that varies from prompt to prompt
  means a different tokenizer, i.e. a different model). The statistic is the spread
  ``max(d) - min(d)`` of the per-prompt differences ``d = tokens_b - tokens_a``.
- ``answers``: answer distributions per prompt, a G-test stratified by prompt
  (`fingerprint.stats.stratified_g_test`).
- ``finish_reasons``: finish-reason distributions per prompt, the same test.

The two p-valued signals are Holm-adjusted at `alpha`. Verdict: ``inconsistent`` if any
signal fails, ``consistent`` if at least one signal ran and none failed, else
``insufficient_data``. Rows are dicts or objects with ``probe_hash``, ``protocol``,
``prompt_tokens``, ``content``, ``finish_reason`` and optionally ``vars`` (templated
probes render different prompts per run, so prompts are keyed by hash and vars) and
``ok`` / ``failure`` (failed attempts are skipped).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from aione_probe.analysis.stats import InsufficientDataError, holm, stratified_g_test

DEFAULT_ALPHA = 0.01
MIN_PAIRS = 3
ANSWER_CHARS = 200

Key = tuple[str, str]


def _get(row: Any, name: str, default: Any = None) -> Any:
    if isinstance(row, dict):
        return row.get(name, default)
    return getattr(row, name, default)


def _usable(row: Any) -> bool:
    ok = _get(row, "ok")
    if ok is not None:
        return bool(ok)
    failure = _get(row, "failure")
    return failure is None or str(failure) in ("ok", "FailureKind.ok")


def _key(row: Any) -> Key:
    values = _get(row, "vars") or {}
    return str(_get(row, "probe_hash")), json.dumps(values, sort_keys=True, default=str)


def normalise_answer(content: Any) -> str:
    """The answer as compared across protocols: stripped, case-folded, first 200 chars."""
    return " ".join(str(content or "").split()).casefold()[:ANSWER_CHARS]


def _signal(
    signal: str,
    test: str,
    *,
    statistic: float | None = None,
    p_value: float | None = None,
    n: int = 0,
    result: str = "pending",
    note: str = "",
) -> dict[str, Any]:
    return {
        "signal": signal,
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "n": n,
        "result": result,
        "note": note,
    }


def token_accounting(
    a: dict[Key, list[int]], b: dict[Key, list[int]], *, tolerance: int = 0
) -> dict[str, Any]:
    """Whether prompt tokens of shared prompts differ by one constant (± `tolerance`)."""
    shared = sorted(set(a) & set(b))
    if len(shared) < MIN_PAIRS:
        return _signal(
            "token_accounting",
            "constant_offset",
            n=len(shared),
            result="insufficient",
            note=f"{len(shared)} prompts seen over both protocols, need {MIN_PAIRS}",
        )
    diffs = [statistics.median(b[k]) - statistics.median(a[k]) for k in shared]
    unstable = sum(1 for k in shared if len(set(a[k])) > 1 or len(set(b[k])) > 1)
    spread = max(diffs) - min(diffs)
    offsets = sorted(Counter(diffs).items(), key=lambda kv: -kv[1])[:5]
    note = f"offsets (tokens_b - tokens_a: count) {', '.join(f'{d:g}: {c}' for d, c in offsets)}"
    if unstable:
        note += f"; {unstable} prompts counted differently within one protocol"
    ok = spread <= tolerance
    if ok and diffs[0] == 0 and spread == 0:
        note = "prompt tokens match exactly"
    return _signal(
        "token_accounting",
        "constant_offset",
        statistic=float(spread),
        n=len(shared),
        result="pass" if ok else "fail",
        note=note,
    )


def _distribution(
    signal: str, a: dict[Key, Counter[str]], b: dict[Key, Counter[str]]
) -> tuple[dict[str, Any], float | None]:
    strata = [(a[k], b[k]) for k in sorted(set(a) & set(b))]
    try:
        res = stratified_g_test(strata, rng=0)
    except InsufficientDataError as exc:
        return _signal(signal, "g_test", n=len(strata), result="insufficient", note=str(exc)), None
    note = f"{res.method}, {len(strata)} prompts, {res.n_x} vs {res.n_y} answers"
    n = res.n_x + res.n_y
    out = _signal(signal, res.test, statistic=res.statistic, p_value=res.p_value, n=n, note=note)
    return out, res.p_value


def compare_protocols(
    rows: Iterable[Any],
    *,
    a: str = "openai",
    b: str = "anthropic",
    alpha: float = DEFAULT_ALPHA,
    token_tolerance: int = 0,
) -> dict[str, Any]:
    """Compare one model's observations over protocols `a` and `b`.

    Args:
        rows: observation rows (dicts or objects; see the module docstring).
        a: the reference protocol (differences are ``b - a``).
        b: the other protocol.
        alpha: family-wise error rate of the p-valued signals (Holm).
        token_tolerance: allowed spread of the prompt-token offsets, in tokens.

    Returns:
        ``{"verdict", "alpha", "protocols": [a, b], "n": {a: .., b: ..}, "signals": [...]}``
        with one ``{signal, test, statistic, p_value, n, result, note}`` per signal;
        ``result`` is pass, fail or insufficient.
    """
    tokens: dict[str, dict[Key, list[int]]] = {a: defaultdict(list), b: defaultdict(list)}
    answers: dict[str, dict[Key, Counter[str]]] = {a: defaultdict(Counter), b: defaultdict(Counter)}
    finishes: dict[str, dict[Key, Counter[str]]] = {
        a: defaultdict(Counter),
        b: defaultdict(Counter),
    }
    counts = {a: 0, b: 0}
    for row in rows:
        protocol = _get(row, "protocol")
        if protocol not in counts or not _usable(row):
            continue
        counts[protocol] += 1
        key = _key(row)
        prompt = _get(row, "prompt_tokens")
        if isinstance(prompt, int) and not isinstance(prompt, bool):
            tokens[protocol][key].append(prompt)
        answers[protocol][key][normalise_answer(_get(row, "content"))] += 1
        finishes[protocol][key][str(_get(row, "finish_reason"))] += 1
    accounting = token_accounting(tokens[a], tokens[b], tolerance=token_tolerance)
    tested = [
        _distribution("answers", answers[a], answers[b]),
        _distribution("finish_reasons", finishes[a], finishes[b]),
    ]
    p_values = [p for _, p in tested if p is not None]
    if p_values:
        rejected, adjusted = holm(p_values, alpha)
        ran = iter(zip(rejected, adjusted, strict=True))
        for sig, p in tested:
            if p is not None:
                reject, adj = next(ran)
                sig["result"] = "fail" if reject else "pass"
                sig["note"] += f", Holm-adjusted p {adj:.3g}"
    signals = [accounting, *(sig for sig, _ in tested)]
    results = {s["result"] for s in signals}
    if "fail" in results:
        verdict = "inconsistent"
    elif "pass" in results:
        verdict = "consistent"
    else:
        verdict = "insufficient_data"
    return {
        "verdict": verdict,
        "alpha": alpha,
        "protocols": [a, b],
        "n": counts,
        "signals": signals,
    }
