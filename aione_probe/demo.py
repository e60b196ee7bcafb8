"""`aione-probe demo`: the local gateway plus the service, on the embedded demo config.

The demo config's gateways point at loopback ports; the demo starts the local gateway
(`aione_probe.sim`) on each of those ports, then either runs every suite once and writes
the report (``--once``) or serves on the config's fast schedule until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console

from aione_probe.config import Config, load_config
from aione_probe.service import run_service
from aione_probe.sim import default_sim_config, run_in_thread

console = Console()
#: The demo's gateway answers four times faster than its personas' nominal speeds, so
#: one cycle takes about a minute; relative speeds (what detection reads) are kept.
DEMO_TIME_SCALE = 0.25


@contextlib.contextmanager
def local_gateways(cfg: Config) -> Iterator[list[str]]:
    """Start one local gateway per distinct loopback port named in the config."""
    ports: set[int] = set()
    for gw in cfg.gateways:
        url = urlsplit(gw.base_url)
        if url.hostname in ("127.0.0.1", "localhost") and url.port:
            ports.add(url.port)
    with contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(
                run_in_thread(default_sim_config(time_scale=DEMO_TIME_SCALE), port=p)
            ).base_url
            for p in sorted(ports)
        ]
        yield urls


def run_demo(config_path: Path, *, once: bool) -> int:
    """Run the demo; returns the process exit code."""
    cfg = load_config(config_path)
    with local_gateways(cfg) as urls:
        for url in urls:
            console.print(f"local gateway: {url}", highlight=False)
        return asyncio.run(_once(cfg) if once else _forever(cfg))


async def _once(cfg: Config) -> int:
    from aione_probe.cli import _print_summary

    summaries, index = await run_service(cfg, report=True)
    _print_summary(summaries)
    console.print(f"report: {index}", highlight=False)
    # The demo's gateways include dishonest personas on purpose: failed checks are the
    # point of the demo, not a failure of it.
    return 0


async def _forever(cfg: Config) -> int:
    from aione_probe.cli import _serve_async

    def announce(url: str) -> None:
        console.print(f"metrics: {url}/metrics", highlight=False)
        console.print(f"health:  {url}/healthz", highlight=False)
        console.print(f"report:  {url}/report/ (files in {cfg.resolve(cfg.reports.dir).resolve()})")
        console.print("Ctrl-C to stop", highlight=False)

    return await _serve_async(cfg, analysis_interval_s=30.0, announce=announce)
