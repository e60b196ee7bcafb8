"""`aione-probe fleet status`: a fleet's instances, its work queue and latency per location."""

from __future__ import annotations

from datetime import datetime, timedelta

from rich.console import Console
from rich.table import Table

from aione_probe.config import FleetConfig
from aione_probe.store import Store
from aione_probe.store import fleet as fleetdb
from aione_probe.types import utcnow


def _age(at: datetime, now: datetime) -> str:
    return f"{(now - at).total_seconds():.0f}s ago"


def print_status(store: Store, fleet: FleetConfig, console: Console) -> int:
    """Print instances (location, last heartbeat, runs in flight), the queue and each
    target's time to first token per location over the last hour.

    Returns the number of live instances. Instances that stopped in the last hour are
    listed too, marked ``stopped`` or ``lost``.
    """
    now = utcnow()
    rows = fleetdb.instances(store, since=now - timedelta(hours=1))
    live_since = now - timedelta(seconds=fleet.stalled_after)
    table = Table(title="instances", title_justify="left")
    for col in ("location", "instance", "host", "version", "state", "last heartbeat", "running"):
        table.add_column(col, justify="right" if col == "running" else "left")
    live = 0
    for r in rows:
        if r.stopped_at is None and r.heartbeat_at >= live_since:
            state, live = "live", live + 1
        elif r.lost or r.stopped_at is None:
            state = "lost"
        else:
            state = "stopped"
        table.add_row(
            r.location, r.name, r.host, r.version, state, _age(r.heartbeat_at, now), str(r.running)
        )
    console.print(table)
    queue = Table(title="queue (Procrastinate jobs)", title_justify="left")
    for col in ("queue", "status", "jobs"):
        queue.add_column(col, justify="right" if col == "jobs" else "left")
    for (name, status), n in sorted(fleetdb.queue_counts(store).items()):
        queue.add_row(name, status, str(n))
    console.print(queue)
    latency = Table(title="time to first token by location, last hour", title_justify="left")
    for col in ("location", "gateway", "model", "requests", "p50", "p90"):
        latency.add_column(col, justify="right" if col in ("requests", "p50", "p90") else "left")
    for r in fleetdb.latency_by_location(store, since=now - timedelta(hours=1)):
        latency.add_row(
            r.location, r.gateway, r.model, str(r.n), f"{r.ttft_p50_s:.3f}s", f"{r.ttft_p90_s:.3f}s"
        )
    console.print(latency)
    return live
