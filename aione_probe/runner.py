"""One suite run: a suite's probes against one (gateway, model), end to end.

Expands the suite with the run's seed, sends every request through the gateway client
(which bounds concurrency and rate), runs the checks on each final attempt and the group
checks over each probe's samples, prices every attempt, then writes the run, its
observations and its check results in one transaction. Samples of a probe that has group
checks (a cache probe, a plain-versus-stream comparison) are sent one after another,
because their order is the experiment; other probes run concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from aione_probe.asyncstore import AsyncStore
from aione_probe.checks import CheckContext, run_checks, run_group_checks
from aione_probe.checks.cache import CLAIMS, judge_claims
from aione_probe.checks.image import compact_parts
from aione_probe.checks.plausible import ECHO_PREFIX, measurable
from aione_probe.checks.plausible import NAME as PLAUSIBLE
from aione_probe.cost import Price, cost_of
from aione_probe.errors import FailureKind
from aione_probe.gateway import GatewayClient
from aione_probe.metrics import ProbeMetrics
from aione_probe.store import CheckRecord, ObservationRecord, Store
from aione_probe.suites import Probe, ProbeInstance, Suite
from aione_probe.types import ChatRequest, CheckResult, CheckValue, Observation, utcnow

if TYPE_CHECKING:  # the `otel` extra is optional
    from aione_probe.otel import OtelExporter

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]
SendFn = Callable[[ProbeInstance, ChatRequest], Awaitable["_ProbeOutcome"]]


@dataclass(frozen=True)
class Target:
    """What a suite runs against: one model behind one gateway."""

    gateway: str
    model: str


@dataclass
class RunSummary:
    """What one suite run did, for the CLI's table and the exit code."""

    run_id: int
    target: Target
    suite: str
    status: str
    reason: str = ""
    requests: int = 0
    failed_requests: int = 0
    checks: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    ttft_s: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No failed request and no failed check (a run with nothing to send passes)."""
        return (
            self.status in ("ok", "skipped")
            and self.checks.get(CheckValue.failed.value, 0) == 0
            and self.checks.get(CheckValue.missing.value, 0) == 0
        )


@dataclass
class _ProbeOutcome:
    instance: ProbeInstance
    attempts: list[Observation]
    costs: list[float | None]
    checks: list[CheckResult]
    group_checks: list[CheckResult] = field(default_factory=list)
    #: the echo requests that measured this answer (stored as their own probe)
    echoes: list[_ProbeOutcome] = field(default_factory=list)


#: The echo requests of ``usage_completion_plausible``, stored as probes of their own so
#: they count in cost and spend but never as answers.
ECHO_BASE = Probe(id="usage-echo-base", category="usage", prompt=ECHO_PREFIX, max_tokens=1,
                  temperature=0.0)  # fmt: skip
ECHO_TEXT = Probe(id="usage-echo", category="usage", prompt=ECHO_PREFIX + "{{text}}",
                  max_tokens=1, temperature=0.0)  # fmt: skip


class _EchoMeter:
    """Measures a text in the gateway's own tokens: ``prompt_tokens`` of the text sent back
    after `ECHO_PREFIX`, minus that of the bare prefix (sent once per run)."""

    def __init__(self, model: str, send: SendFn) -> None:
        self._model, self._send = model, send
        self._lock = asyncio.Lock()
        self._base: int | None = None
        self._base_outcome: _ProbeOutcome | None = None

    async def measure(self, text: str) -> tuple[int | None, list[_ProbeOutcome]]:
        """The text's token count (None if an echo failed) and the echo outcomes to store."""
        out: list[_ProbeOutcome] = []
        async with self._lock:
            if self._base is None and self._base_outcome is None:
                inst = ProbeInstance(ECHO_BASE, 0)
                self._base_outcome = await self._send(inst, inst.request(self._model))
                out.append(self._base_outcome)
                final = self._base_outcome.attempts[-1]
                self._base = final.usage.prompt_tokens if final.ok else None
        if self._base is None:
            return None, out
        inst = ProbeInstance(ECHO_TEXT, 0, {"text": text})
        request = ChatRequest(
            model=self._model,
            messages=({"role": "user", "content": ECHO_PREFIX + text},),
            max_tokens=1,
            temperature=0.0,
        )
        outcome = await self._send(inst, request)
        out.append(outcome)
        final = outcome.attempts[-1]
        if not final.ok or final.usage.prompt_tokens is None:
            return None, out
        return final.usage.prompt_tokens - self._base, out


class _Budget:
    """Money left for this run; once spent, no new request starts."""

    def __init__(self, left: float | None) -> None:
        self.left = left

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0

    def spend(self, amount: float | None) -> None:
        if self.left is not None and amount:
            self.left -= amount


def new_seed() -> int:
    """A fresh run seed: each run's templated prompts are new and cannot be listed ahead."""
    return secrets.randbits(62)


