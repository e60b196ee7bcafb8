"""Speed of the outputs: the HTML report over a big store, and /metrics against the probe loop.

Not a test. Prints one table:

* generation: `bench/generate.py` fills a fresh SQLite store (default one million
  observations, their check results and verdicts over 30 days); time and file size;
* report: `build_report_data` + `render_report` for the last 30 days, cold (first run
  in a new `Store`, so a fresh connection; the OS page cache is not dropped) and warm
  (best of the next runs);
* /metrics: a `ProbeMetrics` refreshed from the store (`refresh`) and fed the last day of
  observations and check results (thousands of series) is served either by
  `MetricsServer` on a thread of this process (``thread``: how the service used to serve)
  or by `MetricsProcess` from a child process (``process``: how the service serves now);
  ``--server`` picks one or both. An asyncio loop on the main thread sleeps 1 ms in a loop
  and records the overshoot of every sleep (loop lag), first with no scrapes, then while
  another process scrapes /metrics (``--scrapes``, ``--scrape-gap`` apart). The difference
  is what scrapes cost the probe loop. For ``process``, the table also shows what a
  refresh costs this process to send (one pickled message). ``--gc-freeze`` and
  ``--switch-interval`` show the effect of those two interpreter settings.

    python bench/outputs.py                          # about 4-5 minutes on 2 cores
    python bench/outputs.py --observations 100000    # quicker
    python bench/outputs.py --db /tmp/bench.db       # reuse (or create) this store
    python bench/outputs.py --server process         # only the child-process server
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate
from prometheus_client.exposition import generate_latest
from sqlalchemy import func, select

from aione_probe.metrics import ProbeMetrics
from aione_probe.report import build_report_data, render_report
from aione_probe.server import MetricsProcess, MetricsServer
from aione_probe.store import ObservationRow, Store, to_check_result, to_observation

SCRAPER = """
import json, sys, time, urllib.request
url, n, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
times, size = [], 0
for _ in range(n):
    time.sleep(gap)
    t = time.perf_counter()
    with urllib.request.urlopen(url) as r:
        size = len(r.read())
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "bytes": size}))
"""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _period(store: Store) -> tuple[datetime, datetime]:
    with store.engine.connect() as conn:
        last = conn.execute(select(func.max(ObservationRow.started_at))).scalar_one()
    if isinstance(last, str):
        last = datetime.fromisoformat(last)
    until = last.replace(tzinfo=UTC) + timedelta(minutes=7)  # not on a day boundary
    return until - timedelta(days=30), until


def _report_times(store_url: str, runs: int) -> list[tuple[float, float]]:
    """(build, render) seconds per run; the first run uses a fresh `Store`."""
    out = []
    with Store(store_url) as store:
        since, until = _period(store)
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                data = build_report_data(store, since=since, until=until)
                t1 = time.perf_counter()
                render_report(data, Path(tmp))
                out.append((t1 - t0, time.perf_counter() - t1))
    return out


def _populate_metrics(store: Store, metrics: ProbeMetrics) -> None:
    """Refresh from the store, then replay the last day of attempts and checks."""
    metrics.set_build_info("bench")
    metrics.refresh(store)
    _, until = _period(store)
    since = until - timedelta(days=1)
    suites: set[tuple[str, str, str]] = set()
    for row in store.observations(since=since, until=until):
        metrics.observe(to_observation(row), suite=row.suite, cost=row.cost)
        suites.add((row.gateway, row.model, row.suite))
    checks: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for row in store.check_results(since=since, until=until):
        checks[(row.gateway, row.model, row.suite)].append(to_check_result(row))
    for (gateway, model, suite), results in checks.items():
        metrics.observe_checks(gateway, model, suite, results)
    for gateway, model, suite in suites:
        metrics.set_suite_config(gateway, model, suite, 3600.0)
    for gateway in {g for g, _, _ in suites}:
        metrics.set_spend(gateway, 1.0, 10.0)


async def _lag(seconds: float | None, until_done: subprocess.Popen[str] | None) -> list[float]:
    """Overshoot of every 1 ms sleep, for `seconds` or until the process ends."""
    lags: list[float] = []
    end = time.perf_counter() + (seconds or 0.0)
    while (until_done is not None and until_done.poll() is None) or (
        until_done is None and time.perf_counter() < end
    ):
        start = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - start - 0.001)
    return lags


def _scrape_lag(url: str, scrapes: int, gap: float) -> dict[str, Any]:
    quiet = asyncio.run(_lag(5.0, None))
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRAPER, f"{url}/metrics", str(scrapes), str(gap)],
        stdout=subprocess.PIPE,
        text=True,
    )
    busy = asyncio.run(_lag(None, proc))
    out, _ = proc.communicate()
    scraped = json.loads(out)
    return {"quiet": quiet, "busy": busy, "scrape": scraped["times"], "bytes": scraped["bytes"]}


def _measure(url: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Populate a `ProbeMetrics` from the store, serve it the `mode` way, time the loop."""
    metrics = ProbeMetrics()
    server: MetricsServer | MetricsProcess
    if mode == "thread":
        server = MetricsServer(
            "127.0.0.1", 0, metrics.registry, lambda: {"status": "ok"}, Path(".")
        )
    else:
        server = MetricsProcess("127.0.0.1", 0, metrics, Path("."))
    server.start()  # MetricsProcess shares the instruments: before any attempt is recorded
    try:
        with Store(url) as store:
            _populate_metrics(store, metrics)
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        out = _scrape_lag(server.url, args.scrapes, args.scrape_gap)
    finally:
        server.stop()
        gc.unfreeze()
    body = generate_latest(metrics.registry).decode()
    out["series"] = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    if mode == "process":
        message = metrics.snapshot.dump()
        t0 = time.perf_counter()
        out["message"] = (len(pickle.dumps(message, pickle.HIGHEST_PROTOCOL)),
                          time.perf_counter() - t0)  # fmt: skip
    return out


