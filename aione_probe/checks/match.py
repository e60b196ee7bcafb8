"""Text matching checks: exact, regex, choice, contains."""

from __future__ import annotations

import re
from typing import Any

from aione_probe.checks._registry import CheckContext, CheckSpecError, check, result
from aione_probe.checks._util import answer_text, clip, keys, str_list, typed
from aione_probe.types import CheckResult, CheckValue, Observation

_WRAPPERS = "\"'`“”‘’「」『』*"
_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Casefold, collapse whitespace, strip wrapping quotes, backticks, bold and a final period.

    Stripping repeats until nothing changes, so ``"**Paris.**"`` and ``` `Paris` ``` both
    become ``paris``; inner punctuation (``Paris, France``) is kept.
    """
    text = _SPACE.sub(" ", text.casefold()).strip()
    while True:
        before = text
        text = text.strip().strip(_WRAPPERS).strip()
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1]
        if text == before:
            return text


def _validate_exact(params: dict[str, Any]) -> None:
    keys(params, required=["expected"], optional=["normalize"])
    expected = params["expected"]
    if isinstance(expected, list):
        if not expected or not all(isinstance(e, str | int | float) for e in expected):
            raise CheckSpecError(
                "expected must be a string or a non-empty list of them", "expected"
            )
    elif not isinstance(expected, str | int | float) or isinstance(expected, bool):
        raise CheckSpecError(f"expected must be a string, got {expected!r}", "expected")
    typed(params, "normalize", bool, "true or false")


@check("exact", validate=_validate_exact)
def exact(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the answer equals `expected` (or one of a list), normalised by default."""
    raw = params["expected"]
    options = [str(e) for e in (raw if isinstance(raw, list) else [raw])]
    text = answer_text(obs)
    norm = params.get("normalize", True)
    got = normalize(text) if norm else text
    hit = next((o for o in options if (normalize(o) if norm else o) == got), None)
    if hit is not None:
        return result(CheckValue.passed, answer=clip(text), expected=hit, explanation="exact match")
    return result(
        CheckValue.failed,
        answer=clip(text),
        expected=" | ".join(options),
        explanation=f"answer {clip(got, 60)!r} is not {' or '.join(map(repr, options))}",
    )


_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


def _compile(params: dict[str, Any]) -> re.Pattern[str]:
    flags = 0
    for ch in params.get("flags", ""):
        flags |= _FLAGS[ch]
    return re.compile(params["pattern"], flags)


def _validate_regex(params: dict[str, Any]) -> None:
    keys(params, required=["pattern"], optional=["flags", "fullmatch", "must_match"])
    typed(params, "pattern", str, "a string")
    flags = typed(params, "flags", str, "a string of i, m, s")
    if flags and set(flags) - set(_FLAGS):
        raise CheckSpecError(f"flags may only contain i, m, s, got {flags!r}", "flags")
    typed(params, "fullmatch", bool, "true or false")
    typed(params, "must_match", bool, "true or false")
    try:
        _compile(params)
    except re.error as exc:
        raise CheckSpecError(f"invalid regular expression: {exc}", "pattern") from exc


