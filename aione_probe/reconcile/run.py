"""Reconcile one gateway: poll its dashboard, tally the store, compare, save verdicts.

Storage shape (``verdict`` table, ``kind="reconcile"``, ``suite=None``, ``alpha=None``,
``baseline_id=None``):

- one row with ``model="*"``: every check; ``n`` = attempts the probe counted in the
  window; ``score`` = share of judged checks that passed; ``details`` =
  ``{"checks": [...], "dashboard": {figures as strings}, "schema_drift": [...],
  "poll_at": iso, "window": {"since", "until"}, "reason": str | None,
  "http_status": int | None}``;
- one row per model seen by either side (after a successful poll), with that model's
  request and token checks and its ``model_distribution`` entry as ``dashboard``.

``verdict`` is ``consistent``, ``discrepant`` or ``unavailable`` (the poll failed, or no
figure could be compared; ``details.reason`` says why).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx

from aione_probe.asyncstore import AsyncStore
from aione_probe.config import GatewayConfig
from aione_probe.reconcile.client import DEFAULT_TIMEOUT_S, DashboardFetch, fetch_dashboard
from aione_probe.reconcile.compare import (
    ALL_MODELS,
    DEFAULT_TOLERANCES,
    Tolerances,
    compare,
    verdict_of,
)
from aione_probe.reconcile.tally import CLOCK_SKEW_S, DEFAULT_SETTLE_S, ProbeTally, probe_tally
from aione_probe.store import Store, VerdictKind
from aione_probe.types import CheckResult, utcnow

T = TypeVar("T")


@dataclass(frozen=True)
class ReconcileResult:
    """The outcome of one reconciliation of one gateway.

    Attributes:
        gateway: the gateway's name.
        poll_at: the end of the compared window (when the dashboard was requested).
        verdict: ``consistent``, ``discrepant`` or ``unavailable``.
        score: share of judged checks that passed (None when nothing was judged).
        n: attempts the probe counted in the window.
        checks: every check, gateway-wide and per model.
        reason: why the verdict is ``unavailable``, when it is.
        fetch: the poll (status, timing, parsed dashboard).
        tally: what the probe recorded (None when the poll failed).
        verdict_ids: ids of the saved verdict rows, ``"*"`` first.
    """

    gateway: str
    poll_at: datetime
    verdict: str
    score: float | None
    n: int
    checks: list[CheckResult]
    reason: str | None = None
    fetch: DashboardFetch | None = None
    tally: ProbeTally | None = None
    verdict_ids: tuple[int, ...] = field(default=())

    def models(self) -> list[str]:
        """Models with checks of their own, sorted."""
        return sorted({c.metadata["model"] for c in self.checks} - {ALL_MODELS})

    def details(self, model: str = ALL_MODELS) -> dict[str, Any]:
        """The verdict's ``details`` for `model` (``"*"``: the whole gateway)."""
        dash = self.fetch.dashboard if self.fetch else None
        figures = dash.figures() if dash else None
        if model != ALL_MODELS and figures is not None:
            entries = figures["model_distribution"] or []
            figures = next((e for e in entries if e["model"] == model), None)
        checks = [c for c in self.checks if model == ALL_MODELS or c.metadata["model"] == model]
        return {
            "checks": [check_json(c) for c in checks],
            "dashboard": figures,
            "schema_drift": list(dash.schema_drift) if dash else [],
            "poll_at": self.poll_at.isoformat(),
            "window": None
            if self.tally is None
            else {"since": self.tally.since.isoformat(), "until": self.tally.until.isoformat()},
            "reason": self.reason,
            "http_status": self.fetch.status if self.fetch else None,
        }


def check_json(c: CheckResult) -> dict[str, Any]:
    """A check result as a JSON-ready dict."""
    return {
        "name": c.name,
        "value": c.value.value,
        "answer": c.answer,
        "expected": c.expected,
        "explanation": c.explanation,
        "metadata": c.metadata,
    }


