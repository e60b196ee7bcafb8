"""usage_completion_plausible on a real engine: false alarms on honest llama.cpp, and
detection of a relay that multiplies completion_tokens.

Starts llama-cpp-python serving SmolLM2-135M-Instruct (the shared harness,
`aione_probe.peers.llama`) and, in front of it, the test relay that multiplies
``completion_tokens`` by ``--factor`` (``tests/faultserver.py``). Runs the ``usage`` suite
(4 answers per run, templated per run, temperature 0.7; one probe cut at max_tokens) the
way the service does, through both, and prints per-answer outcomes, the distribution of
reported / measured, and the false-alarm rate with a 95 % upper bound.

    .venv/bin/python bench/usage_plausible.py --runs 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from scipy.stats import beta

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import faultserver  # noqa: E402  (the relay lives with the test doubles)

from aione_probe.config import load_config  # noqa: E402
from aione_probe.peers.llama import LlamaServer, smollm2_gguf, unavailable_reason  # noqa: E402
from aione_probe.service import run_service  # noqa: E402


def _config(folder: Path, honest: str, relay: str) -> Path:
    cfg = folder / "c.toml"
    common = (
        'auth = "none"\nmodels = ["smollm2"]\nmax_concurrency = 1\nrequests_per_minute = 6000\n'
    )
    cfg.write_text(
        f'probes_dir = "{ROOT / "probes"}"\n'
        f'[[gateways]]\nname = "honest"\nbase_url = "{honest}"\n{common}'
        'timeouts = { first_token = "120s", total = "300s" }\n'
        f'[[gateways]]\nname = "relay"\nbase_url = "{relay}"\n{common}'
        'timeouts = { first_token = "120s", total = "300s" }\n'
        '[[suites]]\nfile = "usage.toml"\ninterval = "1h"\n'
        f'[storage]\nurl = "sqlite:///{folder / "b.db"}"\n'
        f'[reports]\ndir = "{folder / "reports"}"\n'
    )
    return cfg


def _upper95(k: int, n: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound of a rate with k events in n."""
    return 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k))


def main() -> int:
    """Run the measurement and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40, help="usage-suite runs per gateway")
    ap.add_argument("--factor", type=float, default=1.2)
    ap.add_argument("--out", type=Path, help="write the rows as JSON")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"no real engine: {reason}")
        return 2
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as tmp,
        LlamaServer(smollm2_gguf(), alias="smollm2") as llama,
        faultserver.relay(llama.base_url, args.factor) as relay_url,
    ):
        cfg = _config(Path(tmp), f"{llama.base_url}/v1", relay_url)
        asyncio.run(
            run_service(
                load_config(cfg),
                args.runs,
                on_round=lambda i: print(f"  run {i}/{args.runs}", flush=True),
            )
        )
        with sqlite3.connect(Path(tmp) / "b.db") as db:
            rows = db.execute(
                "select c.gateway, o.probe_id, o.finish_reason, c.value, "
                "json_extract(c.metadata, '$.outcome'), json_extract(c.metadata, '$.reported'), "
                "json_extract(c.metadata, '$.measured'), o.completion_tokens "
                "from checkresult c join observation o on o.id = c.observation_id "
                "where c.name = 'usage_completion_plausible'"
            ).fetchall()
    elapsed = time.monotonic() - started
    print(f"\n{len(rows)} answers in {elapsed:.0f} s, relay factor {args.factor}")
    print("| gateway | finish | answers | plausible | inflated | deflated | unmeasured |"
          " reported/measured median (min-max) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for gw in ("honest", "relay"):
        for finish in ("stop", "length"):
            sel = [r for r in rows if r[0] == gw and r[2] == finish]
            if not sel:
                continue
            c = Counter(r[4] for r in sel)
            ratios = [r[5] / r[6] for r in sel if r[5] is not None and r[6]]
            spread = (f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
                      if ratios else "-")  # fmt: skip
            print(f"| {gw} | {finish} | {len(sel)} | {c['plausible']} | {c['inflated']} | "
                  f"{c['deflated']} | {c['unmeasured']} | {spread} |")  # fmt: skip
    honest = [r for r in rows if r[0] == "honest" and r[4] != "unmeasured"]
    alarms = sum(1 for r in honest if r[4] == "inflated")
    over = Counter(r[7] - 24 for r in rows if r[0] == "honest" and r[1] == "cut-short-01")
    print(f"\nhonest false alarms: {alarms} of {len(honest)} answers "
          f"(95 % upper bound {_upper95(alarms, len(honest)):.2%} per answer)")  # fmt: skip
    print(f"honest cut answers: completion_tokens - max_tokens = {dict(sorted(over.items()))}")
    relay = [r for r in rows if r[0] == "relay" and r[4] != "unmeasured"]
    caught = sum(1 for r in relay if r[4] == "inflated")
    early = [r for r in relay if r[2] == "stop"]
    print(
        f"relay x{args.factor}: {caught} of {len(relay)} answers flagged inflated "
        f"({sum(1 for r in early if r[4] == 'inflated')} of {len(early)} that stopped early)"
    )
    if args.out:
        args.out.write_text(json.dumps(rows) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
