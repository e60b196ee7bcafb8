"""Fleet mode on Procrastinate: periodic jobs per location, claimed once per slot.

Each instance registers one Procrastinate periodic task per job (suite, gateway, model)
with ``periodic_id = "<location>|<job>"`` on the queue ``aione-<location>``. Procrastinate
defers each (periodic id, slot) exactly once however many instances of the location run
their deferrers (a unique row in ``procrastinate_periodic_defers``), and its workers fetch
each job once (``SELECT … FOR UPDATE SKIP LOCKED``). The handler then claims the slot in
the store (`aione_probe.store.fleet.claim_slot`), whose unique index is the last word on
"once per location", and runs the suite with the slot's shared seed.

Interrupted runs (an instance killed or cut off): the rule is **skip, never retry**. A
running run whose instance stops sending heartbeats for ``stalled_after`` is marked
``failed`` with an ``interrupted`` reason by whichever live instance notices; a
Procrastinate job left ``doing`` by a dead worker is finished as failed and, if its slot
had no run row yet (killed during jitter), a skipped run records the slot. Retrying would
send the slot's prompts a second time (money) and could make two runs of one slot if the
"lost" instance was only cut off from the database and still finishing; the next slot
comes one interval later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from procrastinate import App, JobContext, PsycopgConnector
from procrastinate.jobs import Status
from sqlalchemy import event
from sqlalchemy.engine import make_url

from aione_probe import __version__
from aione_probe.config import FleetConfig, slot_cron
from aione_probe.fleet import identity
from aione_probe.fleet.slots import queue_name, suite_cron
from aione_probe.store import fleet as fleetdb
from aione_probe.types import utcnow

if TYPE_CHECKING:
    from aione_probe.service import Job, Service

log = logging.getLogger(__name__)

TASK_NAME = "aione_probe.run_slot"
ANALYSIS_TASK = "aione_probe.analyse"
ANALYSIS_QUEUE = "aione-analysis"
"""Fleet-wide queue of the analysis job: verdicts are computed once per period, not once
per instance (every instance works this queue besides its location's)."""
_SCHEMA_LOCK_KEY = 0x41494F4E51  # "AIONQ": one instance installs the queue schema


def libpq_url(url: str) -> str:
    """The fleet URL as libpq takes it (psycopg's connection string)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class _CountingConnector(PsycopgConnector):
    """Procrastinate's psycopg connector, counting queries (the benchmark's round trips)."""

    def __init__(self, count: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._count = count

    async def execute_query_async(self, query: Any, **arguments: Any) -> None:
        self._count()
        return await super().execute_query_async(query, **arguments)

    async def execute_query_one_async(self, query: Any, **arguments: Any) -> Any:
        self._count()
        return await super().execute_query_one_async(query, **arguments)

    async def execute_query_all_async(self, query: Any, **arguments: Any) -> Any:
        self._count()
        return await super().execute_query_all_async(query, **arguments)


def install_queue_schema(url: str) -> None:
    """Install Procrastinate's schema once (under an advisory lock) if it is missing."""
    import psycopg
    from procrastinate.schema import SchemaManager

    with psycopg.connect(libpq_url(url), connect_timeout=10) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() == (None,):
            conn.execute(SchemaManager.get_schema())


