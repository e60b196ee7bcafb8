"""OpenTelemetry export cost: what `OtelExporter.observe` takes on the probe loop's thread.

Records N synthetic streamed observations (10 chunk gaps, usage, a response id) through a
real `OtelExporter` exporting to the in-process OTLP receiver of the tests (loopback), with
traces on and off, and reports the wall microseconds per observation on the calling thread
(the probe loop's: it only queues), the process CPU microseconds per observation spent by
the exporter's recording worker and the SDK's threads, the time `shutdown` needs to record
the rest of the queue and flush, and how many spans reached the receiver. For scale: a
probe request takes 100 ms to seconds.

Usage::

    .venv/bin/python bench/otel.py              # about 10 s
    .venv/bin/python bench/otel.py --n 50000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import otlp_receiver  # noqa: E402  (the tests' OTLP receiver)

from aione_probe.config import GatewayConfig, OtelConfig  # noqa: E402
from aione_probe.otel import OtelExporter  # noqa: E402
from aione_probe.types import ChatRequest, Observation, Usage  # noqa: E402


def _observation(i: int) -> Observation:
    obs = Observation(gateway="gw", model="m", stream=True, response_model="m")
    obs.response_id = f"chatcmpl-{i}"
    obs.first_chunk_s, obs.first_token_s, obs.end_s = 0.2, 0.25, 0.6
    obs.gaps_s = [0.03] * 10
    obs.finish_reason = "stop"
    obs.usage = Usage(prompt_tokens=40, completion_tokens=12, total_tokens=52, raw={})
    return obs


def measure(n: int, traces: bool) -> tuple[float, float, float, int]:
    """(calling-thread wall µs, process CPU µs) per observation, seconds to drain and flush
    at shutdown, spans received."""
    gw = GatewayConfig(name="gw", base_url="https://relay.example/v1")
    request = ChatRequest(model="m", messages=({"role": "user", "content": "hi"},), stream=True)
    observations = [_observation(i) for i in range(n)]
    with otlp_receiver.running() as rx:
        cfg = OtelConfig(endpoint=rx.endpoint, interval=5, traces=traces)
        exporter = OtelExporter(cfg, [gw], headers={})
        wall, cpu = time.perf_counter(), time.process_time()
        for obs in observations:
            exporter.observe(obs, request=request, suite="smoke", probe_id="p", cost=0.001)
            exporter.observe_request(obs, suite="smoke")
        wall = time.perf_counter() - wall
        flush = time.perf_counter()
        exporter.shutdown()
        flush = time.perf_counter() - flush
        cpu = time.process_time() - cpu
        spans = len(rx.spans())
    return wall / n * 1e6, cpu / n * 1e6, flush, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="observations per setting")
    args = parser.parse_args()
    print(f"{args.n:,} streamed observations per row; receiver on loopback")
    print("| traces | loop µs / obs. | CPU µs / obs. | drain + flush | spans received |")
    print("| --- | --- | --- | --- | --- |")
    for traces in (False, True):
        wall, cpu, flush, spans = measure(args.n, traces)
        print(
            f"| {'on' if traces else 'off'} | {wall:.1f} | {cpu:.1f} | {flush:.2f} s | {spans:,} |"
        )


if __name__ == "__main__":
    main()
