"""Fill a store with realistic probe history: runs, observations, check results, verdicts.

Not a test. The default is one million observations over 30 days for 4 gateways x 5 models
x 3 suites, written through the store's bulk paths (`Store.bulk_insert_observations`,
`Store.bulk_insert_check_results`); runs are inserted finished, with the summaries
`Store.finish_run` would have written.

What a run looks like:

* ``golden``: 24 probes in 6 categories; one scoring check per request with the probe's
  category in its metadata; the pass probability depends on the model and the probe.
* ``smoke``: 8 probes; the ``usage`` check (``missing`` when a gateway omits usage).
* ``protocol``: 10 probes; the ``finish_reason`` check, plus one ``cache`` group check
  per run (hit ratio and saving in the metadata).

Gateways differ in error rate (1 % to 6 % of attempts) and failure mix; rate limits and
5xx are retried (every attempt stored, the last one ``final``). TTFT and end-to-end
latency are log-normal per model, usage and cost follow the output length, one gateway
sometimes serves a cheaper model than asked and another echoes dated model names.
Each target gets a daily authenticity verdict (with signals) and a daily drift verdict
per suite. Failed requests get ``unscored`` results.

    python bench/generate.py --db /tmp/bench.db [--observations 1000000] [--days 30]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aione_probe.errors import FailureKind
from aione_probe.store import (
    CheckRecord,
    ObservationRecord,
    ObservationRow,
    Store,
    SuiteRun,
)
from aione_probe.types import CheckResult, CheckValue, Observation, Usage

GATEWAYS = {  # name: (error rate per attempt, protocol)
    "aione-eu": (0.01, "openai"),
    "aione-us": (0.03, "openai"),
    "relay-cheap": (0.06, "openai"),
    "anthro-proxy": (0.02, "anthropic"),
}
MODELS = {  # name: (ttft median s, seconds per output token, golden pass probability)
    "gpt-4o": (0.45, 0.012, 0.91),
    "gpt-4o-mini": (0.30, 0.008, 0.82),
    "claude-sonnet-4": (0.70, 0.015, 0.93),
    "llama-3.3-70b": (0.55, 0.018, 0.78),
    "qwen-2.5-72b": (0.60, 0.016, 0.80),
}
PRICES = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "claude-sonnet-4": (3.0, 15.0)}
CATEGORIES = ("arithmetic", "logic", "code", "extraction", "knowledge", "instructions")
SCORING_CHECKS = {
    "arithmetic": "numeric",
    "logic": "match",
    "code": "match",
    "extraction": "json_schema",
    "knowledge": "match",
    "instructions": "instructions",
}
FAILURES = (  # (kind, weight, HTTP status)
    (FailureKind.rate_limited, 30, 429),
    (FailureKind.http_5xx, 25, 502),
    (FailureKind.timeout_first_token, 15, None),
    (FailureKind.timeout_total, 8, None),
    (FailureKind.connect, 7, None),
    (FailureKind.bad_response, 6, 200),
    (FailureKind.stream_parse, 5, 200),
    (FailureKind.empty_response, 4, 200),
)
WORDS = (
    "the", "answer", "is", "that", "we", "compute", "the", "result", "value", "because",
    "first", "then", "so", "total", "list", "item",
)  # fmt: skip


@dataclass(frozen=True)
class Probe:
    """One probe of a generated suite."""

    suite: str
    id: str
    hash: str
    category: str
    stream: bool
    difficulty: float  # subtracted from the model's pass probability


def _suites(rng: random.Random) -> dict[str, list[Probe]]:
    golden = [
        Probe(
            "golden",
            f"{cat}-{i:02d}",
            f"{rng.getrandbits(64):016x}",
            cat,
            i % 2 == 0,
            rng.choice((0.0, 0.0, 0.05, 0.15, 0.3)),
        )
        for cat in CATEGORIES
        for i in range(1, 5)
    ]
    smoke = [
        Probe("smoke", f"smoke-{i:02d}", f"{rng.getrandbits(64):016x}", "smoke", i % 2 == 0, 0)
        for i in range(1, 9)
    ]
    protocol = [
        Probe("protocol", f"proto-{i:02d}", f"{rng.getrandbits(64):016x}", "proto", True, 0)
        for i in range(1, 11)
    ]
    return {"golden": golden, "smoke": smoke, "protocol": protocol}


@dataclass
class Batch:
    """Runs generated together, ready for the bulk inserts."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    observations: list[list[ObservationRecord]] = field(default_factory=list)
    checks: list[list[tuple[int | None, CheckRecord]]] = field(default_factory=list)

    @property
    def n_observations(self) -> int:
        return sum(len(obs) for obs in self.observations)