async def run_suite(
    target: Target,
    suite: Suite,
    *,
    client: GatewayClient,
    astore: AsyncStore,
    metrics: ProbeMetrics | None = None,
    otel: OtelExporter | None = None,
    price: Price | None = None,
    seed: int | None = None,
    scheduled: bool = False,
    cheap_only: bool = False,
    budget_left: float | None = None,
    suite_name: str | None = None,
    progress: ProgressFn | None = None,
    listed_models: tuple[str, ...] | None = None,
    run_id: int | None = None,
    location: str | None = None,
) -> RunSummary:
    """Run `suite` once against `target` and store everything it observed.

    Gateway behaviour never raises out of here: failures are observations. Cancellation
    (shutdown) stores what was observed so far with status ``failed`` and reason
    ``interrupted``, then re-raises. `run_id` is a run already recorded as ``running``
    (fleet mode claims its slot first); without it the run is recorded here, in
    `location` (fleet mode's manual runs).
    """
    name = suite_name or suite.id
    seed = new_seed() if seed is None else seed
    instances = suite.expand(seed, cheap_only=cheap_only)
    if not instances:
        reason = "no probe selected (cheap_only on a suite without cheap probes)"
        if run_id is not None:
            await astore.call(Store.finish_run, run_id, "skipped", reason, [], [])
        else:
            run_id = await astore.call(
                Store.record_skipped_run,
                target.gateway,
                target.model,
                name,
                suite.version,
                reason,
                location=location,
            )
        return RunSummary(run_id, target, name, "skipped", reason)
    if run_id is None:
        run_id = await astore.call(
            Store.start_run,
            target.gateway,
            target.model,
            name,
            suite.version,
            seed,
            scheduled,
            location=location,
        )
    budget = _Budget(budget_left)
    outcomes: list[_ProbeOutcome] = []
    reason = ""
    context = _Context(price, listed_models)
    try:
        groups = await _run_groups(
            _group_by_probe(instances),
            target,
            suite,
            client,
            context,
            budget,
            metrics,
            otel,
            name,
            progress,
        )
        for group in groups:
            outcomes.extend(group)
    except asyncio.CancelledError:
        reason = "interrupted by shutdown"
        await _write(astore, run_id, target, name, outcomes, reason, metrics, otel, final=True)
        raise
    _judge_claims(groups, target, name, context.price, metrics, otel)
    if budget.exhausted and sum(len(o.attempts) for o in outcomes) < len(instances):
        reason = "spend cap reached during the run"
    return await _write(astore, run_id, target, name, outcomes, reason, metrics, otel)


def _judge_claims(
    groups: list[list[_ProbeOutcome]],
    target: Target,
    suite_name: str,
    price: Price | None,
    metrics: ProbeMetrics | None,
    otel: OtelExporter | None,
) -> None:
    """Cached tokens claimed outside the cache probe are judged by timing too
    (`judge_claims`); the run-level result is stored with the first claiming probe."""
    others = [g for g in groups if g and g[0].instance.probe.kind != "cache"]
    verdict = judge_claims([[o.attempts[-1] for o in g] for g in others], price)
    if verdict is None:
        return
    verdict = replace(verdict, name=CLAIMS)
    owner = next(
        o for g in others for o in g if o.attempts[-1].ok and o.attempts[-1].usage.cached_tokens
    )
    owner.group_checks.append(verdict)
    if metrics is not None:
        metrics.observe_checks(target.gateway, target.model, suite_name, [verdict])
    if otel is not None:
        otel.observe_checks(target.gateway, target.model, suite_name, [verdict])


@dataclass(frozen=True)
class _Context:
    """What every check of this run may know besides its observation."""

    price: Price | None
    listed_models: tuple[str, ...] | None

    def for_(
        self, inst: ProbeInstance, request: ChatRequest, text_tokens: int | None = None
    ) -> CheckContext:
        return CheckContext(
            instance=inst,
            request=request,
            price=self.price,
            listed_models=self.listed_models,
            text_tokens=text_tokens,
        )


def _group_by_probe(instances: list[ProbeInstance]) -> list[list[ProbeInstance]]:
    groups: dict[str, list[ProbeInstance]] = {}
    for inst in instances:
        groups.setdefault(inst.probe.id, []).append(inst)
    return list(groups.values())