def save_reconcile(store: Store, result: ReconcileResult) -> list[int]:
    """Save `result` as verdicts (see the module docstring); return their ids, ``"*"`` first.

    Blocking: call it from the store's thread.
    """
    kind = VerdictKind.reconcile.value
    ids = [
        store.save_verdict(
            kind,
            result.gateway,
            ALL_MODELS,
            None,
            result.verdict,
            result.score,
            None,
            result.n,
            None,
            result.details(),
            created_at=result.poll_at,
        )
    ]
    for model in result.models():
        checks = [c for c in result.checks if c.metadata["model"] == model]
        verdict, score = verdict_of(checks)
        n = 0
        if result.tally is not None and model in result.tally.models:
            n = result.tally.models[model].requests.probe
        ids.append(
            store.save_verdict(
                kind,
                result.gateway,
                model,
                None,
                verdict,
                score,
                None,
                n,
                None,
                result.details(model),
                created_at=result.poll_at,
            )
        )
    return ids


async def reconcile_gateway(
    gw: GatewayConfig,
    store: AsyncStore | Store,
    now: datetime | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    settle_s: float = DEFAULT_SETTLE_S,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
    save: bool = True,
) -> ReconcileResult:
    """Poll `gw`'s dashboard, compare it with the store and save the verdicts.

    The window compared is ``[poll − range_days, poll)``; its start may be off by the
    gateway's total timeout plus one minute of clock skew, its end by `settle_s`
    (see `aione_probe.reconcile.tally`).

    Args:
        gw: the gateway; its ``management`` section says where the dashboard is.
        store: the store, as the service's `AsyncStore` (its thread) or a plain `Store`
            (then each call runs in `asyncio.to_thread`).
        now: the poll time to use instead of the moment the request was sent (tests).
        transport: an httpx transport for the dashboard request (tests).
        settle_s: how long the gateway may take to count a finished request.
        tolerances: latency and error-rate tolerances.
        save: whether to save verdicts (False: only return the result).

    Returns:
        The result. A failed poll gives ``unavailable`` with a reason and never raises;
        a gateway without a ``management`` section is not polled and nothing is saved.
    """
    mgmt = gw.management
    if mgmt is None:
        return ReconcileResult(
            gw.name,
            now or utcnow(),
            "unavailable",
            None,
            0,
            [],
            reason="no management API configured for this gateway",
        )
    fetch = await fetch_dashboard(
        mgmt,
        transport=transport,
        timeout_s=min(DEFAULT_TIMEOUT_S, gw.timeouts.total),
        connect_timeout_s=gw.timeouts.connect,
    )
    poll_at = now or fetch.requested_at
    if fetch.dashboard is None:
        result = ReconcileResult(
            gw.name, poll_at, "unavailable", None, 0, [], reason=fetch.reason, fetch=fetch
        )
    else:
        tally = await _call(
            store,
            probe_tally,
            gw.name,
            since=poll_at - timedelta(days=mgmt.range_days),
            until=poll_at,
            edge_s=gw.timeouts.total + CLOCK_SKEW_S,
            settle_s=settle_s,
        )
        checks = compare(fetch.dashboard, tally, tolerances)
        verdict, score = verdict_of(checks)
        reason = None if verdict != "unavailable" else "no dashboard figure could be compared"
        result = ReconcileResult(
            gw.name,
            poll_at,
            verdict,
            score,
            tally.n,
            checks,
            reason=reason,
            fetch=fetch,
            tally=tally,
        )
    if not save:
        return result
    ids = await _call(store, save_reconcile, result)
    return replace(result, verdict_ids=tuple(ids))


async def _call(store: AsyncStore | Store, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if isinstance(store, AsyncStore):
        return await store.call(fn, *args, **kwargs)
    return await asyncio.to_thread(fn, store, *args, **kwargs)
