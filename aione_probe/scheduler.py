"""APScheduler jobs: one per (gateway, model, suite), on the service's event loop.

The job store is in memory and rebuilt from the config at start: runs, not jobs, are
what gets persisted. Each job has jitter, never overlaps itself (``max_instances=1``; a
fire that finds the previous run still going is recorded as a skipped run), coalesces
missed fires into one, and tolerates a late start up to a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aione_probe.config import SuiteConfig
from aione_probe.types import utcnow

log = logging.getLogger(__name__)

JobFn = Callable[[SuiteConfig, str, str], Awaitable[object]]
SkipFn = Callable[[SuiteConfig, str, str, str], Awaitable[object]]


def build_trigger(suite: SuiteConfig) -> BaseTrigger:
    """The suite's trigger: an interval or a five-field cron line (UTC), with its jitter."""
    jitter = int(suite.jitter) or None
    if suite.cron is not None:
        trigger = CronTrigger.from_crontab(suite.cron, timezone=UTC)
        trigger.jitter = jitter
        return trigger
    assert suite.interval is not None
    return IntervalTrigger(seconds=suite.interval, jitter=jitter, timezone=UTC)


def job_id(suite: SuiteConfig, gateway: str, model: str) -> str:
    """Stable job id, also used in logs: ``suite:gateway:model``."""
    return f"{suite.job_name}:{gateway}:{model}"


class ProbeScheduler:
    """Schedules suite runs on the running asyncio loop."""

    def __init__(
        self,
        run: JobFn,
        on_skip: SkipFn,
        *,
        misfire_grace_s: float = 300.0,
        start_spread_s: float = 5.0,
    ) -> None:
        self._run = run
        self._on_skip = on_skip
        self._spread = start_spread_s
        self._jobs: dict[str, tuple[SuiteConfig, str, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[object]] = set()
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "max_instances": 1,
                "coalesce": True,
                "misfire_grace_time": int(misfire_grace_s),
            },
        )
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

    def add(self, suite: SuiteConfig, gateway: str, model: str) -> str:
        """Add the job for (suite, gateway, model); its first run starts within a few seconds."""
        jid = job_id(suite, gateway, model)
        first = utcnow() + timedelta(seconds=random.uniform(0, self._spread))
        self._scheduler.add_job(
            self._run,
            trigger=build_trigger(suite),
            args=(suite, gateway, model),
            id=jid,
            name=jid,
            replace_existing=True,
            next_run_time=first,
        )
        self._jobs[jid] = (suite, gateway, model)
        return jid

    @property
    def job_ids(self) -> list[str]:
        """Ids of the scheduled jobs."""
        return sorted(self._jobs)

    def start(self) -> None:
        """Start firing jobs (must be called from within the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._scheduler.start()

    def pause(self) -> None:
        """Stop firing jobs; runs in progress continue (shutdown would cancel them)."""
        if self._scheduler.running:
            self._scheduler.pause()

    def shutdown(self) -> None:
        """Stop scheduling new runs; runs in progress are left to the caller to drain."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def settle(self) -> None:
        """Wait until every skipped run the scheduler reported is recorded (call after
        `pause`: a skip recorded after the store closed would be lost or raise)."""
        while self._pending:
            for result in await asyncio.gather(*set(self._pending), return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("recording a skipped run failed: %s", result)

    def _skipped(self, event: JobExecutionEvent) -> None:
        entry = self._jobs.get(event.job_id)
        if entry is None:
            return
        reason = (
            "previous run still in progress"
            if event.code == EVENT_JOB_MAX_INSTANCES
            else "missed its start time by more than the grace period"
        )
        log.warning("job %s skipped: %s", event.job_id, reason)
        if self._loop is not None:
            # Listeners run inside the scheduler's loop callback; record the skip as a task.
            task = self._loop.create_task(self._on_skip(*entry, reason))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
