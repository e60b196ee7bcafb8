"""Authenticity audits of stored observations: reference, own baseline, imported profiles.

For each (gateway, model) the audit window's fingerprint observations are compared with
every reference that applies:

- **reference**: the same model behind a trusted endpoint (``[[authenticity.references]]``),
  sampled by the same suites in the same window;
- **baseline**: a fingerprint pinned from this target's own earlier window (trust on first
  use: pinned automatically the first time enough data exists; `aione-probe baseline pin`
  re-pins it);
- **profile**: fingerprints exported from another deployment and imported for this model.

Each comparison spends α/k (k comparisons), so the overall verdict, the worst of them,
keeps its false-positive rate at most α by the union bound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aione_probe.config import Config
from aione_probe.fingerprint import Profile, compare, compare_profiles
from aione_probe.fingerprint.audit import AuditResult
from aione_probe.store import Store

log = logging.getLogger(__name__)

KIND_BASELINE = "authenticity"
KIND_PROFILE = "profile"
#: Worst first: the overall verdict is the worst comparison's.
SEVERITY = ("substituted", "suspect", "authentic", "insufficient_data")


@dataclass(frozen=True)
class Comparison:
    """One audit of a target against one reference, and where the reference came from."""

    label: str
    result: AuditResult


def window_observations(
    store: Store, gateway: str, model: str, since: datetime | None, until: datetime
) -> list[Any]:
    """Final observations of (gateway, model) in the window, as stored rows."""
    return store.observations(gateway, model, since=since, until=until, final_only=True)


def pin_baseline(store: Store, gateway: str, model: str, since: datetime, until: datetime) -> int:
    """Pin the fingerprint of (gateway, model) over [since, until) as its baseline."""
    obs = window_observations(store, gateway, model, since, until)
    profile = Profile.from_observations(obs, gateway=gateway, model=model, source="baseline")
    return store.pin_baseline(
        KIND_BASELINE, gateway, model, None, since, until, "pinned", profile.to_dict()
    )


def audit_target(store: Store, cfg: Config, gateway: str, model: str, now: datetime) -> str:
    """Run every comparison that applies to one target; store the verdicts; return the overall."""
    since = now - timedelta(seconds=cfg.authenticity.window)
    target_obs = window_observations(store, gateway, model, since, now)
    if not target_obs:
        return "insufficient_data"
    baseline = store.active_baseline(KIND_BASELINE, gateway, model, None)
    if baseline is None:
        # Trust on first use: the first window with fingerprint data becomes the baseline.
        profile = Profile.from_observations(
            target_obs, gateway=gateway, model=model, source="baseline"
        )
        if profile.probes:
            store.pin_baseline(
                KIND_BASELINE,
                gateway,
                model,
                None,
                since,
                now,
                "auto: trust on first use",
                profile.to_dict(),
            )
            log.info("pinned authenticity baseline for %s/%s (trust on first use)", gateway, model)
    references = [
        r for r in cfg.authenticity.references if (r.gateway, r.model) == (gateway, model)
    ]
    profiles = [b for b in store.baselines(kind=KIND_PROFILE, active_only=True) if b.model == model]
    k = len(references) + len(profiles) + (baseline is not None)
    if k == 0:
        store.save_verdict(
            "authenticity",
            gateway,
            model,
            None,
            "insufficient_data",
            None,
            cfg.authenticity.alpha,
            len(target_obs),
            None,
            {
                "reason": "no reference yet: a baseline is pinned from this window (trust on "
                "first use); later windows are compared with it",
                "signals": [],
                "needed": 1,
            },
        )
        return "insufficient_data"
    alpha = cfg.authenticity.alpha / k
    comparisons: list[Comparison] = []
    for ref in references:
        ref_model = ref.reference_model or ref.model
        ref_obs = window_observations(store, ref.reference_gateway, ref_model, since, now)
        result = compare(
            target_obs,
            ref_obs,
            alpha=alpha,
            gateway=gateway,
            model=model,
            reference_gateway=ref.reference_gateway,
            reference_model=ref_model,
        )
        comparisons.append(Comparison(f"reference:{ref.reference_gateway}/{ref_model}", result))
    if baseline is not None:
        # Only observations after the baseline window are compared with it.
        recent = [o for o in target_obs if o.started_at >= baseline.window_end]
        result = compare(
            recent, Profile.from_dict(baseline.data), alpha=alpha, gateway=gateway, model=model
        )
        comparisons.append(Comparison(f"baseline:{baseline.id}", result))
    for prof in profiles:
        target = Profile.from_observations(
            target_obs, gateway=gateway, model=model, source="target"
        )
        result = compare_profiles(target, Profile.from_dict(prof.data), alpha=alpha)
        comparisons.append(Comparison(f"profile:{prof.id}", result))
    for c in comparisons:
        _save(store, c, suite=c.label)
    overall = min(comparisons, key=lambda c: SEVERITY.index(str(c.result.verdict.verdict)))
    _save(store, overall, suite=None, alpha=cfg.authenticity.alpha, k=k)
    return str(overall.result.verdict.verdict)


def _save(
    store: Store, c: Comparison, *, suite: str | None, alpha: float | None = None, k: int = 1
) -> None:
    row = c.result.to_row(suite or "")
    details = {**row["details"], "comparison": c.label, "comparisons": k}
    store.save_verdict(
        "authenticity",
        row["gateway"],
        row["model"],
        suite,
        row["verdict"],
        row["score"],
        alpha if alpha is not None else row["alpha"],
        row["n"],
        None,
        details,
    )
