"""Compare the gateway's dashboard with what aione-probe recorded: pure functions.

Every result is a `CheckResult` whose metadata holds both figures: ``gateway_value``,
``probe_value``, ``difference`` (gateway − probe) and ``tolerance``, plus ``model``
(``"*"`` for gateway-wide figures) and ``field`` (the dashboard field compared).

Rules:

- **Requests and tokens** (``reconcile_requests``, ``reconcile_tokens``) must be equal.
  The only slack is the window edge described in `aione_probe.reconcile.tally`: a figure
  inside the tally's ``[low, high]`` bracket passes, below ``low`` is under-reporting,
  above ``high`` is over-reporting. Above the probe's figure with an unknown upper bound
  (runs in progress with no history, attempts with unknown usage) is ``partial``.
- **Latency** (``reconcile_latency``, ``avg`` and ``p99``): the gateway times a request
  from receipt to the last byte it writes; the client adds DNS, TCP and TLS set-up on new
  connections (one to three round trips, 50–300 ms on a cross-border route), upload,
  download, proxies in between and its own parsing. So the gateway's figure must not be
  higher than the client's by more than ``max(10 ms, 2 %)`` (rounding, clock
  granularity) and may be lower by at most ``max(250 ms, 30 %)`` for the mean. The p99
  rests on a few slow requests, where one reconnect or retransmit dominates, so its gap
  may reach ``max(500 ms, 50 %)``. Both client figures use the same nearest-rank p99.
- **Error rate** (``reconcile_error_rate``): the gateway's percentage must lie in the
  99 % Wilson interval of the probe's share of attempts with a status ≥ 400, widened by
  the 0.005 points of two-decimal rounding.
- **Schema** (``reconcile_schema``): ``missing`` with the list of missing or mistyped
  fields; a figure the dashboard lacks makes its own check ``missing`` too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from statistics import NormalDist
from typing import Any

from aione_probe.reconcile.client import Dashboard, ModelUsage
from aione_probe.reconcile.tally import Bound, ProbeTally, p99
from aione_probe.types import CheckResult, CheckValue

ALL_MODELS = "*"
ROUNDING_PCT = 0.005
JUDGED = frozenset({CheckValue.passed, CheckValue.failed, CheckValue.partial})


@dataclass(frozen=True)
class Tolerances:
    """How far the gateway's latency and error figures may be from the probe's."""

    latency_above_ms: float = 10.0
    latency_above_ratio: float = 0.02
    avg_below_ms: float = 250.0
    avg_below_ratio: float = 0.30
    p99_below_ms: float = 500.0
    p99_below_ratio: float = 0.50
    error_confidence: float = 0.99


DEFAULT_TOLERANCES = Tolerances()


def compare(
    dash: Dashboard, tally: ProbeTally, tol: Tolerances = DEFAULT_TOLERANCES
) -> list[CheckResult]:
    """All reconciliation checks of one dashboard against the probe's tally.

    Returns:
        The schema check, then gateway-wide requests and tokens, per-model requests and
        tokens (models sorted), latency (avg, p99) and error rate.
    """
    out = [_schema(dash)]
    out.append(
        _count(
            "reconcile_requests", "total_requests", ALL_MODELS, dash.total_requests, tally.requests
        )
    )
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        bound = tally.total("tokens" if name == "total_tokens" else name)
        out.append(_count("reconcile_tokens", name, ALL_MODELS, getattr(dash, name), bound))
    out.extend(_per_model(dash, tally))
    latencies = tally.latencies_ms
    mean = sum(latencies) / len(latencies) if latencies else None
    out.append(
        _latency("avg", dash.avg_latency_ms, mean, tol.avg_below_ms, tol.avg_below_ratio, tol)
    )
    out.append(
        _latency(
            "p99", dash.p99_latency_ms, p99(latencies), tol.p99_below_ms, tol.p99_below_ratio, tol
        )
    )
    out.append(_error_rate(dash.error_rate_pct, tally, tol.error_confidence))
    return out


def verdict_of(checks: Iterable[CheckResult]) -> tuple[str, float | None]:
    """``discrepant`` if a check failed, ``consistent`` if others were judged, else
    ``unavailable``; with the share of judged checks that passed."""
    judged = [c for c in checks if c.value in JUDGED]
    if not judged:
        return "unavailable", None
    score = sum(c.value is CheckValue.passed for c in judged) / len(judged)
    if any(c.value is CheckValue.failed for c in judged):
        return "discrepant", score
    return "consistent", score


def _result(
    name: str, value: CheckValue, explanation: str, gateway: Any, probe: Any, **meta: Any
) -> CheckResult:
    return CheckResult(
        name=name,
        value=value,
        answer=None if gateway is None else str(gateway),
        expected=None if probe is None else str(probe),
        explanation=explanation,
        metadata={"gateway_value": gateway, "probe_value": probe, **meta},
    )


def _schema(dash: Dashboard) -> CheckResult:
    unknown = sorted(dash.extra)
    meta = {"model": ALL_MODELS, "schema_drift": list(dash.schema_drift), "unknown_fields": unknown}
    if dash.schema_drift:
        fields = ", ".join(dash.schema_drift)
        return CheckResult(
            "reconcile_schema",
            CheckValue.missing,
            explanation=f"schema drift: {fields}",
            metadata=meta,
        )
    note = f"; unknown fields kept: {', '.join(unknown)}" if unknown else ""
    mode = "" if dash.view_mode == "tech" else f"; view_mode is {dash.view_mode!r}, not 'tech'"
    return CheckResult(
        "reconcile_schema",
        CheckValue.passed,
        explanation=f"every expected field is present{note}{mode}",
        metadata=meta,
    )


def _count(name: str, field: str, model: str, gateway: int | None, bound: Bound) -> CheckResult:
    tolerance = {"min": bound.low, "max": bound.high}
    meta = {"model": model, "field": field, "tolerance": tolerance}
    what = f"{field} of {'all models' if model == ALL_MODELS else repr(model)}"
    if gateway is None:
        return _result(
            name,
            CheckValue.missing,
            f"the dashboard lacks {what}",
            None,
            bound.probe,
            difference=None,
            **meta,
        )
    diff = gateway - bound.probe
    figures = f"{what}: gateway {gateway}, probe {bound.probe}"
    upper = "unknown" if bound.high is None else str(bound.high)
    if gateway < bound.low:
        value, why = CheckValue.failed, f"under-reported; at least {bound.low} must be counted"
    elif bound.high is not None and gateway > bound.high:
        value, why = CheckValue.failed, f"over-reported; at most {bound.high} can be explained"
    elif diff == 0:
        value, why = CheckValue.passed, "equal"
    elif diff < 0 or bound.high is not None:
        value, why = CheckValue.passed, f"within the window edges [{bound.low}, {upper}]"
    else:
        value, why = (
            CheckValue.partial,
            "higher, and runs in progress or attempts with unknown usage leave no upper bound",
        )
    return _result(name, value, f"{figures} ({why})", gateway, bound.probe, difference=diff, **meta)


def _per_model(dash: Dashboard, tally: ProbeTally) -> list[CheckResult]:
    listed = _by_model(dash.model_distribution or ())
    covered = _covers_everything(dash)
    out: list[CheckResult] = []
    for model in sorted(set(tally.models) | set(listed)):
        mt = tally.models.get(model)
        requests = mt.requests if mt else Bound()
        tokens = mt.tokens if mt else Bound()
        entry = listed.get(model)
        if entry is None and not covered:
            reason = (
                "the dashboard has no model_distribution"
                if dash.model_distribution is None
                else f"{model!r} is not in model_distribution, which does not cover every request"
            )
            for name, field, bound in (
                ("reconcile_requests", "requests", requests),
                ("reconcile_tokens", "tokens", tokens),
            ):
                out.append(
                    _result(
                        name,
                        CheckValue.missing,
                        reason,
                        None,
                        bound.probe,
                        difference=None,
                        model=model,
                        field=field,
                        tolerance={"min": bound.low, "max": bound.high},
                    )
                )
            continue
        gw_requests = entry.requests if entry else 0
        gw_tokens = entry.tokens if entry else 0
        out.append(_count("reconcile_requests", "requests", model, gw_requests, requests))
        out.append(_count("reconcile_tokens", "tokens", model, gw_tokens, tokens))
    return out


def _by_model(entries: Iterable[ModelUsage]) -> dict[str, ModelUsage]:
    """Entries keyed by model; duplicates are summed (None if any part is unknown)."""
    out: dict[str, ModelUsage] = {}
    for e in entries:
        seen = out.get(e.model)
        if seen is None:
            out[e.model] = e
            continue
        out[e.model] = ModelUsage(
            e.model,
            None if seen.requests is None or e.requests is None else seen.requests + e.requests,
            None if seen.tokens is None or e.tokens is None else seen.tokens + e.tokens,
        )
    return out


def _covers_everything(dash: Dashboard) -> bool:
    """Whether model_distribution accounts for every request (so an absent model had 0)."""
    if dash.model_distribution is None or dash.total_requests is None:
        return False
    counts = [e.requests for e in dash.model_distribution]
    return None not in counts and sum(c for c in counts if c is not None) == dash.total_requests


def _latency(
    stat: str,
    gateway: Decimal | None,
    client: float | None,
    below_ms: float,
    below_ratio: float,
    tol: Tolerances,
) -> CheckResult:
    name = "reconcile_latency"
    field = f"{stat}_latency_ms"
    if gateway is None:
        return _result(
            name,
            CheckValue.missing,
            f"the dashboard lacks {field}",
            None,
            _ms(client),
            model=ALL_MODELS,
            field=field,
            difference=None,
            tolerance=None,
        )
    g = float(gateway)
    if client is None:
        return _result(
            name,
            CheckValue.unscored,
            "no client-side latency in the window to compare with",
            str(gateway),
            None,
            model=ALL_MODELS,
            field=field,
            difference=None,
            tolerance=None,
        )
    above = max(tol.latency_above_ms, tol.latency_above_ratio * client)
    below = max(below_ms, below_ratio * client)
    diff = g - client
    figures = f"{stat} latency: gateway {g:.1f} ms, client {client:.1f} ms"
    if diff > above:
        value = CheckValue.failed
        why = f"the gateway's server-side figure exceeds the client's by {diff:.1f} ms"
    elif -diff > below:
        value = CheckValue.failed
        why = f"the gateway's figure is {-diff:.1f} ms below the client's (allowed {below:.1f} ms)"
    else:
        value, why = CheckValue.passed, f"within [-{below:.1f}, +{above:.1f}] ms"
    return _result(
        name,
        value,
        f"{figures} ({why})",
        str(gateway),
        _ms(client),
        model=ALL_MODELS,
        field=field,
        difference=_ms(diff),
        tolerance={"max_above_ms": _ms(above), "max_below_ms": _ms(below)},
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion, as fractions."""
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _error_rate(gateway: Decimal | None, tally: ProbeTally, confidence: float) -> CheckResult:
    name = "reconcile_error_rate"
    n, errors = tally.n, tally.errors
    probe = None if n == 0 else round(100 * errors / n, 4)
    meta: dict[str, Any] = {
        "model": ALL_MODELS,
        "field": "error_rate_pct",
        "n": n,
        "probe_errors": errors,
        "probe_5xx_pct": None if n == 0 else round(100 * tally.errors_5xx / n, 4),
    }
    if gateway is None:
        return _result(
            name,
            CheckValue.missing,
            "the dashboard lacks error_rate_pct",
            None,
            probe,
            difference=None,
            tolerance=None,
            **meta,
        )
    if n == 0 or probe is None:
        return _result(
            name,
            CheckValue.unscored,
            "the probe sent no requests in the window",
            str(gateway),
            None,
            difference=None,
            tolerance=None,
            **meta,
        )
    lo, hi = wilson_interval(errors, n, confidence)
    lo_pct = max(0.0, 100 * lo - ROUNDING_PCT)
    hi_pct = min(100.0, 100 * hi + ROUNDING_PCT)
    g = float(gateway)
    ok = lo_pct <= g <= hi_pct
    explanation = (
        f"error rate: gateway {gateway} %, probe {probe} % ({errors}/{n}); "
        f"{confidence:.0%} interval [{lo_pct:.3f}, {hi_pct:.3f}] %" + ("" if ok else ", outside it")
    )
    return _result(
        name,
        CheckValue.passed if ok else CheckValue.failed,
        explanation,
        str(gateway),
        probe,
        difference=round(g - probe, 4),
        tolerance={
            "ci_low_pct": round(lo_pct, 4),
            "ci_high_pct": round(hi_pct, 4),
            "confidence": confidence,
        },
        **meta,
    )
