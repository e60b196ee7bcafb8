"""Schedule slots in fleet mode: cron lines, slot lengths and the per-location queue."""

from __future__ import annotations

from datetime import UTC, datetime

from aione_probe.config import SuiteConfig, slot_cron


def queue_name(location: str) -> str:
    """The Procrastinate queue of one location."""
    return f"aione-{location}"


def suite_cron(suite: SuiteConfig) -> str:
    """The suite's schedule as a cron line (UTC; six fields when it needs seconds)."""
    if suite.cron is not None:
        return suite.cron
    assert suite.interval is not None
    cron = slot_cron(suite.interval)
    assert cron is not None, "config validation refuses such intervals in fleet mode"
    return cron


def slot_length_s(suite: SuiteConfig, slot_ts: float) -> float:
    """Seconds from the slot starting at `slot_ts` to the next one."""
    if suite.interval is not None:
        return suite.interval
    import croniter  # a dependency of the fleet extra (Procrastinate uses it)

    it = croniter.croniter(suite_cron(suite), slot_ts)
    return float(it.get_next(float)) - slot_ts


def slot_time(ts: float) -> datetime:
    """A slot's epoch timestamp as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, UTC)
