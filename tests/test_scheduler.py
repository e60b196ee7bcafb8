"""The scheduler: triggers from config, no overlapping runs, skips recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aione_probe.config import SuiteConfig
from aione_probe.scheduler import ProbeScheduler, build_trigger, job_id


def test_triggers_from_config() -> None:
    interval = build_trigger(SuiteConfig(file="smoke.toml", interval="15m", jitter="30s"))
    assert isinstance(interval, IntervalTrigger)
    assert interval.interval.total_seconds() == 900 and interval.jitter == 30
    cron = build_trigger(SuiteConfig(file="x.toml", cron="30 3 * * *"))
    assert isinstance(cron, CronTrigger)
    start = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    assert cron.get_next_fire_time(None, start) == datetime(2026, 11, 26, 3, 30, tzinfo=UTC)
    suite = SuiteConfig(file="probes/smoke.toml", interval=60)
    assert job_id(suite, "gw", "m") == "smoke:gw:m"


async def test_no_overlap_skips_are_reported_and_settle_awaits_their_records() -> None:
    """A fire that finds its previous run going is a skip, recorded by a task of its own:
    `settle` (the service's drain) awaits every one, so none still writes when the store
    closes."""
    started: list[str] = []
    begun: list[str] = []
    recorded: list[str] = []

    async def run(suite: SuiteConfig, gateway: str, model: str) -> None:
        started.append(model)
        await asyncio.sleep(2.6)  # longer than the interval: the next fires must be skipped

    async def on_skip(suite: SuiteConfig, gateway: str, model: str, reason: str) -> None:
        begun.append(reason)
        await asyncio.sleep(1.5)  # a slow store write: the last one outlives the shutdown
        recorded.append(reason)

    sched = ProbeScheduler(run, on_skip, start_spread_s=0.0)
    sched.add(SuiteConfig(file="smoke.toml", interval=1), "gw", "m")
    sched.start()
    try:
        await asyncio.sleep(3.5)
    finally:
        sched.pause()
        sched.shutdown()
    assert 1 <= len(started) <= 2
    assert begun and all(r == "previous run still in progress" for r in begun)
    assert len(recorded) < len(begun)  # still writing at shutdown
    await sched.settle()
    assert recorded == begun
