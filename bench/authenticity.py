"""Authenticity detection power and false-positive rate against the simulator, over loopback.

Not a test. Starts the local gateway simulator (`aione_probe.sim`) in a child process on
127.0.0.1 with ``time_scale = 0`` (no artificial latency) and one served model per
scenario. Every audit draws a fresh seed, renders the fingerprint suite's probes with it
(`Suite.expand`), sends the requests with `GatewayClient` over HTTP to the scenario's
target model *and* to the reference model ``ref`` (persona ``large``) with the same seed,
as the service does for reference comparisons, and calls
`aione_probe.fingerprint.compare(target, reference, alpha=0.01)`.

Scenarios (target model; the reference is always ``large``):

- ``null``: ``large`` itself (false-positive rate);
- ``cross-tokenizer``: ``small`` (tokenizer family ``bpe-b`` instead of ``bpe-a``);
- ``same-tokenizer``: ``sibling``, a persona defined here with ``large``'s tokenizer,
  metadata and identity but another sampling seed (a different model of the same family);
- ``perturbed``: ``large-q``, a quantisation-like copy of ``large`` (logit noise);
- ``mix-10``/``mix-20``/``mix-50``: ``large`` with 10/20/50 % of requests answered by
  ``small`` (the cheaper model of another family);
- ``mix-sib-10``/``mix-sib-20``/``mix-sib-50``: the same with ``sibling`` answering
  (a same-tokenizer substitute).

Budgets are nested: each audit's requests for the largest budget are collected once and a
budget of B requests is the first B of them by a fixed per-probe allocation (`ALLOCATION`),
so every budget of one audit is a subset of the next. Speed probes are left out: with
``time_scale = 0`` timings are loopback noise.

Power is the share of audits whose verdict is ``substituted`` or ``suspect``; in the null
scenario it is the false-positive rate. Token cost is the mean prompt + completion tokens
the simulator reported per audit (target side, and target plus reference), priced at an
example list price (`PRICE_IN`, `PRICE_OUT`, USD per 1M tokens).

Usage::

    .venv/bin/python bench/authenticity.py            # all 10 scenarios, 200 audits
    .venv/bin/python bench/authenticity.py --audits 20 --scenarios null,mix-10 --budgets 5,300

Audits are split over ``--workers`` client processes (default 2); the default run takes
about 20 minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing as mp
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scipy import stats

from aione_probe.config import GatewayConfig
from aione_probe.fingerprint import compare
from aione_probe.gateway import GatewayClient
from aione_probe.sim import BUILTIN_PERSONAS, ModelSettings, SimConfig
from aione_probe.suites import ProbeInstance, Suite, load_suite
from aione_probe.types import Observation

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "probes" / "fingerprint.toml"
ALPHA = 0.01
BUDGETS = (5, 20, 50, 100, 300)
PRICE_IN, PRICE_OUT = 2.50, 10.00  # USD per 1M tokens, an example list price
REFERENCE = "ref"

# Requests per probe at each budget; counts never shrink as the budget grows, so a
# smaller budget is always a prefix (the first n samples of each probe) of a larger one.
# Target and reference render from one seed, so the categorical test pairs answers by
# rendered prompt, and only prompts answered at least twice by the reference inform it:
# categorical samples go mostly to the probes with three paraphrases (number, colour,
# animal, fruit), whose prompts repeat within a run; the probes that render a new prompt
# per sample (coin, choose, complete) keep two samples each. From 20 requests on, all four
# greedy probes run (two samples each give the exact-match test its smallest p-value per
# request); larger budgets add greedy samples, whose mismatch rate grows linearly with the
# substituted share, as the categorical test's does.
_TOKENIZER = ("tok-cjk", "tok-emoji", "tok-digits", "tok-hex", "tok-words", "tok-unicode")
_GREEDY = ("greedy-continue", "greedy-define", "greedy-primes", "greedy-title")
_PARAPHRASED = ("cat-number", "cat-colour", "cat-animal", "cat-fruit")
_PER_SAMPLE = ("cat-coin", "cat-choose", "cat-complete")
ALLOCATION: dict[int, dict[str, int]] = {
    5: {"tok-base": 1, "tok-cjk": 1, "tok-emoji": 1, "tok-digits": 1, "tok-hex": 1},
    20: {
        "tok-base": 1,
        **dict.fromkeys(_TOKENIZER[:5], 1),
        **dict.fromkeys(_GREEDY, 2),
        **{"cat-number": 3, "cat-colour": 3},
    },
    50: {
        "tok-base": 2,
        **dict.fromkeys((*_TOKENIZER, "tok-code"), 2),
        **dict.fromkeys(_GREEDY, 2),
        **dict.fromkeys(("meta-stream", "meta-plain", "meta-tool"), 1),
        **dict.fromkeys(("id-model", "id-cutoff", "id-refusal"), 1),
        **{"cat-number": 4, "cat-colour": 4, "cat-animal": 3, "cat-fruit": 3},
        **dict.fromkeys(_PER_SAMPLE, 2),
    },
    100: {
        "tok-base": 2,
        **dict.fromkeys((*_TOKENIZER, "tok-code"), 4),
        **dict.fromkeys(_GREEDY, 4),
        **dict.fromkeys(("meta-stream", "meta-plain", "meta-tool"), 1),
        **dict.fromkeys(("id-model", "id-cutoff", "id-refusal"), 1),
        **{"cat-number": 11, "cat-colour": 11, "cat-animal": 10, "cat-fruit": 10},
        **dict.fromkeys(_PER_SAMPLE, 2),
    },
    300: {
        "tok-base": 4,
        **dict.fromkeys((*_TOKENIZER, "tok-code"), 8),
        **dict.fromkeys(_GREEDY, 16),
        **dict.fromkeys(("meta-stream", "meta-plain", "meta-tool"), 2),
        **dict.fromkeys(("id-model", "id-cutoff", "id-refusal"), 2),
        **{"cat-number": 40, "cat-colour": 40, "cat-animal": 39, "cat-fruit": 39},
        **dict.fromkeys(_PER_SAMPLE, 2),
    },
}


@dataclass(frozen=True)
class Scenario:
    """One served target model and whether a non-authentic verdict is the right answer."""

    name: str
    settings: ModelSettings
    substituted: bool
    note: str


SIBLING = dataclasses.replace(BUILTIN_PERSONAS["large"], name="sibling", seed="large-sibling")


def scenarios() -> dict[str, Scenario]:
    """Every scenario the bench knows, in table order."""
    out = [
        Scenario("null", ModelSettings(persona="large"), False, "same model"),
        Scenario("cross-tokenizer", ModelSettings(persona="small"), True, "small (bpe-b)"),
        Scenario(
            "same-tokenizer", ModelSettings(persona="sibling"), True, "sibling (bpe-a, other seed)"
        ),
        Scenario("perturbed", ModelSettings(persona="large-q"), True, "large-q (logit noise)"),
    ]
    for alt in ("small", "sibling"):
        for pct in (10, 20, 50):
            name = f"mix-{pct}" if alt == "small" else f"mix-sib-{pct}"
            settings = ModelSettings(persona="large", substitute=alt, substitute_share=pct / 100)
            out.append(Scenario(name, settings, True, f"{pct} % of requests answered by {alt}"))
    return {s.name: s for s in out}


def sim_config(chosen: Sequence[Scenario]) -> SimConfig:
    """The simulator line-up: the reference plus one model per scenario."""
    models = {REFERENCE: ModelSettings(persona="large")}
    models.update({f"t-{s.name}": s.settings for s in chosen})
    personas = {**BUILTIN_PERSONAS, SIBLING.name: SIBLING}
    return SimConfig(models=models, personas=personas, time_scale=0.0, keepalive_rate=0.0)


def _serve(config: SimConfig, queue: Any) -> None:
    from aione_probe.sim import run_in_thread

    server = run_in_thread(config)
    queue.put(server.base_url)
    while True:
        time.sleep(3600)


# --- planning ---------------------------------------------------------------------------


def check_allocation(suite: Suite, budgets: Sequence[int]) -> None:
    """Fail unless every budget sums to itself and counts never shrink as budgets grow."""
    ids = {p.id for p in suite.probes}
    previous: dict[str, int] = {}
    for b in sorted(budgets):
        alloc = ALLOCATION[b]
        unknown = set(alloc) - ids
        if unknown:
            raise ValueError(f"budget {b}: unknown probes {sorted(unknown)}")
        if sum(alloc.values()) != b:
            raise ValueError(f"budget {b}: allocation sums to {sum(alloc.values())}")
        shrunk = [p for p, n in previous.items() if alloc.get(p, 0) < n]
        if shrunk:
            raise ValueError(f"budget {b}: fewer samples than a smaller budget for {shrunk}")
        previous = alloc


def plan(suite: Suite, counts: dict[str, int], seed: int) -> list[ProbeInstance]:
    """The instances of one audit: `counts[probe]` samples of each probe, rendered from
    `seed` by the suite's own expansion (samples is not part of a probe's hash)."""
    probes = [
        p.model_copy(update={"samples": counts[p.id]}) for p in suite.probes if p.id in counts
    ]
    return dataclasses.replace(suite, probes=probes).expand(seed)


# --- collection -------------------------------------------------------------------------


def record(inst: ProbeInstance, obs: Observation) -> dict[str, Any]:
    """What the fingerprint code reads from one final observation, plus the sample index."""
    return {
        "probe_id": inst.probe.id,
        "probe_hash": inst.probe.hash,
        "sample": inst.sample,
        "vars": inst.vars,
        "failure": obs.failure,
        "content": obs.content,
        "model": obs.model,
        "response_model": obs.response_model,
        "response_id": obs.response_id,
        "system_fingerprint": obs.system_fingerprint,
        "usage": obs.usage,
        "first_token_s": obs.first_token_s,
        "output_tps": obs.output_tokens_per_s,
        "stream": obs.stream,
        "chunk_count": obs.chunk_count,
        "tool_calls": obs.tool_calls,
    }


async def collect(
    client: GatewayClient, instances: list[ProbeInstance], model: str
) -> list[dict[str, Any]]:
    """Send every instance to `model`; one record per request (its final attempt)."""
    attempts = await asyncio.gather(*(client.chat(i.request(model)) for i in instances))
    return [record(i, a[-1]) for i, a in zip(instances, attempts, strict=True)]


def within(records: list[dict[str, Any]], counts: dict[str, int]) -> list[dict[str, Any]]:
    """The records of one budget: the first `counts[probe]` samples of each probe."""
    return [r for r in records if r["sample"] < counts.get(r["probe_id"], 0)]


def tokens(records: list[dict[str, Any]]) -> tuple[int, int]:
    """Prompt and completion tokens the gateway reported."""
    p = sum(r["usage"].prompt_tokens or 0 for r in records)
    c = sum(r["usage"].completion_tokens or 0 for r in records)
    return p, c


# --- tallies ----------------------------------------------------------------------------


@dataclass
class Tally:
    """Verdicts of one (scenario, budget) over all audits."""

    verdicts: Counter[str] = field(default_factory=Counter)
    shares: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(self.verdicts.values())

    @property
    def flagged(self) -> int:
        return self.verdicts["substituted"] + self.verdicts["suspect"]


def rate_ci(k: int, n: int) -> str:
    """``k/n`` as a percentage with a 95 % Clopper-Pearson interval."""
    if not n:
        return "-"
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return f"{100 * k / n:.1f} % [{100 * ci.low:.1f}, {100 * ci.high:.1f}]"


def pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f} %" if n else "-"


def table(
    chosen: Sequence[Scenario],
    budgets: Sequence[int],
    tallies: dict[tuple[str, int], Tally],
    cost: dict[int, list[tuple[int, int, int, int]]],
) -> str:
    """The markdown report: detection table and token cost per budget."""
    lines = [
        "| scenario | target | requests | audits | flagged (95 % CI) | substituted | suspect"
        " | insufficient | median share est. |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for s in chosen:
        for b in budgets:
            t = tallies[(s.name, b)]
            share = sorted(t.shares)
            med = f"{share[len(share) // 2]:.2f}" if share else "-"
            what = "FPR" if not s.substituted else "power"
            lines.append(
                f"| {s.name} ({what}) | {s.note} | {b} | {t.n} | {rate_ci(t.flagged, t.n)} | "
                f"{pct(t.verdicts['substituted'], t.n)} | {pct(t.verdicts['suspect'], t.n)} | "
                f"{pct(t.verdicts['insufficient_data'], t.n)} | {med} |"
            )
    lines += [
        "",
        f"Token cost per audit (mean; priced at ${PRICE_IN:.2f} / ${PRICE_OUT:.2f} per 1M "
        "input / output tokens):",
        "",
        "| requests | target prompt | target completion | target USD | target + reference USD |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in budgets:
        rows = cost[b]
        if not rows:
            continue
        tp = sum(r[0] for r in rows) / len(rows)
        tc = sum(r[1] for r in rows) / len(rows)
        rp = sum(r[2] for r in rows) / len(rows)
        rc = sum(r[3] for r in rows) / len(rows)
        usd_t = (tp * PRICE_IN + tc * PRICE_OUT) / 1e6
        usd_all = usd_t + (rp * PRICE_IN + rc * PRICE_OUT) / 1e6
        lines.append(f"| {b} | {tp:.0f} | {tc:.0f} | {usd_t:.6f} | {usd_all:.6f} |")
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------


async def audit_many(
    base_url: str, names: list[str], budgets: list[int], indices: list[int], args: Any
) -> tuple[dict[tuple[str, int], Tally], dict[int, list[tuple[int, int, int, int]]]]:
    """Run the audits numbered `indices` for every scenario in `names`; return the tallies
    and, per budget, each audit's (target prompt, target completion, reference prompt,
    reference completion) tokens of the first scenario."""
    suite = load_suite(SUITE)
    top = ALLOCATION[budgets[-1]]
    gw = GatewayConfig(
        name="sim",
        base_url=base_url,
        auth="none",
        requests_per_minute=None,
        max_concurrency=args.concurrency,
    )
    tallies = {(s, b): Tally() for s in names for b in budgets}
    cost: dict[int, list[tuple[int, int, int, int]]] = {b: [] for b in budgets}
    started = time.perf_counter()
    async with GatewayClient(gw) as client:
        for done, i in enumerate(indices, 1):
            seed = args.seed * 1_000_003 + i
            instances = plan(suite, top, seed)
            ref = await collect(client, instances, REFERENCE)
            for name in names:
                target = await collect(client, instances, f"t-{name}")
                for b in budgets:
                    t, r = within(target, ALLOCATION[b]), within(ref, ALLOCATION[b])
                    res = compare(
                        t,
                        r,
                        alpha=ALPHA,
                        gateway="sim",
                        model=f"t-{name}",
                        reference_gateway="sim",
                        reference_model=REFERENCE,
                        seed=seed,
                    )
                    tally = tallies[(name, b)]
                    verdict = str(res.verdict.verdict)
                    tally.verdicts[verdict] += 1
                    share = res.substitution_share
                    if share is not None and verdict in ("substituted", "suspect"):
                        tally.shares.append(share.estimate)
                    if name == names[0]:
                        cost[b].append((*tokens(t), *tokens(r)))
            if done % 10 == 0 or done == len(indices):
                print(
                    f"[pid {os.getpid()}] {done}/{len(indices)} audits, "
                    f"{time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return tallies, cost


def _work(
    base_url: str, names: list[str], budgets: list[int], indices: list[int], args: Any
) -> tuple[dict[tuple[str, int], Tally], dict[int, list[tuple[int, int, int, int]]]]:
    return asyncio.run(audit_many(base_url, names, budgets, indices, args))


def run(args: argparse.Namespace, base_url: str, chosen: list[Scenario]) -> str:
    """Split the audits over `args.workers` client processes and merge their tallies."""
    budgets = sorted(args.budgets)
    check_allocation(load_suite(SUITE), budgets)
    names = [s.name for s in chosen]
    tallies = {(s, b): Tally() for s in names for b in budgets}
    cost: dict[int, list[tuple[int, int, int, int]]] = {b: [] for b in budgets}
    shards = [list(range(w, args.audits, args.workers)) for w in range(args.workers)]
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(_work, base_url, names, budgets, shard, args) for shard in shards if shard
        ]
        for future in futures:
            part, part_cost = future.result()
            for key, t in part.items():
                tallies[key].verdicts.update(t.verdicts)
                tallies[key].shares.extend(t.shares)
            for b, rows in part_cost.items():
                cost[b].extend(rows)
    return table(chosen, budgets, tallies, cost)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    known = scenarios()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audits", type=int, default=200, help="independent audits per cell")
    parser.add_argument(
        "--budgets",
        type=lambda v: [int(x) for x in v.split(",")],
        default=list(BUDGETS),
        help=f"comma-separated requests per audit, from {sorted(ALLOCATION)}",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda v: v.split(","),
        default=list(known),
        help=f"comma-separated, from {','.join(known)} (default: all)",
    )
    parser.add_argument("--seed", type=int, default=1, help="base seed of the audits")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    args = parser.parse_args(argv)
    bad = [b for b in args.budgets if b not in ALLOCATION]
    if bad:
        parser.error(f"no allocation for budgets {bad}; known: {sorted(ALLOCATION)}")
    unknown = [s for s in args.scenarios if s not in known]
    if unknown:
        parser.error(f"unknown scenarios {unknown}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    known = scenarios()
    chosen = [known[name] for name in args.scenarios]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    server = ctx.Process(target=_serve, args=(sim_config(chosen), queue), daemon=True)
    server.start()
    t0 = time.perf_counter()
    try:
        base_url = queue.get(timeout=30)
        report = run(args, base_url, chosen)
    finally:
        server.terminate()
        server.join(timeout=5)
    wall = time.perf_counter() - t0
    print(report)
    print(
        f"\n{args.audits} audits per cell, alpha = {ALPHA}; wall time {wall:.0f} s on "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
