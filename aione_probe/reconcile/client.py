"""Fetch and parse the gateway's own usage dashboard (AIone ``GET /api/v1/obs/dashboard``).

The body is ``{"view_mode": "tech", "tech": {...}}`` (AIone docs, DashboardResponse).
Parsing is tolerant by design: an unknown field is kept in ``extra``, a missing or
mistyped field becomes an entry of ``schema_drift`` and never an exception, so a
changed dashboard shows up as a finding instead of a crash. Money and percentages
arrive as strings and are kept as exact `Decimal` values (``"12.3400"`` stays
``Decimal("12.3400")``); JSON numbers are parsed as `Decimal` too, never via float.

`fetch_dashboard` never raises for anything the server does: HTML, a 422 validation
body, 401/403, 5xx, timeouts and malformed JSON all become a `DashboardFetch` with
``ok == False`` and a reason. The management key is never part of a reason.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from aione_probe.config import ManagementConfig
from aione_probe.errors import ConfigError
from aione_probe.gateway.classify import scrub
from aione_probe.types import utcnow

DASHBOARD_PATH = "/api/v1/obs/dashboard"
DEFAULT_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 4 * 1024 * 1024

INT_FIELDS = ("total_requests", "prompt_tokens", "completion_tokens", "total_tokens")
DECIMAL_FIELDS = (
    "total_cost_rmb",
    "avg_latency_ms",
    "p99_latency_ms",
    "error_rate_pct",
    "rpm_usage_pct",
)
_DIGITS = re.compile(r"^\s*\d+\s*$")


@dataclass(frozen=True)
class ModelUsage:
    """One entry of ``model_distribution`` (None: the field was missing or mistyped)."""

    model: str
    requests: int | None
    tokens: int | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dashboard:
    """The ``tech`` view of the dashboard, every figure exactly as the gateway sent it.

    Attributes:
        view_mode: the top-level ``view_mode`` (``"tech"`` expected).
        model_distribution: per-model entries, or None when the list is missing.
        extra: unknown fields, top-level ones under their own name and ``tech`` ones
            under ``"tech.<name>"``.
        schema_drift: paths of missing or mistyped fields (``"tech.avg_latency_ms"``,
            ``"tech.model_distribution[2].requests"``), each with the reason after ``": "``.
    """

    view_mode: str | None = None
    total_requests: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    total_cost_rmb: Decimal | None = None
    avg_latency_ms: Decimal | None = None
    p99_latency_ms: Decimal | None = None
    error_rate_pct: Decimal | None = None
    rpm_usage_pct: Decimal | None = None
    model_distribution: tuple[ModelUsage, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema_drift: tuple[str, ...] = ()

    def figures(self) -> dict[str, Any]:
        """The parsed figures, JSON-ready (decimals as their exact strings)."""
        out: dict[str, Any] = {"view_mode": self.view_mode}
        for name in INT_FIELDS:
            out[name] = getattr(self, name)
        for name in DECIMAL_FIELDS:
            value = getattr(self, name)
            out[name] = None if value is None else str(value)
        out["model_distribution"] = (
            None
            if self.model_distribution is None
            else [
                {"model": m.model, "requests": m.requests, "tokens": m.tokens}
                for m in self.model_distribution
            ]
        )
        return out


@dataclass(frozen=True)
class DashboardFetch:
    """The outcome of one poll: a parsed dashboard, or the reason there is none.

    Attributes:
        requested_at: UTC time the request was sent (the end of the dashboard's window).
        dashboard: the parsed body when the poll succeeded.
        reason: why the poll failed (never contains the key).
        status: the HTTP status, when there was a response.
        elapsed_s: seconds from sending to the end of the body (or the failure).
    """

    requested_at: datetime
    dashboard: Dashboard | None = None
    reason: str | None = None
    status: int | None = None
    elapsed_s: float | None = None

    @property
    def ok(self) -> bool:
        """True when a dashboard was parsed (possibly with schema drift)."""
        return self.dashboard is not None


def dashboard_url(base_url: str) -> str:
    """The dashboard URL under a management root (a trailing ``/api/v1`` is accepted)."""
    root = base_url.rstrip("/")
    if root.endswith("/api/v1"):
        root = root[: -len("/api/v1")]
    return root + DASHBOARD_PATH


def parse_dashboard(body: Any) -> Dashboard:
    """Parse a decoded dashboard body; never raises.

    Args:
        body: the JSON value (decode with ``parse_float=Decimal`` to keep numbers exact).

    Returns:
        A `Dashboard`; anything missing or mistyped is listed in ``schema_drift``.
    """
    drift: list[str] = []
    if not isinstance(body, dict):
        return Dashboard(schema_drift=(f"(body): expected an object, got {_kind(body)}",))
    extra = {k: v for k, v in body.items() if k not in ("view_mode", "tech")}
    view_mode = body.get("view_mode")
    if not isinstance(view_mode, str):
        drift.append(_drift("view_mode", view_mode, "a string"))
        view_mode = None
    tech = body.get("tech")
    if not isinstance(tech, dict):
        drift.append(_drift("tech", tech, "an object"))
        return Dashboard(view_mode=view_mode, extra=extra, schema_drift=tuple(drift))
    known = set(INT_FIELDS) | set(DECIMAL_FIELDS) | {"model_distribution"}
    extra.update({f"tech.{k}": v for k, v in tech.items() if k not in known})
    values: dict[str, Any] = {}
    for name in INT_FIELDS:
        values[name] = _int(tech, name, f"tech.{name}", drift)
    for name in DECIMAL_FIELDS:
        values[name] = _decimal(tech, name, f"tech.{name}", drift)
    return Dashboard(
        view_mode=view_mode,
        model_distribution=_distribution(tech, drift),
        extra=extra,
        schema_drift=tuple(drift),
        **values,
    )


def _distribution(tech: dict[str, Any], drift: list[str]) -> tuple[ModelUsage, ...] | None:
    raw = tech.get("model_distribution")
    if not isinstance(raw, list):
        drift.append(_drift("tech.model_distribution", raw, "a list"))
        return None
    entries = []
    for i, item in enumerate(raw):
        where = f"tech.model_distribution[{i}]"
        if not isinstance(item, dict):
            drift.append(_drift(where, item, "an object"))
            continue
        model = item.get("model")
        if not isinstance(model, str) or not model:
            drift.append(_drift(f"{where}.model", model, "a model id"))
            continue
        entries.append(
            ModelUsage(
                model=model,
                requests=_int(item, "requests", f"{where}.requests", drift),
                tokens=_int(item, "tokens", f"{where}.tokens", drift),
                extra={k: v for k, v in item.items() if k not in ("model", "requests", "tokens")},
            )
        )
    return tuple(entries)


def _int(obj: dict[str, Any], name: str, where: str, drift: list[str]) -> int | None:
    value = obj.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, Decimal) and value.is_finite() and value >= 0 and value % 1 == 0:
        return int(value)
    if isinstance(value, str) and _DIGITS.match(value):
        return int(value)
    drift.append(_drift(where, value, "a non-negative integer"))
    return None


def _decimal(obj: dict[str, Any], name: str, where: str, drift: list[str]) -> Decimal | None:
    value = obj.get(name)
    if isinstance(value, bool):
        parsed = None
    elif isinstance(value, int):
        parsed = Decimal(value)
    elif isinstance(value, Decimal):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            parsed = None
    else:
        parsed = None
    if parsed is None or not parsed.is_finite():
        drift.append(_drift(where, value, "a decimal number or decimal string"))
        return None
    return parsed


def _drift(where: str, value: Any, expected: str) -> str:
    if value is None:
        return f"{where}: missing"
    return f"{where}: expected {expected}, got {_kind(value)}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | Decimal):
        return "a number"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


async def fetch_dashboard(
    mgmt: ManagementConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float = 10.0,
) -> DashboardFetch:
    """Poll ``GET {base_url}/api/v1/obs/dashboard?range_days=N`` once; never raises.

    Args:
        mgmt: the gateway's management API settings (root URL, key source, range_days).
        transport: an httpx transport (tests pass a mock or an ASGI app).
        timeout_s: deadline for the whole exchange.
        connect_timeout_s: deadline for the connection.

    Returns:
        A `DashboardFetch`: parsed when the server answered a JSON object with 2xx,
        otherwise with a reason (HTTP status, validation error, HTML, timeout…).
    """
    requested_at = utcnow()
    try:
        key = mgmt.api_key()
    except ConfigError as exc:
        return DashboardFetch(requested_at, reason=f"management key unreadable: {exc}")
    if not key:
        return DashboardFetch(
            requested_at, reason="no management key (set api_key_env or api_key_file)"
        )
    url = dashboard_url(mgmt.base_url)
    started = time.perf_counter()
    timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
    try:
        async with (
            httpx.AsyncClient(transport=transport, timeout=timeout) as client,
            asyncio.timeout(timeout_s),
        ):
            request = client.build_request(
                "GET",
                url,
                params={"range_days": mgmt.range_days},
                headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            )
            response = await client.send(request, stream=True)
            try:
                body, too_large = await _read_capped(response)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        return DashboardFetch(
            requested_at,
            reason=f"no answer within {timeout_s:g}s",
            elapsed_s=time.perf_counter() - started,
        )
    except (httpx.HTTPError, OSError) as exc:
        reason = scrub(f"request failed: {type(exc).__name__}: {exc}", key)
        return DashboardFetch(requested_at, reason=reason, elapsed_s=time.perf_counter() - started)
    elapsed = time.perf_counter() - started
    status = response.status_code
    if too_large:
        reason = f"body larger than {MAX_BODY_BYTES} bytes"
        return DashboardFetch(requested_at, reason=reason, status=status, elapsed_s=elapsed)
    reason = _status_reason(status, body, response.headers.get("content-type", ""), key)
    if reason is not None:
        return DashboardFetch(requested_at, reason=reason, status=status, elapsed_s=elapsed)
    try:
        data = json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
        return DashboardFetch(
            requested_at, reason=f"malformed JSON{where}", status=status, elapsed_s=elapsed
        )
    if not isinstance(data, dict):
        reason = f"expected a JSON object, got {_kind(data)}"
        return DashboardFetch(requested_at, reason=reason, status=status, elapsed_s=elapsed)
    return DashboardFetch(
        requested_at, dashboard=parse_dashboard(data), status=status, elapsed_s=elapsed
    )


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"", True
        parts.append(chunk)
    return b"".join(parts), False


def _looks_html(body: bytes, content_type: str) -> bool:
    return "html" in content_type.lower() or body.lstrip()[:1] == b"<"


def _status_reason(status: int, body: bytes, content_type: str, key: str) -> str | None:
    """Why a response is not a dashboard, or None when it should be one."""
    if status in (401, 403):
        return f"management key rejected (HTTP {status})"
    if status == 422:
        return scrub(f"validation error (HTTP 422): {_validation_detail(body)}", key)
    if 300 <= status < 400:
        return f"redirected (HTTP {status}); a login page or a wrong base_url?"
    if status >= 500:
        return f"server error (HTTP {status})"
    if status >= 400 or status < 200:
        return f"unexpected HTTP {status}"
    if _looks_html(body, content_type):
        return "answered HTML, not JSON (a login page or a web app at base_url?)"
    return None


def _validation_detail(body: bytes) -> str:
    """The FastAPI ``{"detail": [{"loc", "msg", "type"}]}`` body as ``loc: msg (type)``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "unreadable body"
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list):
        return "no detail"
    parts = []
    for item in detail[:5]:
        if not isinstance(item, dict):
            continue
        loc = item.get("loc")
        where = ".".join(str(p) for p in loc) if isinstance(loc, list) else "?"
        parts.append(f"{where}: {item.get('msg', '?')} ({item.get('type', '?')})")
    return "; ".join(parts) or "no detail"
