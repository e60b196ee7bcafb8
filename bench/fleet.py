"""Fleet benchmark: 1, 2 and 4 instances on one PostgreSQL, many targets, one location.

Starts a fast local gateway (tests/faultserver.py's ``ok`` script on a thread of this
process: a streamed two-word answer, no delay) and, for each fleet size, that many ``aione-probe
serve`` processes in fleet mode sharing a fresh database on the PostgreSQL named by the
``PG*`` environment (run under ``pg_virtualenv``). The config has ``--gateways`` x
``--models`` targets (default 10 x 50 = 500) and two suites of two probes each, every
``--interval`` seconds with no jitter: every slot puts all 1,000 jobs due in the same
second, the worst burst a fleet of this size sees.

After a warm-up interval it measures ``--minutes`` of slots and prints per fleet size:

* scheduling lag: a run's claim time (``suiterun.started_at``) minus its slot time, p50
  and p99 over every run of the measured slots;
* runs per minute completed, and runs skipped or missing (slots without a run);
* PostgreSQL round trips per run: every statement the instances sent (SQLAlchemy's
  cursor executions plus Procrastinate's queries, counted in-process and reported on
  /healthz), divided by the runs;
* CPU seconds per minute of each instance (the service process plus its metrics child,
  from /proc).

Usage::

    pg_virtualenv -v 15 nice .venv/bin/python bench/fleet.py              # ~15 minutes
    pg_virtualenv -v 15 nice .venv/bin/python bench/fleet.py --sizes 1,2 --minutes 2
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import faultserver  # noqa: E402
from fleetharness import Instance, fresh_database, write_config, write_suite  # noqa: E402

from aione_probe.store import Store  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its direct children (the metrics server)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


@dataclass
class Result:
    """One fleet size's measurements."""

    size: int
    lag_p50_s: float
    lag_p99_s: float
    runs_per_min: float
    skipped: int
    missing: int
    queries_per_run: float
    cpu_per_min: list[float]


def measure(size: int, args: argparse.Namespace, gw_port: int, folder: Path) -> Result:
    """Run `size` instances for the warm-up plus `args.minutes`; return the figures."""
    suites = [(write_suite(folder, f"bench-{n}").name, n) for n in ("a", "b")]
    models = [f"ok:m{i:03d}" for i in range(args.models)]
    expected_jobs = args.gateways * args.models * len(suites)
    with fresh_database() as url:
        fleet: list[Instance] = [
            write_config(
                folder, url=url, location="bench", name=f"n{size}-{i}",
                gateway_url=f"http://127.0.0.1:{gw_port}/v1", models=models, suites=suites,
                interval_s=args.interval, gateways=args.gateways,
                heartbeat_s=5, stalled_after_s=30, concurrency=args.concurrency,
            )
            for i in range(size)
        ]  # fmt: skip
        try:
            for inst in fleet:
                inst.start()
            for inst in fleet:
                inst.wait_healthy(timeout_s=300)
            warm = (int(time.time()) // args.interval + 2) * args.interval
            end = warm + args.minutes * 60
            time.sleep(max(0.0, warm - time.time()))
            before = [(_cpu_s(i.proc.pid), _queries(i)) for i in fleet]  # type: ignore[union-attr]
            t0 = time.time()
            time.sleep(max(0.0, end - time.time()))
            # Runs of the last slot finish within seconds; let them, then read counters.
            time.sleep(min(args.interval, 15))
            after = [(_cpu_s(i.proc.pid), _queries(i)) for i in fleet]  # type: ignore[union-attr]
            elapsed_min = (time.time() - t0) / 60
        finally:
            for inst in fleet:
                inst.stop()
        store = Store(url)
        lo, hi = datetime.fromtimestamp(warm, UTC), datetime.fromtimestamp(end, UTC)
        runs = [r for r in store.runs() if r.slot_at is not None and lo <= r.slot_at < hi]
        store.close()
    done = [r for r in runs if r.status in ("ok", "partial")]
    # "started 61s after its slot…" and the like: group by the reason's kind.
    reasons = Counter(
        re.sub(r"\d+(\.\d+)?", "N", r.reason or "") for r in runs if r.status == "skipped"
    )
    if reasons:
        print(f"  skipped with {size} instance(s): {dict(reasons)}", flush=True)
    took = sorted((r.finished_at - r.started_at).total_seconds() for r in done)  # type: ignore[operator]
    if took:
        print(f"  {size} instance(s): run duration p50 {statistics.median(took):.2f}s, max "
              f"{took[-1]:.2f}s", flush=True)  # fmt: skip
    lags = sorted((r.started_at - r.slot_at).total_seconds() for r in done)  # type: ignore[operator]
    slots = args.minutes * 60 // args.interval
    queries = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return Result(
        size=size,
        lag_p50_s=statistics.median(lags) if lags else float("nan"),
        lag_p99_s=lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else float("nan"),
        runs_per_min=len(done) / args.minutes,
        skipped=sum(1 for r in runs if r.status == "skipped"),
        missing=expected_jobs * slots - len(runs),
        queries_per_run=queries / max(len(done), 1) * (args.minutes / elapsed_min),
        cpu_per_min=[(a[0] - b[0]) / elapsed_min for a, b in zip(after, before, strict=True)],
    )


def _queries(inst: Instance) -> int:
    body = inst.health() or {}
    return int((body.get("fleet") or {}).get("db_queries", 0))


def main() -> int:
    """Parse arguments, run every fleet size, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="1,2,4", help="fleet sizes (instances), comma-separated")
    p.add_argument("--gateways", type=int, default=10)
    p.add_argument("--models", type=int, default=50, help="models per gateway")
    p.add_argument("--interval", type=int, default=60, help="suite interval, seconds")
    p.add_argument("--minutes", type=int, default=3, help="measured minutes per fleet size")
    p.add_argument("--concurrency", type=int, default=200, help="[fleet] concurrency")
    args = p.parse_args()
    if not os.environ.get("PGHOST"):
        print("needs a PostgreSQL server: run under pg_virtualenv", file=sys.stderr)
        return 2
    targets = args.gateways * args.models
    print(
        f"fleet benchmark: {targets} targets x 2 suites = {targets * 2} jobs every "
        f"{args.interval}s, no jitter; {args.minutes} measured minutes per size; "
        f"{os.cpu_count()} CPUs (shared)",
        flush=True,
    )
    results = []
    # The gateway runs on a thread of this process, which otherwise only sleeps.
    with faultserver.running() as gateway:
        for size in (int(s) for s in args.sizes.split(",")):
            with tempfile.TemporaryDirectory(prefix="aione-fleet-bench-") as tmp:
                results.append(measure(size, args, gateway.port, Path(tmp)))
            r = results[-1]
            print(f"  measured {size} instance(s): {r}", flush=True)
    print()
    print("| instances | lag p50 | lag p99 | runs/min | skipped | missing | PG round trips/run "
          "| CPU s/min per instance |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        cpu = ", ".join(f"{c:.1f}" for c in r.cpu_per_min)
        print(
            f"| {r.size} | {r.lag_p50_s:.2f} s | {r.lag_p99_s:.2f} s | {r.runs_per_min:.0f} "
            f"| {r.skipped} | {r.missing} | {r.queries_per_run:.1f} | {cpu} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