@dataclass
class GenerationStats:
    """What `generate` wrote and how long it took."""

    runs: int = 0
    observations: int = 0
    check_results: int = 0
    verdicts: int = 0
    seconds: float = 0.0
    since: datetime | None = None
    until: datetime | None = None


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.suites = _suites(self.rng)
        self.failure_kinds = [f for f, _, _ in FAILURES]
        self.failure_weights = [w for _, w, _ in FAILURES]
        self.failure_status = {f: s for f, _, s in FAILURES}
        self.counter = 0

    def run(self, gateway: str, model: str, suite: str, at: datetime, seed: int) -> Any:
        rng = self.rng
        error_rate, protocol = GATEWAYS[gateway]
        ttft_median, tpot, pass_p = MODELS[model]
        observations: list[ObservationRecord] = []
        checks: list[tuple[int | None, CheckRecord]] = []
        t = at
        for probe in self.suites[suite]:
            attempts = 1
            while True:
                t += timedelta(milliseconds=rng.randint(200, 2500))
                failure = FailureKind.ok
                if rng.random() < error_rate:
                    failure = rng.choices(self.failure_kinds, self.failure_weights)[0]
                retry = failure.retryable and attempts < 3
                obs = self._observation(
                    gateway, model, protocol, probe, t, attempts, failure, ttft_median, tpot
                )
                price = PRICES.get(model)
                cost = None
                if price is not None and obs.usage.completion_tokens is not None:
                    prompt = obs.usage.prompt_tokens or 0
                    cost = (prompt * price[0] + obs.usage.completion_tokens * price[1]) / 1e6
                vars_ = {"n": rng.randint(100, 999)} if probe.category == "arithmetic" else {}
                observations.append(
                    ObservationRecord(
                        obs, suite, probe.id, probe.hash, 0, vars_, cost, final=not retry
                    )
                )
                if not retry:
                    break
                attempts += 1
            index = len(observations) - 1
            checks.append((index, self._check(probe, obs, gateway, pass_p)))
        if suite == "protocol":
            hit = round(min(1.0, max(0.0, rng.gauss(0.7, 0.2))), 3)
            meta = {"hit_ratio": hit, "saved": round(hit * 0.002, 6), "currency": "USD"}
            value = CheckValue.passed if hit >= 0.5 else CheckValue.failed
            result = CheckResult("cache", value, metadata=meta, explanation=f"hit ratio {hit}")
            probe = self.suites[suite][0]
            checks.append((None, CheckRecord(result, None, "cache-long-01", probe.hash)))
        finals = [r for r in observations if r.final]
        n_failed = sum(1 for r in finals if r.observation.failure != FailureKind.ok)
        status = "ok" if n_failed == 0 else ("failed" if n_failed == len(finals) else "partial")
        summary = {
            "gateway": gateway,
            "model": model,
            "suite": suite,
            "suite_version": 1,
            "seed": seed,
            "scheduled": True,
            "started_at": at,
            "finished_at": t + timedelta(seconds=3),
            "status": status,
            "reason": None if status == "ok" else f"{n_failed} of {len(finals)} requests failed",
            "n_observations": len(observations),
            "n_requests": len(finals),
            "n_failed": n_failed,
            "cost": sum(r.cost for r in observations if r.cost is not None),
        }
        return summary, observations, checks

    def _observation(
        self,
        gateway: str,
        model: str,
        protocol: str,
        probe: Probe,
        at: datetime,
        attempt: int,
        failure: FailureKind,
        ttft_median: float,
        tpot: float,
    ) -> Observation:
        rng = self.rng
        self.counter += 1
        common: dict[str, Any] = {
            "gateway": gateway,
            "model": model,
            "protocol": protocol,
            "stream": probe.stream,
            "attempt": attempt,
            "started_at": at,
            "http_version": "HTTP/1.1",
            "request_id": f"req-{self.counter:010d}",
        }
        if failure != FailureKind.ok:
            status = self.failure_status[failure]
            return Observation(
                **common,
                failure=failure,
                status=status,
                error_type="upstream_error" if status else None,
                error_message=f"{failure.value}: upstream said no ({self.counter % 97})",
                retry_after_s=1.0 if failure == FailureKind.rate_limited else None,
                end_s=rng.uniform(0.05, 30.0),
            )
        completion = max(1, int(rng.lognormvariate(math.log(40), 0.8)))
        prompt = rng.randint(20, 400)
        cached = (prompt // 128) * 128 if probe.suite == "protocol" and rng.random() < 0.6 else 0
        ttft = rng.lognormvariate(math.log(ttft_median), 0.35)
        end = ttft + completion * rng.lognormvariate(math.log(tpot), 0.2)
        echoed: str | None = model
        if gateway == "relay-cheap" and model == "gpt-4o" and rng.random() < 0.1:
            echoed = "gpt-4o-mini"
        elif gateway == "aione-us" and model.startswith("gpt-4o"):
            echoed = f"{model}-2024-08-06"
        elif rng.random() < 0.005:
            echoed = None
        usage_missing = gateway == "relay-cheap" and probe.stream and rng.random() < 0.05
        usage = (
            Usage()
            if usage_missing
            else Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                cached_tokens=cached,
                raw={"prompt_tokens": prompt, "completion_tokens": completion},
            )
        )
        chunks = min(completion, 32) if probe.stream else 0
        gaps = [round(rng.expovariate(1 / tpot), 4) for _ in range(max(0, chunks - 1))]
        words = " ".join(rng.choice(WORDS) for _ in range(min(completion, 60)))
        return Observation(
            **common,
            status=200,
            response_id=f"chatcmpl-{self.counter:012x}",
            response_model=echoed,
            system_fingerprint="fp_bench01",
            created=int(at.timestamp()),
            content=words,
            finish_reason="length" if rng.random() < 0.02 else "stop",
            raw_finish_reason="stop",
            usage=usage,
            usage_in_stream=probe.stream and not usage_missing,
            headers_s=ttft * 0.6,
            first_chunk_s=ttft * 0.9 if probe.stream else None,
            first_token_s=ttft if probe.stream else None,
            end_s=end,
            gaps_s=gaps,
            chunk_count=chunks,
            bytes_received=len(words) + 200 * max(1, chunks),
        )

    def _check(self, probe: Probe, obs: Observation, gateway: str, pass_p: float) -> CheckRecord:
        rng = self.rng
        if probe.suite == "golden":
            name = SCORING_CHECKS[probe.category]
            meta: dict[str, Any] = {"category": probe.category}
            if not obs.ok:
                value = CheckValue.unscored
            else:
                roll = rng.random()
                p = pass_p - probe.difficulty - (0.03 if gateway == "relay-cheap" else 0.0)
                value = CheckValue.passed if roll < p else CheckValue.failed
                if value == CheckValue.failed and rng.random() < 0.15:
                    value = CheckValue.partial
            expected, answer = "391", obs.content[:40]
        elif probe.suite == "smoke":
            name, meta, expected = "usage", {}, None
            answer = str(obs.usage.total_tokens)
            if not obs.ok:
                value = CheckValue.unscored
            elif obs.usage.total_tokens is None:
                value = CheckValue.missing
            else:
                value = CheckValue.passed
        else:
            name, meta, expected = "finish_reason", {}, "stop"
            answer = obs.finish_reason
            if not obs.ok:
                value = CheckValue.unscored
            else:
                value = CheckValue.passed if answer == "stop" else CheckValue.failed
        explanation = "" if value == CheckValue.passed else f"{name}: {value.value}"
        result = CheckResult(name, value, {}, answer, expected, explanation, meta)
        return CheckRecord(result, None, probe.id, probe.hash)


