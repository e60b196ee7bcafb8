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


async def test_no_overlap_and_skips_are_reported() -> None:
    started: list[str] = []
    skipped: list[str] = []

    async def run(suite: SuiteConfig, gateway: str, model: str) -> None:
        started.append(model)
        await asyncio.sleep(2.6)  # longer than the interval: the next fires must be skipped

    async def on_skip(suite: SuiteConfig, gateway: str, model: str, reason: str) -> None:
        skipped.append(reason)

    sched = ProbeScheduler(run, on_skip, start_spread_s=0.0)
    sched.add(SuiteConfig(file="smoke.toml", interval=1), "gw", "m")
    sched.start()
    try:
        await asyncio.sleep(3.5)
    finally:
        sched.pause()
        sched.shutdown()
    assert 1 <= len(started) <= 2
    assert skipped and all(r == "previous run still in progress" for r in skipped)