def _lag_rows(mode: str, lag: dict[str, Any]) -> list[tuple[str, str]]:
    scrape = lag["scrape"]
    rows = [
        (
            f"/metrics exposition ({mode})",
            f"{lag['series']:,} series, {lag['bytes'] / 1e3:,.0f} kB",
        ),
        (
            f"/metrics scrape ({mode}, {len(scrape)}x)",
            f"p50 {_ms(statistics.median(scrape))}, max {_ms(max(scrape))}",
        ),
    ]
    for name, values in (("no scrapes", lag["quiet"]), ("scraping", lag["busy"])):
        rows.append(
            (
                f"loop lag, {name} ({mode})",
                f"p50 {_ms(statistics.median(values))}, p99 {_ms(_quantile(values, 0.99))}, "
                f"max {_ms(max(values))}, {sum(v > 0.002 for v in values)} of "
                f"{len(values):,} ticks over 2 ms",
            )
        )
    if "message" in lag:
        size, seconds = lag["message"]
        rows.append(("cached state, pickled", f"{size / 1e3:,.0f} kB in {_ms(seconds)}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="store to reuse, or to create if missing")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--report-runs", type=int, default=3)
    parser.add_argument("--scrape-gap", type=float, default=0.05, help="seconds between scrapes")
    parser.add_argument("--server", choices=("thread", "process", "both"), default="both")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() before measuring the lag"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval for the lag measurement (default: CPython's 5 ms)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.db"
        url = f"sqlite:///{db}"
        rows: list[tuple[str, str]] = []
        with Store(url) as store:
            fresh = not db.exists()
            store.migrate()
            if fresh:
                print(f"generating {args.observations:,} observations into {db}", file=sys.stderr)
                stats = generate(store, observations=args.observations, progress=True)
                rows.append(
                    (
                        "generation",
                        f"{stats.seconds:,.1f} s: {stats.observations:,} observations, "
                        f"{stats.check_results:,} check results, {stats.runs:,} runs, "
                        f"{stats.verdicts:,} verdicts",
                    )
                )
            else:
                with store.engine.connect() as conn:
                    n = conn.execute(select(func.count()).select_from(ObservationRow)).scalar()
                rows.append(("generation", f"reused {db} ({n:,} observations)"))
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        rows.append(("database size", f"{size / 1e6:,.0f} MB (with -wal/-shm)"))
        print("timing the report", file=sys.stderr)
        times = _report_times(url, args.report_runs)
        (cold_b, cold_r), warm = times[0], min(times[1:] or times, key=sum)
        rows.append(("report 30 d, cold", f"{cold_b + cold_r:.2f} s (build {cold_b:.2f} + "
                     f"render {cold_r:.2f})"))  # fmt: skip
        rows.append(("report 30 d, warm", f"{sum(warm):.2f} s (build {warm[0]:.2f} + "
                     f"render {warm[1]:.2f})"))  # fmt: skip
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        modes = ("thread", "process") if args.server == "both" else (args.server,)
        for mode in modes:
            print(f"populating metrics and measuring loop lag ({mode})", file=sys.stderr)
            rows += _lag_rows(mode, _measure(url, mode, args))
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
