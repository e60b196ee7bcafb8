"""The numeric check: extract the final number of an answer and compare with tolerance."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from aione_probe.checks._registry import CheckContext, CheckSpecError, check, result
from aione_probe.checks._util import answer_text, clip, keys, typed
from aione_probe.types import CheckResult, CheckValue, Observation

_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])"  # not glued to a word or a decimal point
    r"(?P<sign>[-+])?(?P<cur>[$€£¥])?(?P<sign2>[-+])?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|\d+(?:\.\d+)?|\.\d+)"
    r"(?P<exp>[eE][-+]?\d+)?"
    r"(?P<pct>%)?"
)
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
# What may follow the final number for it to count as "at the end": punctuation, closing
# markup, and at most one short unit word ("42 apples.", "12 USD", "391个").
_TAIL = re.compile(r"[\W_]*(?:[A-Za-z]{1,12}|[\u4e00-\u9fff]{1,2})?[\W_]*", re.UNICODE)


@dataclass(frozen=True)
class Extracted:
    """A number found in an answer, or why none could be chosen."""

    value: Decimal | None
    how: str
    found: tuple[str, ...] = ()


def _prepare(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)  # full-width digits, commas, signs
    return text.replace("\u2212", "-").replace("{,}", ",")


def _numbers(text: str) -> list[tuple[Decimal, re.Match[str]]]:
    out = []
    for m in _NUMBER.finditer(text):
        sign = "-" if "-" in ((m.group("sign") or "") + (m.group("sign2") or "")) else ""
        digits = m.group("num").replace(",", "") + (m.group("exp") or "")
        try:
            out.append((Decimal(sign + digits), m))
        except InvalidOperation:
            continue
    return out


def extract_number(text: str) -> Extracted:
    """The answer's final number.

    Handles thousands separators (``1,234``), signs (``-5``, ``−5``), currency (``$12``),
    percent (``12%`` gives 12), decimals (``3.50``), full-width digits and LaTeX
    ``\\boxed{…}`` (the last box wins over everything else). When the answer holds
    several different numbers, the last one counts only if nothing but punctuation or
    one unit word follows it; otherwise the answer is ambiguous and no number is chosen.
    """
    text = _prepare(text)
    boxes = _BOXED.findall(text)
    if boxes:
        inner = _numbers(boxes[-1])
        if len(inner) == 1:
            return Extracted(inner[0][0], "from \\boxed{}", (inner[0][1].group(0),))
    found = _numbers(text)
    shown = tuple(m.group(0) for _, m in found)
    if not found:
        return Extracted(None, "no number in the answer")
    value, last = found[-1]
    if len({v for v, _ in found}) == 1:
        return Extracted(value, "the only number", shown)
    if _TAIL.fullmatch(text[last.end() :]):
        return Extracted(value, "final number", shown)
    listed = ", ".join(shown[:6]) + (", …" if len(shown) > 6 else "")
    return Extracted(
        None, f"several different numbers ({listed}) and none at the end of the answer", shown
    )


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        d = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _validate_numeric(params: dict[str, Any]) -> None:
    keys(params, required=["expected"], optional=["tolerance", "rel_tolerance"])
    if _decimal(params["expected"]) is None:
        raise CheckSpecError(f"expected must be a number, got {params['expected']!r}", "expected")
    for key in ("tolerance", "rel_tolerance"):
        value = typed(params, key, (int, float), "a number")
        if value is not None and not value >= 0:
            raise CheckSpecError(f"{key} must be ≥ 0, got {value}", key)


@check("numeric", validate=_validate_numeric)
def numeric(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the final number is within `tolerance` (absolute, default 0) or
    `rel_tolerance` (fraction of `expected`) of `expected`."""
    expected = _decimal(params["expected"])
    if expected is None:
        raise CheckSpecError(f"expected must be a number, got {params['expected']!r}", "expected")
    text = answer_text(obs)
    got = extract_number(text)
    if got.value is None:
        return result(
            CheckValue.failed,
            answer=clip(text),
            expected=format(expected, "f"),
            explanation=got.how,
            numbers=list(got.found),
        )
    diff = abs(got.value - expected)
    tol = Decimal(str(params.get("tolerance", 0)))
    rel = params.get("rel_tolerance")
    ok = diff <= tol or (rel is not None and diff <= Decimal(str(rel)) * abs(expected))
    return result(
        CheckValue.passed if ok else CheckValue.failed,
        answer=format(got.value, "f"),
        expected=format(expected, "f"),
        explanation=f"{got.how} {got.value:f} " + ("matches" if ok else f"differs by {diff:f}"),
        diff=float(diff),
        numbers=list(got.found),
    )