def _rounds(observations: int, targets: int, per_round: float) -> int:
    return max(1, round(observations / (targets * per_round)))


def _write_batch(store: Store, batch: Batch) -> int:
    table = SuiteRun.__table__  # type: ignore[attr-defined]
    with store.engine.begin() as conn:
        stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        run_ids = list(conn.execute(stmt, batch.runs).scalars())
        first = conn.execute(select(func.coalesce(func.max(ObservationRow.id), 0))).scalar_one()
    pairs = [
        (run_id, rec)
        for run_id, records in zip(run_ids, batch.observations, strict=True)
        for rec in records
    ]
    n = store.bulk_insert_observations(pairs, chunk_size=len(pairs))
    with store.engine.connect() as conn:
        last = conn.execute(select(func.max(ObservationRow.id))).scalar_one()
    # One writer on a fresh file: SQLite hands out consecutive row ids.
    if last != first + n:
        raise RuntimeError("observation ids are not consecutive: generate into a fresh store")
    triples: list[tuple[int, int | None, CheckRecord]] = []
    offset = first + 1
    for run_id, records, checks in zip(run_ids, batch.observations, batch.checks, strict=True):
        for index, check in checks:
            triples.append((run_id, None if index is None else offset + index, check))
        offset += len(records)
    return store.bulk_insert_check_results(triples, chunk_size=max(1, len(triples)))