class FleetMember:
    """This process as a member of the fleet: joins, runs its location's slots, leaves."""

    def __init__(self, service: Service, fleet: FleetConfig) -> None:
        self.service = service
        self.fleet = fleet
        self.location = fleet.location
        base = fleet.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.name = f"{base}#{secrets.token_hex(3)}"
        self.instance_id: int | None = None
        self.queries = 0
        self.worker_up = False
        self.lost_db_since: float | None = None
        self._jobs: dict[str, Job] = {}
        self._app: App | None = None
        event.listen(service.store.engine, "before_cursor_execute", self._count_sql)

    def _count_sql(self, *_args: Any) -> None:
        self.queries += 1

    def _count(self) -> None:
        self.queries += 1

    # ----------------------------------------------------------------- joining
    async def join(self) -> None:
        """Install the queue schema, check this config against the fleet's, register.

        Raises:
            ConfigError: a live instance runs a different fleet config (names the keys).
        """
        svc = self.service
        await asyncio.to_thread(install_queue_schema, self.fleet.url)
        mine = identity.describe(svc.cfg, svc.suites)
        values = {
            "name": self.name,
            "location": self.location,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "config": mine,
        }

        def check(live: list[Any]) -> None:
            identity.refuse_if_different(svc.cfg, mine, self.location, live)

        self.instance_id = await svc.astore.call(
            fleetdb.join_fleet, values, live_since=self.live_since(), check=check
        )
        svc._seed_salt = await svc.astore.call(fleetdb.seed_salt)
        log.info("joined the fleet as %s in location %s", self.name, self.location)

    def live_since(self) -> datetime:
        """Instances with a heartbeat after this time count as live."""
        return utcnow() - timedelta(seconds=self.fleet.stalled_after)

    # ----------------------------------------------------------------- running
    def _build_app(self, jobs: list[Job], analysis_interval_s: float) -> App:
        connector = _CountingConnector(
            self._count,
            conninfo=libpq_url(self.fleet.url),
            min_size=1,
            max_size=8,
        )
        app = App(connector=connector)
        task = app.task(name=TASK_NAME, pass_context=True, queue=queue_name(self.location))(
            self._handle
        )
        analysis = app.task(name=ANALYSIS_TASK, pass_context=True, queue=ANALYSIS_QUEUE)(
            self._analyse
        )
        cron = slot_cron(analysis_interval_s) or slot_cron(300.0)
        assert cron is not None
        app.periodic_registry.register_task(
            task=analysis,
            cron=cron,
            periodic_id="fleet",
            configure_kwargs={"queue": ANALYSIS_QUEUE, "task_kwargs": {}},
        )
        for job in jobs:
            key = self._key(job)
            self._jobs[key] = job
            app.periodic_registry.register_task(
                task=task,
                cron=suite_cron(job.suite),
                periodic_id=f"{self.location}|{key}",
                configure_kwargs={
                    "queue": queue_name(self.location),
                    "task_kwargs": {"job": key},
                },
            )
        return app

    @staticmethod
    def _key(job: Job) -> str:
        return f"{job.suite.job_name}|{job.target.gateway}|{job.target.model}"

    async def run(
        self, stop: asyncio.Event, jobs: list[Job], analysis_interval_s: float = 300.0
    ) -> None:
        """Work the location's queue and keep the heartbeat until `stop` is set.

        Analysis (verdicts) runs as one fleet-wide periodic job every
        `analysis_interval_s` (rounded to a cron-aligned period; 5 min if it is not one).

        A lost database stops the Procrastinate worker; it is restarted with backoff while
        runs in flight carry on (their writes wait for the database, see `AsyncStore`).
        """
        self._app = app = self._build_app(jobs, analysis_interval_s)
        beat = asyncio.create_task(self._heartbeats(stop))
        delay = 1.0
        try:
            while not stop.is_set():
                try:
                    async with app.open_async():
                        worker = asyncio.create_task(
                            app.run_worker_async(
                                queues=[queue_name(self.location), ANALYSIS_QUEUE],
                                name=self.name,
                                concurrency=self.fleet.concurrency,
                                install_signal_handlers=False,
                                delete_jobs="successful",
                                update_heartbeat_interval=self.fleet.heartbeat,
                                stalled_worker_timeout=self.fleet.stalled_after,
                                shutdown_graceful_timeout=0,
                            )
                        )
                        self.worker_up = True
                        delay = 1.0
                        waiter = asyncio.create_task(stop.wait())
                        await asyncio.wait({worker, waiter}, return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        if not worker.done():
                            worker.cancel()
                        # The worker stopped on its own only when the database failed it.
                        try:
                            await worker
                        except asyncio.CancelledError:
                            if not stop.is_set():
                                raise
                except Exception as exc:
                    log.error("fleet worker stopped: %s; retrying in %.0fs", exc, delay)
                finally:
                    self.worker_up = False
                if stop.is_set():
                    break
                self.lost_db_since = self.lost_db_since or time.monotonic()
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 30.0)
        finally:
            beat.cancel()

    async def leave(self) -> None:
        """Record a clean exit (best effort: the database may be gone)."""
        if self.instance_id is None:
            return
        try:
            await asyncio.wait_for(
                self.service.astore.call(fleetdb.leave_fleet, self.instance_id), 10
            )
        except Exception as exc:
            log.warning("could not record leaving the fleet: %s", exc)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        """Heartbeat, and recover the runs and jobs of instances that went silent."""
        assert self.instance_id is not None
        astore = self.service.astore
        while not stop.is_set():
            try:
                if not await astore.call(fleetdb.heartbeat, self.instance_id):
                    log.warning("the fleet had presumed this instance lost; it is back")
                lost, n = await astore.call(fleetdb.recover_lost, stale_before=self.live_since())
                for name in lost:
                    log.warning("instance %s presumed lost (no heartbeat)", name)
                if n:
                    log.warning("marked %d run(s) of lost instances interrupted", n)
                await self._recover_stalled_jobs()
                self.lost_db_since = None
            except Exception as exc:
                self.lost_db_since = self.lost_db_since or time.monotonic()
                log.error("fleet heartbeat failed: %s", exc)
            await _sleep_or_stop(stop, self.fleet.heartbeat)

    async def _recover_stalled_jobs(self) -> None:
        """Finish jobs of dead workers as failed; record a slot that never got a run row."""
        app = self._app
        if app is None or not self.worker_up:
            return
        manager = app.job_manager
        stalled = []
        for queue in (queue_name(self.location), ANALYSIS_QUEUE):
            stalled += await manager.get_stalled_jobs(
                queue=queue, seconds_since_heartbeat=self.fleet.stalled_after
            )
        for job in stalled:
            args = job.task_kwargs
            known = self._jobs.get(str(args.get("job")))
            if known is not None and "timestamp" in args:
                await self.service.claim_and_run(
                    known,
                    float(args["timestamp"]),
                    member=self,
                    skip_reason="interrupted: its instance was lost before the run started; "
                    "not retried",
                )
            try:
                await manager.finish_job(job, status=Status.FAILED, delete_job=False)
            except Exception as exc:  # finished meanwhile by its own worker
                log.debug("stalled job %s already settled: %s", job.id, exc)
            log.warning("job %s of a lost worker recorded as interrupted", job.id)

    async def _analyse(self, context: JobContext, timestamp: int) -> None:
        """Procrastinate task: one fleet-wide analysis pass (whichever instance fetches it)."""
        log.info("fleet analysis pass for slot %d", timestamp)
        started = time.monotonic()
        await self.service.analyse()
        # Its length matters: the pass holds this instance's store thread, so this
        # instance's run writes and slot claims wait behind it.
        took = time.monotonic() - started
        log.info("fleet analysis pass for slot %d took %.1fs", timestamp, took)

    async def _handle(self, context: JobContext, job: str, timestamp: int) -> None:
        """Procrastinate task: one slot of one job in this location."""
        known = self._jobs.get(job)
        if known is None:
            log.error("job %s is not in this instance's plan; recorded nowhere", job)
            return
        run = asyncio.ensure_future(self._jittered(known, float(timestamp)))
        # Shielded: a worker stopped by a lost database or a shutdown must not cancel the
        # run; the service drains it like any run in progress.
        self.service.track(run)
        await asyncio.shield(run)

    async def _jittered(self, job: Job, slot_ts: float) -> None:
        jitter = random.uniform(0, job.suite.jitter) if job.suite.jitter else 0.0
        wait = slot_ts + jitter - time.time()
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                # Stopped during the jitter: the slot is this instance's; say so.
                reason = "interrupted: its instance stopped before the run started"
                await asyncio.shield(
                    self.service.claim_and_run(job, slot_ts, member=self, skip_reason=reason)
                )
                raise
        await self.service.claim_and_run(job, slot_ts, member=self)

    # ----------------------------------------------------------------- health
    @property
    def healthy(self) -> bool:
        """Connected: the worker runs and the last heartbeat reached the database."""
        return self.worker_up and self.lost_db_since is None and self.service.astore.connected

    def health(self) -> dict[str, Any]:
        """The fleet part of /healthz."""
        return {
            "instance": self.name,
            "location": self.location,
            "database": "ok" if self.healthy else "unreachable",
            "db_queries": self.queries,
        }


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
