"""Soak: `aione-probe serve` for an hour against the scripted fault server.

Starts the test fault server (``tests/faultserver.py``) in this process and `serve` as a
child process on a fast schedule: every model is a fault script (5xx, 429, slow drips,
stalls, cut connections, malformed bodies, proxy HTML pages, echoed keys, fake cache
hits, inflated counts, hostile names with control characters) plus a discovering gateway
whose ``/v1/models`` lists hostile names. Every ``--sample`` seconds it records the serve
process's RSS and open descriptors, the metrics child's RSS, the latency of one
``/metrics`` scrape and the event-loop lag the service reports in ``/healthz``; every
``--every`` seconds it prints the latest row; at the end it prints the slope of each
series per hour after the warm-up (least squares) and writes everything as JSON.

    nice -n 10 .venv/bin/python bench/soak.py --minutes 65 --out bench/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import faultserver  # noqa: E402  (the test double lives with the tests)

FAULT_MODELS = [
    "ok",
    "ok:keepalive",
    "status:500",
    "status:429",
    "slow:1.5",
    "stall:1",
    "cut",
    "malformed",
    "inband",
    "html:502",
    "echo:header",
    "echo:masked",
    "cache:fake",
    "inflate:1.2",
    *(f"hostile:{n}" for n in faultserver.HOSTILE_NAMES),
]
SERIES = ("rss_mb", "anon_mb", "child_rss_mb", "fds", "scrape_ms", "loop_lag_ms")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(base_url: str, folder: Path, port: int, interval: str) -> Path:
    models = ", ".join(json.dumps(m) for m in FAULT_MODELS)
    common = (
        'api_key_env = "SOAK_KEY"\nmax_concurrency = 8\nrequests_per_minute = 6000\n'
        'timeouts = { connect = "2s", first_token = "5s", idle = "2s", total = "10s" }\n'
        'retries = { max_attempts = 2, base_delay = "100ms", max_delay = "200ms" }\n'
    )
    text = f"""
probes_dir = {json.dumps(str(ROOT / "probes"))}

[[gateways]]
name = "faults"
base_url = "{base_url}"
models = [{models}]
{common}
[[gateways]]
name = "discover"
base_url = "{base_url}"
{common}
[[suites]]
file = "smoke.toml"
interval = "{interval}"
jitter = "2s"

[[suites]]
file = "cache.toml"
interval = "2m"
gateways = ["faults"]
models = ["cache:*", "ok"]

[pricing."*"]
input = 1.0
output = 2.0
cached_input = 0.5

[storage]
url = "sqlite:///{folder / "soak.db"}"

[server]
listen = "127.0.0.1:{port}"