def _verdicts(store: Store, gen: _Generator, since: datetime, days: int) -> int:
    rng = gen.rng
    n = 0
    for day in range(days):
        at = since + timedelta(days=day, hours=23, minutes=30)
        for gateway in GATEWAYS:
            for model in MODELS:
                substituted = gateway == "relay-cheap" and model == "gpt-4o"
                signals = [
                    {
                        "signal": signal,
                        "test": test,
                        "statistic": round(rng.uniform(0, 5), 3),
                        "p_value": rng.uniform(0.0001, 0.004)
                        if substituted and signal == "output_length"
                        else rng.uniform(0.05, 1),
                        "n": 400,
                        "baseline_id": 1,
                        "result": "fail" if substituted and signal == "output_length" else "pass",
                    }
                    for signal, test in (
                        ("answer_distribution", "g_test"),
                        ("output_length", "ks"),
                        ("ttft", "mann_whitney"),
                        ("refusal_rate", "fisher"),
                    )
                ]
                verdict = "suspect" if substituted else "authentic"
                score = 0.002 if substituted else rng.uniform(0.1, 0.9)
                details = {"signals": signals, "method": "fisher"}
                store.save_verdict(
                    "authenticity", gateway, model, None, verdict, score, 0.01, 400, None,
                    details, created_at=at,
                )  # fmt: skip
                for suite in gen.suites:
                    p = rng.uniform(0.01, 0.9)
                    ratio = MODELS[model][2]
                    details = {
                        "p_value": p,
                        "pass_ratio": ratio,
                        "baseline_pass_ratio": ratio + 0.01,
                        "metrics": {"pass_rate": {"test": "fisher_exact", "p_value": p, "n": 200}},
                    }
                    verdict = "regressed" if p < 0.05 else "ok"
                    store.save_verdict(
                        "drift", gateway, model, suite, verdict, p, 0.05, 200, None, details,
                        created_at=at,
                    )  # fmt: skip
                n += 4
    return n


def _schedule(
    gen: _Generator, observations: int, since: datetime, days: int
) -> Iterator[tuple[str, str, str, datetime, int]]:
    per_round = sum(len(p) for p in gen.suites.values()) * 1.03  # retries
    targets = [(g, m) for g in GATEWAYS for m in MODELS]
    rounds = _rounds(observations, len(targets), per_round)
    step = timedelta(days=days) / rounds
    for r in range(rounds):
        base = since + step * r
        for i, (gateway, model) in enumerate(targets):
            for j, suite in enumerate(gen.suites):
                offset = step * ((i * len(gen.suites) + j) / (len(targets) * len(gen.suites)))
                yield gateway, model, suite, base + offset, r


def generate(
    store: Store,
    *,
    observations: int = 1_000_000,
    days: int = 30,
    until: datetime | None = None,
    seed: int = 1,
    batch_runs: int = 400,
    progress: bool = False,
) -> GenerationStats:
    """Fill a freshly migrated, empty `store` with about `observations` observations.

    Args:
        store: the store to fill (must be empty: observation ids are assigned in order).
        observations: the approximate number of observations (retries make it vary by
            a fraction of a percent).
        days: the history spans the `days` days before `until`.
        until: end of the history (default: the start of the current UTC hour).
        seed: seeds every random choice, so two runs write the same values.
        batch_runs: runs written per batch of bulk inserts.
        progress: print a line per ten batches to stderr.

    Returns:
        The counts written and the seconds it took.
    """
    start = time.perf_counter()
    end = until or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    since = end - timedelta(days=days)
    gen = _Generator(seed)
    for gateway, (_, protocol) in GATEWAYS.items():
        for model in MODELS:
            store.ensure_target(gateway, f"https://{gateway}.example/v1", protocol, model)
    stats = GenerationStats(since=since, until=end)
    batch = Batch()

    def flush() -> None:
        stats.check_results += _write_batch(store, batch)
        stats.runs += len(batch.runs)
        stats.observations += batch.n_observations
        if progress and (stats.runs // batch_runs) % 10 == 0:
            print(f"  {stats.observations:,} observations", file=sys.stderr)

    for gateway, model, suite, at, r in _schedule(gen, observations, since, days):
        summary, obs, checks = gen.run(gateway, model, suite, at, seed * 100_000 + r)
        batch.runs.append(summary)
        batch.observations.append(obs)
        batch.checks.append(checks)
        if len(batch.runs) >= batch_runs:
            flush()
            batch = Batch()
    if batch.runs:
        flush()
    stats.verdicts = _verdicts(store, gen, since, days)
    stats.seconds = time.perf_counter() - start
    return stats


def main(argv: list[str] | None = None) -> None:
    """Command line: generate into ``--db`` (which must not exist yet)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", type=Path, required=True, help="SQLite file to create")
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.db.exists():
        parser.error(f"{args.db} exists: generate into a fresh file")
    with Store(f"sqlite:///{args.db}") as store:
        store.migrate()
        stats = generate(
            store, observations=args.observations, days=args.days, seed=args.seed, progress=True
        )
    print(
        f"{stats.observations:,} observations, {stats.check_results:,} check results, "
        f"{stats.runs:,} runs, {stats.verdicts:,} verdicts in {stats.seconds:.1f} s "
        f"({args.db.stat().st_size / 1e6:,.0f} MB)"
    )


if __name__ == "__main__":
    main()
