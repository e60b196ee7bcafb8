"""SLO alerting: the loopback latency floor, and what the burn-rate pages do at probe volume.

Not a test. Two tables.

1. **Loopback floor.** aione-probe's `GatewayClient` against the scripted fault server
   (tests/faultserver.py, ``ok`` script: answers at once) in a separate process, over
   127.0.0.1: time to first token of streamed requests and end to end of plain ones. No
   gateway can answer faster, so `aione_probe.slo.LOOPBACK_FLOOR_S` must sit at or below
   these and check-config flags thresholds under it.

2. **Pages at probe volume.** The page condition of the SLO burn alerts (14.4x over 1h
   confirmed over 5m, or 6x over 6h and 30m, at least 20 events in the long window,
   ``for: 2m``), with three variants of the fast pair: the workbook's, none, and the
   shipped one (the 5m confirmation held for 10 minutes),
   evaluated every minute on simulated SLI events: the smoke suite every 5 minutes (7
   streamed requests a run, all at the run's time), a 99 % objective. Bad-event ratios are
   counted exactly over each window (Prometheus' extrapolation cancels in a ratio of two
   counters scraped together). Honest noise: each request misses independently with
   probability p, or whole runs miss together (a stall hits every request in flight).
   Slowdowns start after 6 hours of honest traffic (p = 0.1 %) at a random minute; the
   delay is from the onset to the first firing minute.

    .venv/bin/python bench/slo.py [--months 200] [--seed 1] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aione_probe.config import GatewayConfig  # noqa: E402
from aione_probe.gateway import GatewayClient  # noqa: E402
from aione_probe.slo import LOOPBACK_FLOOR_S  # noqa: E402
from aione_probe.types import ChatRequest  # noqa: E402

SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
import faultserver
with faultserver.running() as server:
    print(server.base_url, flush=True)
    time.sleep(3600)
"""

MINUTES_PER_MONTH = 30 * 24 * 60
RUN_EVERY_MIN = 5
EVENTS_PER_RUN = 7
BUDGET = 0.01
FOR_MIN = 2
WARMUP_MIN = 6 * 60


# --- 1. loopback floor ------------------------------------------------------------------------
async def _measure(base_url: str, n: int) -> tuple[list[float], list[float]]:
    client = GatewayClient(GatewayConfig(name="bench", base_url=base_url, auth="none"))
    messages = [{"role": "user", "content": "floor"}]
    ttft, e2e = [], []
    try:
        for i in range(n):
            stream = i % 2 == 0
            req = ChatRequest(model="ok", messages=messages, max_tokens=8, stream=stream)
            (obs,) = await client.chat(req)
            assert obs.ok, obs.failure
            if stream and obs.first_token_s is not None:
                ttft.append(obs.first_token_s)
            elif obs.end_s is not None:
                e2e.append(obs.end_s)
    finally:
        await client.aclose()
    return ttft, e2e


