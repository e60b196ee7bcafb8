"""Drift on a real engine: llama.cpp serving SmolLM2-135M, weights swapped mid-way.

Not a test (tests/test_drift_real.py is the short CI version). The service's own runner,
store and drift analysis run against `aione_probe.peers.llama.LlamaServer` on loopback:

1. `--baseline` runs of bench/data/drift-real.toml (8 easy probes, templated where possible)
   pin the drift baseline and calibrate the detectors;
2. `--null` more runs on the same weights: the verdict must stay ``ok`` (the no-swap control);
3. the served weights are swapped on the same port for a Q2_K requantisation of the same
   model (`LlamaServer.restart`), and up to `--after` runs follow: how many runs until the
   verdict turns ``regressed``, and which metric tripped.

Runs follow each other back to back (seconds apart, not hourly); the baseline's size is the
config's, its span requirement is dropped (``baseline_span = 0``). Quality is the pass rate
of the probes' own checks.

    nice python bench/drift_real.py [--baseline 16] [--null 12] [--after 12]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aione_probe.analysis.run import analyse_drift
from aione_probe.config import load_config
from aione_probe.peers.llama import LlamaServer, quantize, smollm2_gguf
from aione_probe.service import Service
from aione_probe.types import utcnow

SUITE = Path(__file__).resolve().parent / "data" / "drift-real.toml"
MODEL = "smollm2"


@dataclass
class Step:
    """One run of the campaign and the verdict after it."""

    run: int
    phase: str
    verdict: str
    pass_rate: float | None
    tripped: list[str] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)


def write_config(work: Path, base_url: str, baseline_runs: int) -> Path:
    """A config probing `base_url` with the real-engine suite only."""
    path = work / "aione-probe.toml"
    path.write_text(
        f"""
[[gateways]]
name = "llama"
base_url = "{base_url}/v1"
auth = "none"
models = ["{MODEL}"]
max_concurrency = 1
requests_per_minute = 6000
timeouts = {{ connect = "5s", first_token = "120s", idle = "60s", total = "180s" }}

[[suites]]
file = "{SUITE}"
interval = "1h"

[storage]
url = "sqlite:///{work / "probe.db"}"

[drift]
baseline_runs = {baseline_runs}
baseline_span = "0s"
""",
        encoding="utf-8",
    )
    return path


async def campaign(
    work: Path, baseline: int, null: int, after: int, swap_to: Path | None
) -> list[Step]:
    """Run the three phases against a fresh server; stop early once ``regressed`` after the
    swap. With `swap_to` None the last phase keeps the same weights."""
    steps: list[Step] = []
    with LlamaServer(smollm2_gguf(), alias=MODEL) as server:
        cfg = load_config(write_config(work, server.base_url, baseline))
        service = Service(cfg)
        await service.start()
        try:
            jobs = service.plan()
            for i in range(baseline + null + after):
                phase = "baseline" if i < baseline else "null" if i < baseline + null else "swap"
                if i == baseline + null and swap_to is not None:
                    server.restart(swap_to)
                await service.run_once(jobs)
                await service.astore.call(analyse_drift, cfg, "llama", MODEL, utcnow())
                steps.append(await service.astore.call(_step, i + 1, phase))
                if phase == "swap" and steps[-1].verdict == "regressed":
                    break
        finally:
            await service.aclose()
    return steps


def _step(store: Any, run: int, phase: str) -> Step:
    (v,) = [v for v in store.latest_verdicts("drift") if v.model == MODEL]
    monitor = v.details.get("monitor") or {}
    last = (monitor.get("last") or {}).get("pass_rate") or {}
    return Step(
        run=run,
        phase=phase,
        verdict=v.verdict,
        pass_rate=last.get("value"),
        tripped=list(v.details.get("tripped") or []),
        ratios={m["metric"]: m["ratio"] for m in v.details.get("metrics") or []},
    )


def summary(steps: list[Step]) -> dict[str, Any]:
    """Verdicts of the null phase and runs from the swap to ``regressed``."""
    null = [s for s in steps if s.phase == "null"]
    swap = [s for s in steps if s.phase == "swap"]
    hit = next((k for k, s in enumerate(swap, 1) if s.verdict == "regressed"), None)
    return {
        "null_verdicts": sorted({s.verdict for s in null}),
        "runs_to_regressed": hit,
        "tripped": swap[hit - 1].tripped if hit else [],
        "pass_before": _mean([s.pass_rate for s in steps if s.phase != "swap"]),
        "pass_after": _mean([s.pass_rate for s in swap]),
    }


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def main() -> None:
    """Run the campaign and print the timeline and the summary."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", type=int, default=16)
    ap.add_argument("--null", type=int, default=12)
    ap.add_argument("--after", type=int, default=12)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aione-drift-real-") as tmp:
        work = Path(tmp)
        q2 = quantize(smollm2_gguf(), work / "smollm2-q2_k.gguf", "q2_k")
        steps = asyncio.run(campaign(work, args.baseline, args.null, args.after, q2))
    metrics = sorted({m for s in steps for m in s.ratios})
    print("| run | phase | verdict | run pass rate | " + " | ".join(metrics) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in metrics) + " |")
    for s in steps:
        pr = "–" if s.pass_rate is None else f"{s.pass_rate:.2f}"
        cells = " | ".join(f"{s.ratios[m]:.2f}" if m in s.ratios else "–" for m in metrics)
        print(f"| {s.run} | {s.phase} | {s.verdict} | {pr} | {cells} |")
    print(f"\n(statistic / threshold per metric; 1 = alarm)\n\n{summary(steps)}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
