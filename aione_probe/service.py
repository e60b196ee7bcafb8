"""The service: config in, scheduled suite runs out, with metrics, analysis and reports.

`Service` owns one gateway client per gateway, the store (behind its worker thread),
the metrics and the loaded suites. The CLI's one-shot `run`, the long-running `serve`
and `demo` are thin layers over it, so all three behave the same.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import hashlib
import hmac
import logging
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from aione_probe import __version__
from aione_probe.analysis.run import analyse
from aione_probe.asyncstore import AsyncStore, is_disconnect
from aione_probe.config import Config, GatewayConfig, SuiteConfig, key_problems
from aione_probe.errors import ConfigError, GatewayError, config_errors
from aione_probe.estimate import estimate_suite, run_cost, runs_per_day
from aione_probe.fleet import FleetDatabaseError
from aione_probe.fleet.slots import slot_length_s, slot_time
from aione_probe.gateway import GatewayClient
from aione_probe.metrics import ProbeMetrics
from aione_probe.reconcile import reconcile_gateway
from aione_probe.report import build_report_data, render_report
from aione_probe.runner import RunSummary, Target, run_suite
from aione_probe.scheduler import ProbeScheduler
from aione_probe.server import MetricsProcess
from aione_probe.store import Store
from aione_probe.store import fleet as fleetdb
from aione_probe.suites import Suite, load_suite
from aione_probe.types import utcnow

if TYPE_CHECKING:  # the `otel` extra is optional; fleet mode imports Procrastinate
    from aione_probe.fleet.worker import FleetMember
    from aione_probe.otel import OtelExporter

log = logging.getLogger(__name__)

TransportFactory = Callable[[GatewayConfig], httpx.AsyncBaseTransport | None]
HEALTH_INTERVAL_S = 1.0
"""How often the service sends its /healthz body to the server process."""
DRAIN_S = 30.0
"""Grace for runs in progress at SIGTERM (a deliberate stop: let them store their answers)."""
INTERRUPT_GRACE_S = 3.0
"""Grace for runs in progress at Ctrl-C (someone is waiting at the terminal)."""


def load_suites(cfg: Config) -> dict[str, Suite]:
    """Load every configured suite file; bad files raise one `ConfigError` naming them all."""
    suites: dict[str, Suite] = {}
    errors: list[ConfigError] = []
    for i, sc in enumerate(cfg.suites):
        path = cfg.suite_path(sc)
        if not path.is_file():
            errors.append(
                ConfigError(str(cfg.path), f"suites[{i}].file", f"no such probe file: {path}")
            )
            continue
        try:
            suites[sc.job_name] = load_suite(path)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise config_errors(errors)
    return suites


@dataclass(frozen=True)
class Job:
    """One planned suite run: a suite config and the target it covers."""

    suite: SuiteConfig
    target: Target


class Service:
    """Everything a running aione-probe needs, built from one `Config`."""

    def __init__(
        self,
        cfg: Config,
        *,
        metrics: ProbeMetrics | None = None,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.cfg = cfg
        self.suites = load_suites(cfg)
        self.store = Store(cfg.storage_url())
        self.astore = AsyncStore(self.store)
        # Fleet mode: analysis and reports read the whole fleet's history for seconds. On
        # a store thread of their own, this instance's slot claims and run writes never
        # queue behind them (a claim delayed past the next slot would skip it, a run
        # finishing late would make the next slot "previous run still in progress").
        # PostgreSQL takes the second session; a single instance's SQLite keeps one
        # thread, its one writer.
        self.analysis_store = (
            AsyncStore(Store(cfg.storage_url())) if cfg.fleet is not None else self.astore
        )
        self.location = cfg.fleet.location if cfg.fleet is not None else None
        """Fleet mode: this instance's location (None for a single instance)."""
        self.fleet: FleetMember | None = None
        self.metrics = metrics or ProbeMetrics()
        self.metrics.set_build_info(__version__)
        self.metrics.location = self.location
        self.otel = open_otel(cfg)
        factory = transport_factory or (lambda _gw: None)
        self.clients = {g.name: GatewayClient(g, transport=factory(g)) for g in cfg.gateways}
        self.models: dict[str, list[str]] = {}
        self.listed: dict[str, tuple[str, ...] | None] = {}
        self.discovery_errors: dict[str, str] = {}
        self._started = time.monotonic()
        # Secret per process: run seeds cannot be predicted from outside, yet every
        # target probed in the same schedule slot gets the same templated prompts, so a
        # target and its reference endpoint are compared prompt for prompt.
        self._seed_salt = secrets.token_bytes(16)
        self._inflight: set[asyncio.Task[Any]] = set()
        self._scheduler: ProbeScheduler | None = None
        self._fleet_running = False
        self._n_jobs = 0
        #: Grace for runs in progress when `serve` stops; `interrupt()` shortens it.
        self.drain_s = DRAIN_S
        # How late the health heartbeat woke, last minute of beats (event-loop lag).
        self._lag_s: collections.deque[float] = collections.deque(maxlen=60)

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Migrate the store, recover interrupted runs and resolve each gateway's models.

        In fleet mode runs of other processes are the fleet's to recover (`serve` joins).

        Raises:
            FleetDatabaseError: the fleet's PostgreSQL cannot be reached.
        """
        if self.cfg.fleet is not None:
            try:
                await self.astore.call(Store.migrate)
            except Exception as exc:
                if not is_disconnect(exc):
                    raise
                reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                raise FleetDatabaseError(
                    f"fleet database {self.store.url} is unreachable: {reason}"
                ) from None
        else:
            await self.astore.call(Store.migrate)
            n = await self.astore.call(
                Store.mark_interrupted_runs, "service stopped during the run"
            )
            if n:
                log.warning("marked %d interrupted run(s) from a previous process", n)
        for problem in key_problems(self.cfg):
            log.error("%s; no request is sent to this gateway (recorded as auth)", problem)
        for gw in self.cfg.gateways:
            self.models[gw.name] = await self._resolve_models(gw)
            for model in self.models[gw.name]:
                await self.astore.call(
                    Store.ensure_target, gw.name, gw.base_url, gw.protocol, model
                )
        for job in self.plan():
            t, name = job.target, job.suite.job_name
            # Cron suites export their mean interval, so staleness alerts cover them too.
            self.metrics.set_suite_config(
                t.gateway,
                t.model,
                name,
                job.suite.interval or 86400.0 / max(runs_per_day(job.suite), 1e-9),
            )
            suite = self.suites[name]
            self.metrics.declare_job(
                t.gateway,
                t.model,
                name,
                streams={i.stream for i in suite.expand(0, cheap_only=job.suite.cheap_only)},
                checks=suite.check_names(),
                objectives=self.cfg.objectives_for(t.gateway, t.model),
            )

    async def _join_fleet(self) -> None:
        """Fleet mode: join the fleet (`serve` only: one-shot runs are not members)."""
        assert self.cfg.fleet is not None
        # Imported here: the engine needs psycopg and libpq, single instances do not.
        from aione_probe.fleet.worker import FleetMember

        self.fleet = FleetMember(self, self.cfg.fleet)
        await self.fleet.join()
        # From here on a lost database is waited out, not fatal.
        self.astore.retry_disconnects = True

    async def aclose(self) -> None:
        """Close clients and the store thread."""
        for client in self.clients.values():
            await client.aclose()
        if self.otel is not None:
            # Flushes what is pending (a one-shot `run` exports before it exits).
            await asyncio.to_thread(self.otel.shutdown)
        self.astore.close()
        if self.analysis_store is not self.astore:
            self.analysis_store.close()
            self.analysis_store.store.close()

    async def _resolve_models(self, gw: GatewayConfig) -> list[str]:
        # Listed even when models are configured: the model_name check compares the
        # echoed model with the standard ids (a free GET, no tokens).
        try:
            listed = await self.clients[gw.name].list_models()
        except GatewayError as exc:
            self.listed[gw.name] = None
            if gw.models is not None:
                log.warning("gateway %s: GET /models failed: %s", gw.name, exc)
                return list(gw.models)
            self.discovery_errors[gw.name] = str(exc)
            log.error("gateway %s: model discovery failed: %s", gw.name, exc)
            return []
        self.listed[gw.name] = tuple(listed)
        if gw.models is not None:
            return list(gw.models)
        chosen = gw.discovery.select(listed)
        log.info("gateway %s: %d of %d listed models selected", gw.name, len(chosen), len(listed))
        return chosen

    # ----------------------------------------------------------------- planning
    def plan(
        self, gateway: str | None = None, model: str | None = None, suite: str | None = None
    ) -> list[Job]:
        """Every (suite, target) pair the config asks for, optionally narrowed."""
        jobs = []
        for sc in self.cfg.suites:
            if not sc.enabled or (suite and sc.job_name != suite):
                continue
            for gw, models in self.models.items():
                if gateway and gw != gateway:
                    continue
                for m in models:
                    if (model and m != model) or not sc.covers(gw, m):
                        continue
                    jobs.append(Job(sc, Target(gw, m)))
        return jobs

    # ----------------------------------------------------------------- running
    def seed_for(self, suite: SuiteConfig, at: float | None = None) -> int:
        """The run seed of `suite` for the schedule slot that contains time `at` (epoch s).

        Slots are one interval long (one minute for cron suites); jitter smaller than the
        interval keeps a target and its reference in the same slot.
        """
        at = time.time() if at is None else at
        slot = int(at // (suite.interval or 60.0))
        msg = f"{suite.job_name}:{slot}".encode()
        return int.from_bytes(hmac.digest(self._seed_salt, msg, hashlib.sha256)[:8]) >> 2

    async def run_job(
        self,
        job: Job,
        *,
        scheduled: bool,
        progress: Callable[[int], None] | None = None,
        seed: int | None = None,
    ) -> RunSummary | None:
        """One suite run, unless today's spend cap for the gateway is reached (then skipped)."""
        gw = job.target.gateway
        cap = self.cfg.budget.cap_for(gw)
        spent = await self.astore.call(Store.spend, gw, utcnow().date())
        self.metrics.set_spend(gw, spent, cap)
        suite = self.suites[job.suite.job_name]
        if cap is not None and spent >= cap:
            reason = (
                f"daily spend cap reached ({spent:.4f} of {cap:.4f} {self.cfg.budget.currency})"
            )
            await self._skip(job, reason)
            return None
        summary = await run_suite(
            job.target,
            suite,
            client=self.clients[gw],
            astore=self.astore,
            metrics=self.metrics,
            otel=self.otel,
            price=self.cfg.price_for(job.target.model),
            seed=self.seed_for(job.suite) if seed is None else seed,
            scheduled=scheduled,
            cheap_only=job.suite.cheap_only,
            budget_left=None if cap is None else cap - spent,
            suite_name=job.suite.job_name,
            progress=progress,
            listed_models=self.listed.get(gw),
            location=self.location,
        )
        self.metrics.set_spend(gw, spent + summary.cost, cap)
        return summary

    async def _skip(self, job: Job, reason: str) -> None:
        suite = self.suites[job.suite.job_name]
        t = job.target
        await self.astore.call(
            Store.record_skipped_run,
            t.gateway,
            t.model,
            job.suite.job_name,
            suite.version,
            reason,
            location=self.location,
        )
        self.metrics.run_finished(t.gateway, t.model, job.suite.job_name, "skipped", utcnow())
        if self.otel is not None:
            self.otel.run_finished(t.gateway, t.model, job.suite.job_name, "skipped")
        log.warning("skipped %s on %s/%s: %s", job.suite.job_name, t.gateway, t.model, reason)

    def track(self, task: asyncio.Future[Any]) -> None:
        """Count `task` as a run in progress (drained at shutdown, shown in /healthz)."""
        self._inflight.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._inflight.discard)

    def reservation(self, job: Job) -> float:
        """Money a run of `job` holds against the fleet's spend cap while it runs: the
        offline estimate of `estimate_suite` with 25% headroom; the run itself stops
        sending once it has spent that much."""
        est = estimate_suite(job.suite, self.suites[job.suite.job_name])
        cost = run_cost(self.cfg, est, job.target.model)
        return 0.0 if cost is None else 1.25 * cost

    async def claim_and_run(
        self, job: Job, slot_ts: float, *, member: FleetMember, skip_reason: str = ""
    ) -> RunSummary | None:
        """Fleet mode: claim one schedule slot of `job` for this location, then run it.

        Nothing happens when the location already has a run for the slot. A slot that
        starts after it ended (the location had no free worker) or that `skip_reason`
        names is recorded as a skipped run.
        """
        sc, t = job.suite, job.target
        suite = self.suites[sc.job_name]
        late = time.time() - slot_ts - sc.jitter
        if not skip_reason and late > slot_length_s(sc, slot_ts):
            skip_reason = f"started {late:.0f}s after its slot: no free instance in time"
        assert self.location is not None
        cap = self.cfg.budget.cap_for(t.gateway)
        req = fleetdb.SlotRequest(
            gateway=t.gateway,
            model=t.model,
            suite=sc.job_name,
            suite_version=suite.version,
            seed=self.seed_for(sc, slot_ts),
            location=self.location,
            instance=member.name,
            slot_at=slot_time(slot_ts),
            cap=cap,
            estimate=self.reservation(job),
            currency=self.cfg.budget.currency,
            skip_reason=skip_reason,
        )
        claim = await self.astore.call(fleetdb.claim_slot, req, live_since=member.live_since())
        if claim.outcome is fleetdb.ClaimOutcome.duplicate:
            return None
        if claim.outcome is fleetdb.ClaimOutcome.skipped:
            self.metrics.run_finished(t.gateway, t.model, sc.job_name, "skipped", utcnow())
            log.warning("skipped %s on %s/%s: %s", sc.job_name, t.gateway, t.model, claim.reason)
            return None
        return await run_suite(
            t,
            suite,
            client=self.clients[t.gateway],
            astore=self.astore,
            metrics=self.metrics,
            price=self.cfg.price_for(t.model),
            seed=req.seed,
            scheduled=True,
            cheap_only=sc.cheap_only,
            budget_left=None if cap is None else req.estimate,
            suite_name=sc.job_name,
            listed_models=self.listed.get(t.gateway),
            run_id=claim.run_id,
        )

    async def run_once(
        self,
        jobs: list[Job],
        progress: Callable[[int], None] | None = None,
        seed: int | None = None,
    ) -> list[RunSummary]:
        """Run the given jobs once, concurrently (each gateway client bounds its own load).

        Every job of one suite uses the same seed (`seed`, or one drawn now).
        """
        now = time.time()
        results = await asyncio.gather(
            *(
                self.run_job(
                    j,
                    scheduled=False,
                    progress=progress,
                    seed=seed if seed is not None else self.seed_for(j.suite, now),
                )
                for j in jobs
            )
        )
        return [r for r in results if r is not None]

    def requests_in(self, jobs: list[Job]) -> int:
        """How many requests (before retries) the jobs will send: the progress bar's total."""
        return sum(
            len(self.suites[j.suite.job_name].expand(0, cheap_only=j.suite.cheap_only))
            for j in jobs
        )

    # ----------------------------------------------------------------- analysis and outputs
    async def analyse(self) -> None:
        """Recompute verdicts (drift, authenticity, cross-protocol, reconciliation)."""
        await self.analysis_store.call(analyse, self.cfg)
        for gw in self.cfg.gateways:
            if gw.management is not None:
                try:
                    await reconcile_gateway(gw, self.analysis_store)
                except Exception:
                    log.exception("reconciliation of %s failed", gw.name)

    async def analyse_and_report(self, *, analysis: bool = True) -> Path | None:
        """Recompute verdicts, refresh store-derived metrics and write the report.

        With `analysis` False only the metrics and the report (fleet mode: verdicts are
        computed once per fleet by a Procrastinate periodic job, see `FleetMember`).
        """
        cfg = self.cfg
        if analysis:
            await self.analyse()
        await self.analysis_store.call(self.metrics.refresh)
        until = utcnow()
        since = until - timedelta(seconds=cfg.reports.period)
        out = cfg.resolve(cfg.reports.dir)
        return await self.analysis_store.call(write_report, since, until, out)

    def health(self) -> dict[str, Any]:
        """The /healthz body: ok while the scheduler runs (in fleet mode: and the fleet's
        database answers; ``unhealthy`` while it does not)."""
        running = self._scheduler is not None or self._fleet_running
        status = "ok" if running else "starting"
        extra: dict[str, Any] = {}
        if self.fleet is not None:
            extra["fleet"] = self.fleet.health()
            if running and not self.fleet.healthy:
                status = "unhealthy"
        return {
            **extra,
            "status": status,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self._started, 1),
            "jobs": self._n_jobs if running else 0,
            "runs_in_progress": len(self._inflight),
            "discovery_errors": sorted(self.discovery_errors),
            "loop_lag_max_ms": round(max(self._lag_s, default=0.0) * 1000, 2),
        }

    async def serve(
        self,
        stop: asyncio.Event,
        *,
        analysis_interval_s: float = 300.0,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        """Schedule every job and serve HTTP until `stop` is set, then drain and return.

        Runs in progress get `drain_s` seconds (read when `stop` is set) to finish; then
        they are cancelled, store what they observed and are marked interrupted. In fleet
        mode the instance first joins the fleet; the fleet's queue replaces the local
        scheduler.

        Raises:
            ConfigError: fleet mode, and a live instance of the fleet runs a different config.
        """
        if self.cfg.fleet is not None:
            await self._join_fleet()
        server = MetricsProcess(
            self.cfg.server.host,
            self.cfg.server.port,
            self.metrics,
            self.cfg.resolve(self.cfg.reports.dir),
            location=self.location,
        )
        by_key = {(j.suite.job_name, j.target.gateway, j.target.model): j for j in self.plan()}
        self._n_jobs = len(by_key)

        async def fire(sc: SuiteConfig, gateway: str, model: str) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._inflight.add(task)
            try:
                await self.run_job(by_key[(sc.job_name, gateway, model)], scheduled=True)
            except asyncio.CancelledError:
                # Cancelled by `_drain` at shutdown: the run stored what it observed as
                # "interrupted by shutdown"; re-raised, the scheduler would log a traceback
                # for an ordinary Ctrl-C.
                log.info("run %s on %s/%s interrupted by shutdown", sc.job_name, gateway, model)
            except Exception:
                log.exception("run %s on %s/%s crashed", sc.job_name, gateway, model)
            finally:
                self._inflight.discard(task)

        async def skipped(sc: SuiteConfig, gateway: str, model: str, reason: str) -> None:
            await self._skip(by_key[(sc.job_name, gateway, model)], reason)

        # Started before the scheduler: the instruments must be shared before any attempt.
        server.start()
        scheduler: ProbeScheduler | None = None
        fleet_stop = asyncio.Event()
        fleet_task: asyncio.Task[None] | None = None
        if self.fleet is not None:
            fleet_task = asyncio.create_task(
                self.fleet.run(fleet_stop, list(by_key.values()), analysis_interval_s)
            )
            self._fleet_running = True
        else:
            scheduler = ProbeScheduler(fire, skipped)
            for job in by_key.values():
                scheduler.add(job.suite, job.target.gateway, job.target.model)
            scheduler.start()
            self._scheduler = scheduler
        heartbeat = asyncio.create_task(self._publish_health(server))
        # The store's worker thread (analysis, report rendering) shares the GIL with the loop
        # that times probes: a shorter switch interval bounds how long it can hold it, and
        # freezing the objects built at start-up keeps the collector's full passes short.
        sys.setswitchinterval(0.001)
        gc.freeze()
        if on_ready is not None:
            on_ready(server.url)
        log.info("serving on %s with %d jobs", server.url, len(by_key))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=analysis_interval_s)
                if stop.is_set():
                    break  # the caller writes the last report after the drain, if any
                try:
                    await self.analyse_and_report(analysis=self.fleet is None)
                except Exception:
                    log.exception("analysis or report failed; the service keeps running")
        finally:
            # Pause first: the scheduler's shutdown cancels the runs it started, and runs
            # in progress should get the grace period to finish and store what they saw.
            if scheduler is not None:
                scheduler.pause()
            if fleet_task is not None:
                fleet_stop.set()
                await fleet_task
            await self._drain(self.drain_s)
            if scheduler is not None:
                scheduler.shutdown()
                await scheduler.settle()
            mine = self.fleet.name if self.fleet is not None else None
            n = await self.astore.call(
                Store.mark_interrupted_runs, "interrupted by shutdown", instance=mine
            )
            if n:
                log.warning("marked %d run(s) interrupted by shutdown", n)
            if self.fleet is not None:
                await self.fleet.leave()
            self._fleet_running = False
            heartbeat.cancel()
            server.stop()
            self._scheduler = None

    @property
    def interrupted(self) -> bool:
        """Whether the stop was an interrupt (Ctrl-C): a short grace, no final report."""
        return self.drain_s < DRAIN_S

    def interrupt(self) -> None:
        """Ctrl-C: runs in progress get `INTERRUPT_GRACE_S` instead of the full drain."""
        self.drain_s = min(self.drain_s, INTERRUPT_GRACE_S)

    async def _publish_health(self, server: MetricsProcess) -> None:
        """Send the /healthz body to the server process every `HEALTH_INTERVAL_S`; how late
        each sleep wakes is the event loop's lag (``loop_lag_max_ms``, last minute)."""
        while True:
            server.publish_health(self.health())
            due = time.perf_counter() + HEALTH_INTERVAL_S
            await asyncio.sleep(HEALTH_INTERVAL_S)
            self._lag_s.append(max(0.0, time.perf_counter() - due))

    async def _drain(self, grace_s: float) -> None:
        """Let runs in progress finish within the grace period, then cancel them.

        A cancelled run stores what it observed so far (see `run_suite`).
        """
        await asyncio.sleep(0)  # a run the scheduler fired just now registers itself first
        if not self._inflight:
            return
        log.info("waiting up to %.0fs for %d run(s) in progress", grace_s, len(self._inflight))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        # Re-read the set: a run can register while the others are awaited.
        while self._inflight and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._inflight), timeout=left)
        pending = set(self._inflight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def run_service(
    cfg: Config,
    runs: int = 1,
    *,
    metrics: ProbeMetrics | None = None,
    report: bool = False,
    on_round: Callable[[int], None] | None = None,
) -> tuple[list[RunSummary], Path | None]:
    """Start a `Service` on `cfg`, run its whole plan `runs` times, one round after the
    other (`on_round` is told each finished round, from 1), then with `report` analyse
    and write the report; the service is always closed.

    The one-shot path of ``demo --once``, the benchmarks and the tests. Returns every
    run's summary and the report's index page (None without `report`).
    """
    service = Service(cfg, metrics=metrics)
    summaries: list[RunSummary] = []
    index = None
    try:
        await service.start()
        for i in range(runs):
            summaries += await service.run_once(service.plan())
            if on_round is not None:
                on_round(i + 1)
        if report:
            index = await service.analyse_and_report()
    finally:
        await service.aclose()
    return summaries, index


def open_otel(cfg: Config) -> OtelExporter | None:
    """The OpenTelemetry exporter of `cfg`, or None when `[otel]` is absent.

    Raises:
        ConfigError: a header variable is not set, or the `otel` extra is not installed.
    """
    if cfg.otel is None:
        return None
    headers = cfg.otel.headers(cfg.path)
    try:
        from aione_probe.otel import OtelExporter
    except ImportError as exc:
        raise ConfigError(
            str(cfg.path), "otel", f"needs the otel extra: pip install 'aione-probe[otel]' ({exc})"
        ) from None
    return OtelExporter(
        cfg.otel,
        cfg.gateways,
        headers=headers,
        currency=cfg.budget.currency,
        objectives=cfg.objectives_for,
    )


def write_report(store: Store, since: datetime, until: datetime, out_dir: Path) -> Path:
    """Render the HTML report (and its JSON export) for a period; returns the index page."""
    data = build_report_data(store, since=since, until=until)
    render_report(data, out_dir)
    return out_dir / "index.html"