@check("regex", validate=_validate_regex)
def regex(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when `pattern` matches (``must_match = false``: when it does not).

    ``fullmatch = true`` matches the whole stripped answer; otherwise anywhere in it.
    """
    text = answer_text(obs)
    pattern = _compile(params)
    m = pattern.fullmatch(text) if params.get("fullmatch", False) else pattern.search(text)
    must = params.get("must_match", True)
    ok = (m is not None) == must
    found = m.group(0) if m else None
    if must:
        why = f"matched {clip(found, 60)!r}" if m else "pattern did not match"
    else:
        why = f"forbidden pattern matched {clip(found, 60)!r}" if m else "pattern absent"
    return result(
        CheckValue.passed if ok else CheckValue.failed,
        answer=clip(found if found is not None else text),
        expected=params["pattern"],
        explanation=why,
    )


_DEFAULT_CHOICES = ["A", "B", "C", "D"]
_MARKER = re.compile(
    r"(?:answer|option|choice|答案|选项)\W{0,3}(?:is|would be|:|：|是|为)?[\s*:：(（\[]*"
    r"(?-i:([A-Z]))(?![A-Za-z])",
    re.IGNORECASE,
)
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])([A-Z])(?![A-Za-z0-9'’])")
_BARE_JUNK = " \t\n.:)(（）[]*`'\""


def extract_choice(text: str, choices: list[str]) -> tuple[str | None, str]:
    """The single choice letter in `text`, or None, with how it was found.

    Order: the whole answer is one letter (``B``, ``(B)``, ``**B.**``); else the last
    letter after an answer marker (``Answer: B``, ``答案是 B``); else the only standalone
    upper-case choice letter in the text. Several different standalone letters, or a
    letter glued to others (``AB``), give None.
    """
    bare = text.strip(_BARE_JUNK)
    if len(bare) == 1 and bare.upper() in choices:
        return bare.upper(), "whole answer"
    marked = [m.group(1) for m in _MARKER.finditer(text)]
    marked = [c for c in marked if c in choices]
    if marked:
        return marked[-1], "after answer marker"
    found = {m.group(1) for m in _STANDALONE.finditer(text)} & set(choices)
    if len(found) == 1:
        return found.pop(), "only standalone choice letter"
    if found:
        return None, f"several choice letters: {', '.join(sorted(found))}"
    return None, "no standalone choice letter"


def _validate_choice(params: dict[str, Any]) -> None:
    keys(params, required=["expected"], optional=["choices"])
    choices = str_list(params, "choices") or _DEFAULT_CHOICES
    if any(len(c) != 1 or not ("A" <= c <= "Z") for c in choices) or len(set(choices)) < 2:
        raise CheckSpecError("choices must be at least two distinct letters A-Z", "choices")
    expected = typed(params, "expected", str, "a letter")
    if expected not in choices:
        raise CheckSpecError(f"expected {expected!r} is not one of {choices}", "expected")


@check("choice", validate=_validate_choice)
def choice(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the single extracted choice letter equals `expected`."""
    choices = params.get("choices") or _DEFAULT_CHOICES
    expected = params["expected"]
    text = answer_text(obs)
    got, how = extract_choice(text, choices)
    if got is None:
        return result(CheckValue.failed, answer=clip(text), expected=expected, explanation=how)
    ok = got == expected
    return result(
        CheckValue.passed if ok else CheckValue.failed,
        answer=got,
        expected=expected,
        explanation=f"chose {got} ({how})" + ("" if ok else f", expected {expected}"),
    )


def _validate_contains(params: dict[str, Any]) -> None:
    keys(params, optional=["all", "none", "case_sensitive"])
    all_ = str_list(params, "all")
    none = str_list(params, "none")
    if not all_ and not none:
        raise CheckSpecError("give at least one string in `all` or `none`", "all")
    if any(s == "" for s in [*(all_ or []), *(none or [])]):
        raise CheckSpecError("empty strings always match", "all" if "" in (all_ or []) else "none")
    typed(params, "case_sensitive", bool, "true or false")


@check("contains", validate=_validate_contains)
def contains(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when every string of `all` occurs and no string of `none` does."""
    text = answer_text(obs)
    sensitive = params.get("case_sensitive", False)
    hay = text if sensitive else text.casefold()

    def has(s: str) -> bool:
        return (s if sensitive else s.casefold()) in hay

    absent = [s for s in params.get("all", []) if not has(s)]
    forbidden = [s for s in params.get("none", []) if has(s)]
    parts = []
    if absent:
        parts.append(f"missing {absent}")
    if forbidden:
        parts.append(f"contains forbidden {forbidden}")
    return result(
        CheckValue.failed if parts else CheckValue.passed,
        answer=clip(text),
        expected=f"all={params.get('all', [])} none={params.get('none', [])}",
        explanation="; ".join(parts) or "all required strings present, no forbidden ones",
        missing=absent,
        forbidden_found=forbidden,
    )
