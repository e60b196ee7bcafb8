"""Reconciliation with the gateway's own usage dashboard (AIone ``/api/v1/obs/dashboard``).

``client`` polls and parses the dashboard, ``tally`` reads what aione-probe recorded over
the same window, ``compare`` judges one against the other, ``run`` ties them together
and saves ``reconcile`` verdicts.
"""

from aione_probe.reconcile.client import (
    Dashboard,
    DashboardFetch,
    ModelUsage,
    dashboard_url,
    fetch_dashboard,
    parse_dashboard,
)
from aione_probe.reconcile.compare import Tolerances, compare, verdict_of, wilson_interval
from aione_probe.reconcile.run import ReconcileResult, reconcile_gateway, save_reconcile
from aione_probe.reconcile.tally import (
    Bound,
    ModelTally,
    ProbeTally,
    RunningRun,
    probe_tally,
    tally_observations,
)

__all__ = [
    "Bound",
    "Dashboard",
    "DashboardFetch",
    "ModelTally",
    "ModelUsage",
    "ProbeTally",
    "ReconcileResult",
    "RunningRun",
    "Tolerances",
    "compare",
    "dashboard_url",
    "fetch_dashboard",
    "parse_dashboard",
    "probe_tally",
    "reconcile_gateway",
    "save_reconcile",
    "tally_observations",
    "verdict_of",
    "wilson_interval",
]
