"""What instances of one fleet must agree on, and the differences when they do not.

Two parts: the **fleet** part every instance shares (each suite's probe file identity:
suite id, version and the hash of its probes; its schedule, jitter and cheap-only switch;
the spend caps and prices that the shared ledger enforces), and the **location** part
that instances of one location share (which gateways, models and suites it covers). A
newcomer that differs from a live instance is refused with the keys that differ, so a
rolling upgrade to a new suite version means stopping the old instances first.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aione_probe.config import Config
from aione_probe.errors import ConfigError
from aione_probe.store.tables import FleetInstance
from aione_probe.suites import Suite


def describe(cfg: Config, suites: dict[str, Suite]) -> dict[str, Any]:
    """The fleet-relevant part of a config, as stored with the instance (JSON-ready)."""
    fleet: dict[str, Any] = {}
    for sc in cfg.suites:
        suite = suites[sc.job_name]
        probes = hashlib.sha256(
            "\n".join(sorted(p.hash for p in suite.probes)).encode()
        ).hexdigest()[:16]
        fleet[f"suites.{sc.job_name}"] = {
            "suite": suite.id,
            "version": suite.version,
            "probes": probes,
            "interval": sc.interval,
            "cron": sc.cron,
            "jitter": sc.jitter,
            "cheap_only": sc.cheap_only,
            "enabled": sc.enabled,
        }
    fleet["budget"] = cfg.budget.model_dump(mode="json")
    fleet["pricing"] = {k: v.model_dump(mode="json") for k, v in sorted(cfg.pricing.items())}
    location: dict[str, Any] = {
        f"gateways.{g.name}": {"base_url": g.base_url, "protocol": g.protocol, "models": g.models}
        for g in cfg.gateways
    }
    for sc in cfg.suites:
        location[f"suites.{sc.job_name}.targets"] = {"gateways": sc.gateways, "models": sc.models}
    return {"fleet": fleet, "location": location}


def differences(mine: dict[str, Any], theirs: dict[str, Any], *, same_location: bool) -> list[str]:
    """Human-readable differences ``key: fleet has X, this instance Y`` (empty: compatible)."""
    parts = ["fleet", "location"] if same_location else ["fleet"]
    out = []
    for part in parts:
        a, b = theirs.get(part, {}), mine.get(part, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) == b.get(key):
                continue
            if key not in a or key not in b:
                side = "only this instance has" if key in b else "this instance lacks"
                out.append(f"{key}: {side} it")
                continue
            va, vb = a[key], b[key]
            if isinstance(va, dict) and isinstance(vb, dict):
                for sub in sorted(set(va) | set(vb)):
                    if va.get(sub) != vb.get(sub):
                        out.append(
                            f"{key}.{sub}: fleet has {va.get(sub)!r}, this instance {vb.get(sub)!r}"
                        )
            else:
                out.append(f"{key}: fleet has {va!r}, this instance {vb!r}")
    return out


def refuse_if_different(
    cfg: Config, mine: dict[str, Any], location: str, live: list[FleetInstance]
) -> None:
    """Raise `ConfigError` naming the differences with the first disagreeing live instance."""
    for other in live:
        diff = differences(mine, other.config or {}, same_location=other.location == location)
        if diff:
            raise ConfigError(
                str(cfg.path),
                "fleet",
                f"this config differs from live instance {other.name} "
                f"(location {other.location}): "
                + "; ".join(diff[:8])
                + (f"; and {len(diff) - 8} more" if len(diff) > 8 else ""),
            )