[reports]
dir = "{folder / "reports"}"
period = "1d"
"""
    path = folder / "soak.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    """Resident memory of `pid` in MB: ``VmRSS`` (all) or ``RssAnon`` (heap, not files)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _sample(pid: int, url: str, started: float) -> dict[str, float | None]:
    t0 = time.perf_counter()
    try:
        body = httpx.get(f"{url}/metrics", timeout=10).content
        scrape_ms: float | None = (time.perf_counter() - t0) * 1000
    except httpx.HTTPError:
        body, scrape_ms = b"", None
    try:
        health = httpx.get(f"{url}/healthz", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        health = {}
    kids = _children(pid)
    return {
        "t_s": time.monotonic() - started,
        "rss_mb": _rss_mb(pid),
        "anon_mb": _rss_mb(pid, "RssAnon"),
        "child_rss_mb": sum(_rss_mb(k) or 0.0 for k in kids) if kids else None,
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
        "scrape_ms": scrape_ms,
        "metrics_kb": len(body) / 1024,
        "loop_lag_ms": health.get("loop_lag_max_ms"),
        "runs_in_progress": health.get("runs_in_progress"),
    }


def _slopes(rows: list[dict[str, float | None]], warmup_s: float) -> dict[str, float | None]:
    """Least-squares slope per hour of each series over the rows after the warm-up."""
    out: dict[str, float | None] = {}
    for name in SERIES:
        pts = [(r["t_s"], r[name]) for r in rows if r["t_s"] >= warmup_s and r[name] is not None]
        if len(pts) < 3:
            out[name] = None
            continue
        fit = stats.linregress([p[0] for p in pts], [p[1] for p in pts])
        out[name] = float(fit.slope) * 3600
    return out


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> int:
    """Run the soak; returns the exit code (1 if serve died early or did not exit 0)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=65.0)
    ap.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--every", type=float, default=300.0, help="seconds between printed rows")
    ap.add_argument("--warmup", type=float, default=10.0, help="minutes left out of slopes")
    ap.add_argument("--interval", default="20s", help="smoke suite interval")
    ap.add_argument("--out", type=Path, help="write samples and slopes as JSON")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep serve's folder (log, database, config); always kept when serve exits non-zero",
    )
    ap.add_argument("--tail", type=int, default=20, help="last lines of serve's log printed")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="aione-soak-")
    with faultserver.running() as fs:
        fs.models = ["ok", *faultserver.HOSTILE_NAMES]
        fs.keep_seen = 1000
        port = _free_port()
        cfg = _config(fs.base_url, Path(tmp), port, args.interval)
        env = {**os.environ, "SOAK_KEY": "good-key"}
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 (closed below)
        cmd = [sys.executable, "-X", "faulthandler", "-m", "aione_probe", "serve"]
        cmd += ["--config", str(cfg)]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        rows: list[dict[str, float | None]] = []
        last_print = -1e9
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        print(
            f"commit {commit}, serve pid {proc.pid}, {len(FAULT_MODELS)} fault models, "
            f"{args.minutes:g} min, smoke every {args.interval}"
        )
        print("   min   RSS MB  anon MB  child MB  fds  scrape ms  /metrics KB  loop lag ms")
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.sample)
                if proc.poll() is not None:
                    print(f"serve exited early with {proc.returncode}")
                    break
                row = _sample(proc.pid, url, started)
                rows.append(row)
                if row["t_s"] - last_print >= args.every:
                    last_print = row["t_s"]
                    print(
                        f"{row['t_s'] / 60:6.1f} {_fmt(row['rss_mb']):>8} "
                        f"{_fmt(row['anon_mb']):>8} "
                        f"{_fmt(row['child_rss_mb']):>9} {_fmt(row['fds'], '.0f'):>4} "
                        f"{_fmt(row['scrape_ms']):>10} {_fmt(row['metrics_kb']):>12} "
                        f"{_fmt(row['loop_lag_ms'], '.2f'):>12}",
                        flush=True,
                    )
        finally:
            early = proc.poll() is not None
            in_flight = None if early else _sample(proc.pid, url, started).get("runs_in_progress")
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                print("serve did not exit within 60 s of SIGTERM; stack dump and kill")
                # faulthandler (enabled in the child) dumps every thread's stack on SIGABRT.
                proc.send_signal(signal.SIGABRT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            drain_s = time.monotonic() - t0
            log.close()
            db = Path(tmp) / "soak.db"
            db_mb = db.stat().st_size / 2**20 if db.exists() else 0.0
            requests = len(fs.seen)
    slopes = _slopes(rows, args.warmup * 60)
    print(f"\nslopes per hour after {args.warmup:g} min warm-up ({len(rows)} samples):")
    for name in SERIES:
        print(f"  {name:13} {_fmt(slopes[name], '+.3f')}")
    print(
        f"serve exited {proc.returncode} {drain_s:.1f} s after SIGTERM "
        f"({_fmt(in_flight, '.0f')} runs in progress at SIGTERM); db {db_mb:.1f} MB"
    )
    log_path = Path(tmp) / "serve.log"
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    print(f"last {min(args.tail, len(lines))} lines of serve's log:")
    for line in lines[-args.tail :]:
        print(f"  {line}")
    failed = early or proc.returncode != 0
    if failed or args.keep:
        print(f"serve's log kept: {log_path}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        print("serve's folder removed (exit 0; --keep keeps it)")
    if args.out:
        doc = {
            "rows": rows,
            "slopes_per_hour": slopes,
            "warmup_min": args.warmup,
            "minutes": args.minutes,
            "models": FAULT_MODELS,
            "db_mb": db_mb,
            "exit": proc.returncode,
            "drain_s": drain_s,
            "requests_seen_kept": requests,
        }
        args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