async def _run_groups(
    groups: list[list[ProbeInstance]],
    target: Target,
    suite: Suite,
    client: GatewayClient,
    context: _Context,
    budget: _Budget,
    metrics: ProbeMetrics | None,
    otel: OtelExporter | None,
    suite_name: str,
    progress: ProgressFn | None,
) -> list[list[_ProbeOutcome]]:
    async def send(inst: ProbeInstance, request: ChatRequest) -> _ProbeOutcome:
        attempts = await client.chat(request)
        costs = [cost_of(obs.usage, context.price) for obs in attempts]
        for obs, cost in zip(attempts, costs, strict=True):
            budget.spend(cost)
            if metrics is not None:
                metrics.observe(obs, suite=suite_name, cost=cost)
            if otel is not None:
                otel.observe(
                    obs, request=request, suite=suite_name, probe_id=inst.probe.id, cost=cost
                )
        if metrics is not None:
            metrics.observe_request(attempts[-1])
        if otel is not None:
            otel.observe_request(attempts[-1], suite=suite_name)
        return _ProbeOutcome(inst, attempts, costs, [])

    meter = _EchoMeter(target.model, send)
    echoed = any(s.name == PLAUSIBLE for s in suite.default_checks)

    async def one(inst: ProbeInstance) -> _ProbeOutcome | None:
        if budget.exhausted:
            return None
        request = inst.request(target.model)
        outcome = await send(inst, request)
        final = outcome.attempts[-1]
        text_tokens = None
        wants = echoed or any(s.name == PLAUSIBLE for s in inst.probe.checks)
        if wants and measurable(final) and not budget.exhausted:
            text_tokens, outcome.echoes = await meter.measure(final.content or "")
        ctx = context.for_(inst, request, text_tokens)
        outcome.checks = run_checks(inst, final, ctx, suite.default_checks)
        if metrics is not None:
            metrics.observe_checks(target.gateway, target.model, suite_name, outcome.checks)
        if otel is not None:
            otel.observe_checks(target.gateway, target.model, suite_name, outcome.checks)
        if progress is not None:
            progress(1)
        return outcome

    async def group(insts: list[ProbeInstance]) -> list[_ProbeOutcome]:
        probe = insts[0].probe
        if probe.group_checks or probe.kind == "cache":
            done = [o for inst in insts if (o := await one(inst)) is not None]
            if done and len(done) == len(insts):
                ctx = context.for_(insts[0], insts[0].request(target.model))
                extra = run_group_checks(insts, [o.attempts[-1] for o in done], ctx)
                done[-1].group_checks = extra
                if metrics is not None:
                    metrics.observe_checks(target.gateway, target.model, suite_name, extra)
                if otel is not None:
                    otel.observe_checks(target.gateway, target.model, suite_name, extra)
            return done
        results = await asyncio.gather(*(one(i) for i in insts))
        return [o for o in results if o is not None]

    return list(await asyncio.gather(*(group(g) for g in groups)))


async def _write(
    astore: AsyncStore,
    run_id: int,
    target: Target,
    suite_name: str,
    outcomes: list[_ProbeOutcome],
    reason: str,
    metrics: ProbeMetrics | None,
    otel: OtelExporter | None,
    *,
    final: bool = False,
) -> RunSummary:
    obs_records: list[ObservationRecord] = []
    check_records: list[CheckRecord] = []
    summary = RunSummary(run_id=run_id, target=target, suite=suite_name, status="ok")
    for outcome in [o for answer in outcomes for o in (answer, *answer.echoes)]:
        inst = outcome.instance
        for i, (obs, cost) in enumerate(zip(outcome.attempts, outcome.costs, strict=True)):
            is_final = i == len(outcome.attempts) - 1
            if obs.content_parts:
                obs.content_parts = compact_parts(obs.content_parts)
            obs_records.append(
                ObservationRecord(
                    observation=obs,
                    suite=suite_name,
                    probe_id=inst.probe.id,
                    probe_hash=inst.probe.hash,
                    sample=inst.sample,
                    vars=dict(inst.vars),
                    cost=cost,
                    final=is_final,
                )
            )
        final_index = len(obs_records) - 1
        judged = [(r, final_index) for r in outcome.checks]
        judged += [(r, None) for r in outcome.group_checks]  # about all samples, not one
        for result, index in judged:
            # The probe's category travels with each result: reports group pass rates by it.
            result = replace(result, metadata={**result.metadata, "category": inst.probe.category})
            check_records.append(
                CheckRecord(
                    result=result,
                    observation_index=index,
                    probe_id=inst.probe.id,
                    probe_hash=inst.probe.hash,
                )
            )
            summary.checks[result.value.value] = summary.checks.get(result.value.value, 0) + 1
        last = outcome.attempts[-1]
        summary.requests += len(outcome.attempts)
        if outcome.instance.probe in (ECHO_BASE, ECHO_TEXT):
            continue  # a measurement, not an answer: no failed probe, no TTFT
        if not last.ok:
            summary.failed_requests += 1
        if last.ok and last.ttft_s is not None:
            summary.ttft_s.append(last.ttft_s)
    finals = [o.attempts[-1] for o in outcomes]
    failed = sum(1 for o in finals if o.failure is not FailureKind.ok)
    if final or not finals or failed == len(finals):
        summary.status = "failed"
    elif failed or reason:
        summary.status = "partial"
    summary.reason = reason or (f"{failed} of {len(finals)} probes failed" if failed else "")
    await astore.call(
        Store.finish_run, run_id, summary.status, summary.reason, obs_records, check_records
    )
    summary.cost = sum(r.cost or 0.0 for r in obs_records)
    if metrics is not None:
        metrics.run_finished(target.gateway, target.model, suite_name, summary.status, utcnow())
    if otel is not None:
        otel.run_finished(target.gateway, target.model, suite_name, summary.status)
    log.info(
        "run %s %s/%s suite=%s status=%s requests=%d failed=%d",
        run_id,
        target.gateway,
        target.model,
        suite_name,
        summary.status,
        summary.requests,
        summary.failed_requests,
    )
    return summary
