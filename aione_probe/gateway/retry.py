"""Retry timing: Retry-After parsing and exponential backoff with full jitter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from aione_probe.types import utcnow


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the gateway asked us to wait, or None.

    Reads ``retry-after-ms`` (OpenAI's extension) first, then ``retry-after`` as seconds
    or as an HTTP date. Unparseable values are ignored; negative waits become 0.
    """
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utcnow())).total_seconds())


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None,
    rand: Callable[[], float],
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    A Retry-After from the gateway wins (capped at `cap`); otherwise full jitter:
    uniform in ``[0, min(cap, base * 2**(attempt-1))]``.
    """
    if retry_after is not None:
        return min(retry_after, cap)
    return rand() * min(cap, base * 2 ** (attempt - 1))
