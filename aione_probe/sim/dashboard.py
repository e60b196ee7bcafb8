"""In-memory request log and the AIone-style management dashboard built from it."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aione_probe.sim.app import SimState
    from aione_probe.sim.engine import Completion


@dataclass(frozen=True)
class LoggedRequest:
    """One chat request as the simulated gateway bills it."""

    at: float
    model: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost_rmb: float


@dataclass
class RequestLog:
    """Append-only log of chat requests (unauthenticated requests are not logged)."""

    entries: list[LoggedRequest] = field(default_factory=list)

    def add(self, entry: LoggedRequest) -> None:
        """Record one request."""
        self.entries.append(entry)

    def record(
        self,
        model: str,
        status: int,
        started: float,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_rmb: float = 0.0,
    ) -> None:
        """Record one request that began at `started` (a ``time.perf_counter()`` value)."""
        self.add(
            LoggedRequest(
                at=time.time(),
                model=model,
                status=status,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_ms=(time.perf_counter() - started) * 1000,
                cost_rmb=cost_rmb,
            )
        )

    def dashboard(self, range_days: int, rpm_limit: int, factor: float) -> dict[str, Any]:
        """The ``GET /api/v1/obs/dashboard`` body over the last `range_days` days.

        `factor` multiplies reported tokens and cost (1.0 is honest); request counts,
        latencies and error rate are reported as measured.
        """
        now = time.time()
        rows = [e for e in self.entries if e.at >= now - range_days * 86_400]
        latencies = sorted(e.latency_ms for e in rows)
        errors = sum(1 for e in rows if e.status >= 400)
        last_minute = sum(1 for e in rows if e.at >= now - 60)
        prompt = round(sum(e.prompt_tokens for e in rows) * factor)
        completion = round(sum(e.completion_tokens for e in rows) * factor)
        per_model: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for e in rows:
            per_model[e.model][0] += 1
            per_model[e.model][1] += e.prompt_tokens + e.completion_tokens
        distribution = [
            {"model": model, "requests": n, "tokens": round(tokens * factor)}
            for model, (n, tokens) in sorted(per_model.items(), key=lambda kv: -kv[1][0])
        ]
        return {
            "view_mode": "tech",
            "tech": {
                "total_requests": len(rows),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "total_cost_rmb": f"{sum(e.cost_rmb for e in rows) * factor:.4f}",
                "avg_latency_ms": round(sum(latencies) / len(latencies), 3) if rows else 0.0,
                "p99_latency_ms": _nearest_rank(latencies, 0.99),
                "error_rate_pct": f"{100 * errors / len(rows) if rows else 0:.2f}",
                "rpm_usage_pct": f"{100 * last_minute / rpm_limit if rpm_limit else 0:.2f}",
                "model_distribution": distribution,
            },
        }


def _nearest_rank(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return round(sorted_values[index], 3)


def log_completion(
    state: SimState, model: str, status: int, started: float, c: Completion | None = None
) -> None:
    """Log one chat request (either protocol) for the dashboard."""
    usage = c.usage if c is not None else {}
    state.log.record(
        model,
        status,
        started,
        usage.get("prompt_tokens", 0),
        usage.get("completion_tokens", 0),
        c.cost_rmb if c is not None else 0.0,
    )