def loopback_floor(n: int) -> None:
    code = SERVER.format(tests=str(ROOT / "tests"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        ttft, e2e = asyncio.run(_measure(base_url, n))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\nLoopback floor ({n} requests, alternating streamed/plain; floor constant "
          f"{LOOPBACK_FLOOR_S * 1000:g} ms)\n")  # fmt: skip
    print("| measure | n | min | p1 | p50 | p99 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, xs in (("TTFT, streamed", ttft), ("end to end, plain", e2e)):
        q = np.quantile(xs, [0.01, 0.5, 0.99]) * 1000
        print(f"| {name} | {len(xs)} | {min(xs) * 1000:.2f} ms | {q[0]:.2f} ms | "
              f"{q[1]:.2f} ms | {q[2]:.2f} ms |")  # fmt: skip


# --- 2. pages at probe volume -----------------------------------------------------------------
def _events(rng: np.random.Generator, minutes: int, p: np.ndarray, burst: bool) -> np.ndarray:
    """Bad events per minute (events only at run minutes); `p` is per minute."""
    bad = np.zeros(minutes)
    runs = np.arange(0, minutes, RUN_EVERY_MIN)
    if burst:
        bad[runs] = EVENTS_PER_RUN * (rng.random(len(runs)) < p[runs])
    else:
        bad[runs] = rng.binomial(EVENTS_PER_RUN, p[runs])
    return bad


#: Variants of the fast (1h/5m) pair: the workbook's, none, and the workbook's with the 5m
#: burn held for `HOLD_MIN` minutes (the last runs all bad: an outage, not two blips).
VARIANTS = ("1h/5m", "none", "1h/5m held")
HOLD_MIN = 10


def _firing(bad: np.ndarray, *, fast: str = "1h/5m") -> np.ndarray:
    """Minutes at which the page alert is firing, with the `fast` pair variant."""
    total = np.zeros_like(bad)
    total[::RUN_EVERY_MIN] = EVENTS_PER_RUN
    cb, ct = np.concatenate([[0], np.cumsum(bad)]), np.concatenate([[0], np.cumsum(total)])

    def window(minutes: int) -> tuple[np.ndarray, np.ndarray]:
        end = np.arange(1, len(bad) + 1)
        start = np.maximum(end - minutes, 0)
        return cb[end] - cb[start], ct[end] - ct[start]

    def burn(minutes: int) -> tuple[np.ndarray, np.ndarray]:
        b, t = window(minutes)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(t > 0, b / t / BUDGET, 0.0), t

    b1h, n1h = burn(60)
    b5m, _ = burn(5)
    b6h, n6h = burn(360)
    b30m, _ = burn(30)
    cond = (b6h > 6) & (b30m > 6) & (n6h >= 20)
    if fast == "1h/5m":
        cond |= (b1h > 14.4) & (b5m > 14.4) & (n1h >= 20)
    elif fast == "1h/5m held":
        short = b5m > 14.4
        held_short = short.copy()
        for k in range(1, HOLD_MIN + 1):  # min_over_time(burn5m[10m]) > 14.4
            held_short[k:] &= short[:-k]
            held_short[:k] = False
        cond |= (b1h > 14.4) & held_short & (n1h >= 20)
    # for: 2m -> the condition held at this and the previous FOR_MIN evaluations
    held = cond.copy()
    for k in range(1, FOR_MIN + 1):
        held[k:] &= cond[:-k]
        held[:k] = False
    return held


def false_pages(rng: np.random.Generator, months: int, p: float, burst: bool) -> list[float]:
    """False pages per target-month in steady state, for each fast-pair variant.

    Each month is preceded by 6 h of the same traffic, so every window is full (a target
    that is new to Prometheus starts with partial windows, which page more easily).
    """
    pages = [0] * len(VARIANTS)
    n = WARMUP_MIN + MINUTES_PER_MONTH
    for _ in range(months):
        bad = _events(rng, n, np.full(n, p), burst)
        for i, fast in enumerate(VARIANTS):
            firing = _firing(bad, fast=fast)[WARMUP_MIN - 1 :]
            pages[i] += int(np.count_nonzero(firing[1:] & ~firing[:-1]))
    return [x / months for x in pages]


def delays(rng: np.random.Generator, trials: int, p: float) -> list[list[float]]:
    """Minutes from onset to the first firing minute, for each fast-pair variant."""
    out: list[list[float]] = [[] for _ in VARIANTS]
    horizon = WARMUP_MIN + 24 * 60
    for _ in range(trials):
        onset = WARMUP_MIN + int(rng.integers(0, 60))
        probs = np.full(horizon, 0.001)
        probs[onset:] = p
        bad = _events(rng, horizon, probs, burst=False)
        for i, fast in enumerate(VARIANTS):
            hits = np.nonzero(_firing(bad, fast=fast)[onset:])[0]
            out[i].append(float(hits[0]) if len(hits) else float("inf"))
    return out


def pages_at_probe_volume(months: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    print(f"\nPages at probe volume: {EVENTS_PER_RUN} streamed requests every "
          f"{RUN_EVERY_MIN} min, 99 % objective, {months} simulated target-months\n")  # fmt: skip
    head = " | ".join(f"fast pair: {v}" for v in VARIANTS)
    print(f"| honest noise | miss rate | false pages per target-month, {head} |")
    print("| --- | --- |" + " --- |" * len(VARIANTS))
    for p, burst, label in (
        (0.001, False, "independent misses"),
        (0.01, False, "independent misses (at the budget)"),
        (0.03, False, "out of SLO: independent misses at 3x the budget"),
        (0.002, True, "whole runs miss (stalls)"),
        (0.01, True, "whole runs miss (stalls, at the budget)"),
    ):
        rates = false_pages(rng, months, p, burst)
        print(f"| {label} | {p * 100:g} % | " + " | ".join(f"{r:.3f}" for r in rates) + " |")
    trials = max(50, months)
    print(f"\nSlowdowns ({trials} onsets): delay from onset to page, p50 / p90, and the "
          "share paged within 24 h\n")  # fmt: skip
    print(f"| slowdown | past the threshold | {head} |")
    print("| --- | --- |" + " --- |" * len(VARIANTS))
    for p, label in ((0.08, "2x TTFT behind a relay (p50 1.0 -> 2.2 s, 3 s threshold)"),
                     (0.15, "heavier slowdown"), (1.0, "everything misses")):  # fmt: skip
        cells = []
        for d in delays(rng, trials, p):
            hit = [x for x in d if np.isfinite(x)]
            if not hit:
                cells.append("never")
                continue
            cells.append(f"{statistics.median(hit):.0f} / {np.quantile(hit, 0.9):.0f} min "
                         f"({len(hit) / len(d) * 100:.0f} %)")  # fmt: skip
        print(f"| {label} | {p * 100:g} % | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=200)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.monotonic()
    loopback_floor(args.requests)
    pages_at_probe_volume(args.months, args.seed)
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
