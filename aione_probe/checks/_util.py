"""Helpers shared by the check families: parameter validation and answer text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from aione_probe.checks._registry import CheckSpecError
from aione_probe.types import Observation

_THINK = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.DOTALL | re.IGNORECASE)
CLIP = 200


def keys(params: dict[str, Any], *, required: Iterable[str] = (), optional: Iterable[str] = ()):
    """Raise `CheckSpecError` for a missing required key or an unknown key."""
    required = tuple(required)
    allowed = set(required) | set(optional)
    for k in required:
        if k not in params:
            raise CheckSpecError(f"missing required parameter {k!r}", k)
    for k in params:
        if k not in allowed:
            raise CheckSpecError(f"unknown parameter {k!r} (allowed: {sorted(allowed)})", k)


def typed(params: dict[str, Any], key: str, types: type | tuple[type, ...], what: str) -> Any:
    """The value of `key` if present, checked against `types` (bool is never a number)."""
    if key not in params:
        return None
    value = params[key]
    numeric = types in (int, float) or (isinstance(types, tuple) and int in types)
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):
        raise CheckSpecError(f"{key} must be {what}, got {value!r}", key)
    return value


def non_negative_int(params: dict[str, Any], key: str) -> int | None:
    """The value of `key` if present, checked to be an int ≥ 0."""
    value = typed(params, key, int, "an integer")
    if value is not None and value < 0:
        raise CheckSpecError(f"{key} must be ≥ 0, got {value}", key)
    return value


def str_list(params: dict[str, Any], key: str) -> list[str] | None:
    """The value of `key` if present, checked to be a list of strings."""
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CheckSpecError(f"{key} must be a list of strings, got {value!r}", key)
    return value


def answer_text(obs: Observation) -> str:
    """The observation's answer text with inline reasoning blocks removed.

    Some gateways return reasoning inline as ``<think>…</think>``; scorers judge the
    answer that follows it.
    """
    return _THINK.sub("", obs.content).strip()


def clip(text: str, limit: int = CLIP) -> str:
    """`text` shortened for storage in `CheckResult.answer`."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
