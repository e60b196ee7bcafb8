"""Instruction-following checks: length and language."""

from __future__ import annotations

import re
from typing import Any

from aione_probe.checks._registry import CheckContext, CheckSpecError, check, result
from aione_probe.checks._util import answer_text, clip, keys, non_negative_int, typed
from aione_probe.types import CheckResult, CheckValue, Observation

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_BOUNDS = {
    "min_words": ("words", min),
    "max_words": ("words", max),
    "min_chars": ("chars", min),
    "max_chars": ("chars", max),
    "lines": ("lines", None),
    "max_lines": ("lines", max),
}
ZH_MIN_SHARE = 0.5
EN_MAX_SHARE = 0.1


def count_words(text: str) -> int:
    """Whitespace-separated words, each CJK character counting as one word."""
    cjk = len(_CJK.findall(text))
    return cjk + len(_CJK.sub(" ", text).split())


def measure(text: str) -> dict[str, int]:
    """Words, characters (after stripping) and non-empty lines of `text`."""
    text = text.strip()
    return {
        "words": count_words(text),
        "chars": len(text),
        "lines": sum(1 for line in text.splitlines() if line.strip()),
    }


def _validate_length(params: dict[str, Any]) -> None:
    keys(params, optional=_BOUNDS)
    if not params:
        raise CheckSpecError(f"give at least one of {sorted(_BOUNDS)}")
    for key in params:
        non_negative_int(params, key)
    for unit in ("words", "chars"):
        lo, hi = params.get(f"min_{unit}"), params.get(f"max_{unit}")
        if lo is not None and hi is not None and lo > hi:
            raise CheckSpecError(f"min_{unit} {lo} exceeds max_{unit} {hi}", f"min_{unit}")


@check("length", validate=_validate_length)
def length(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the answer respects every bound given.

    Words are whitespace-separated (each CJK character is a word); ``lines`` is an exact
    count of non-empty lines, ``max_lines`` an upper bound.
    """
    text = answer_text(obs)
    got = measure(text)
    broken = []
    for key, limit in params.items():
        unit, kind = _BOUNDS[key]
        n = got[unit]
        if (
            (kind is min and n < limit)
            or (kind is max and n > limit)
            or (kind is None and n != limit)
        ):
            broken.append(f"{n} {unit}, {key} = {limit}")
    return result(
        CheckValue.failed if broken else CheckValue.passed,
        answer=clip(text),
        expected=", ".join(f"{k}={v}" for k, v in params.items()),
        explanation="; ".join(broken) or "within every bound",
        **got,
    )


def cjk_share(text: str) -> float | None:
    """Share of CJK ideographs among the letters of `text` (None: no letters)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    return sum(1 for c in letters if _CJK.match(c)) / len(letters)


def _validate_language(params: dict[str, Any]) -> None:
    keys(params, required=["expected"])
    if typed(params, "expected", str, '"zh" or "en"') not in ("zh", "en"):
        raise CheckSpecError(
            f'expected must be "zh" or "en", got {params["expected"]!r}', "expected"
        )


@check("language", validate=_validate_language)
def language(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the answer is in the expected language, judged by script.

    ``zh``: CJK ideographs are at least half of the letters; ``en``: at most a tenth.
    """
    expected = params["expected"]
    text = answer_text(obs)
    share = cjk_share(text)
    if share is None:
        return result(
            CheckValue.failed, answer=clip(text), expected=expected, explanation="no letters"
        )
    ok = share >= ZH_MIN_SHARE if expected == "zh" else share <= EN_MAX_SHARE
    detected = "zh" if share >= ZH_MIN_SHARE else "en" if share <= EN_MAX_SHARE else "mixed"
    return result(
        CheckValue.passed if ok else CheckValue.failed,
        answer=detected,
        expected=expected,
        explanation=f"CJK share of letters {share:.2f}",
        cjk_share=round(share, 4),
    )
