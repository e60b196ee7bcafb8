"""What aione-probe itself recorded for a gateway over the dashboard's window.

The dashboard only takes ``range_days``, so its window is ``[poll − range_days, poll)``
on the gateway's clock. The tally counts the same window from stored observations and,
because the edges are fuzzy, brackets every count with the least and the most the
gateway may honestly report:

- *probe*: attempts that reached the gateway (``status`` is set) and started inside the
  window; this is the figure shown beside the gateway's.
- *low*: of those, the ones the gateway must have counted: started at least `edge_s`
  after the window start (clock skew, requests logged when they end) and finished at
  least `settle_s` before the poll (the gateway's log may lag).
- *high*: everything that may have been counted: attempts started up to `edge_s` before
  the window start, attempts whose fate is unknown (a timeout before any response, an
  HTTP 401 the gateway may not attribute to the key), and runs still in progress, whose
  observations are written only when they finish. A running run is allowed as many
  attempts and tokens as the largest finished run of the same suite and model in the
  tally; with no such run the bound is unknown (None).

Tokens are ``prompt_tokens + completion_tokens`` from the gateway's own usage. An error
status counts no tokens; an attempt that got a 2xx but no usage (a broken stream) or no
response at all has unknown tokens, which leaves the upper token bound unknown.

The bracket is only meaningful when the key is used by aione-probe alone: the dashboard
covers everything the management key's account sent.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from aione_probe.errors import FailureKind
from aione_probe.store import Store

DEFAULT_SETTLE_S = 300.0
CLOCK_SKEW_S = 60.0

# No response headers, yet the request may have been received and counted.
_MAYBE_REACHED = frozenset(
    {
        FailureKind.timeout_first_token,
        FailureKind.timeout_idle,
        FailureKind.timeout_total,
        FailureKind.cancelled,
    }
)
# Unauthenticated requests cannot be attributed to an account by the gateway.
_UNATTRIBUTED_STATUS = 401


class ObservationLike(Protocol):
    """The observation columns the tally reads (an `ObservationRow` has them all)."""

    run_id: int
    model: str
    suite: str
    started_at: datetime
    status: int | None
    failure: str
    prompt_tokens: int | None
    completion_tokens: int | None
    end_s: float | None


@dataclass(frozen=True)
class RunningRun:
    """A run still in progress: its observations are not in the store yet."""

    model: str
    suite: str


@dataclass
class Bound:
    """One count with the bracket the gateway's figure must fall in (high None: unknown)."""

    probe: int = 0
    low: int = 0
    high: int | None = 0

    def add(self, value: int | None, *, counted: bool, certain: bool) -> None:
        """Add one attempt that may have been counted (None: unknown amount)."""
        if counted:
            self.probe += value or 0
        if certain:
            self.low += value or 0
        self.widen(value)

    def widen(self, value: int | None) -> None:
        """Raise the upper bound by `value` (None makes it unknown)."""
        self.high = None if value is None or self.high is None else self.high + value

    def __add__(self, other: Bound) -> Bound:
        high = None if self.high is None or other.high is None else self.high + other.high
        return Bound(self.probe + other.probe, self.low + other.low, high)


@dataclass
class ModelTally:
    """The probe's record of one model: counts with brackets."""

    requests: Bound = field(default_factory=Bound)
    prompt_tokens: Bound = field(default_factory=Bound)
    completion_tokens: Bound = field(default_factory=Bound)
    running_runs: int = 0

    @property
    def tokens(self) -> Bound:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ProbeTally:
    """Everything the probe recorded for one gateway over the dashboard's window.

    Attributes:
        since, until: the window, ``[poll − range_days, poll)``.
        models: per requested model id.
        latencies_ms: end-to-end latency of every attempt counted in `probe` figures
            that has one, in milliseconds.
        errors: how many of those attempts got an HTTP status ≥ 400.
        errors_5xx: how many got a 5xx.
    """

    since: datetime
    until: datetime
    models: dict[str, ModelTally] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    errors_5xx: int = 0

    @property
    def requests(self) -> Bound:
        """Requests over every model."""
        return sum((m.requests for m in self.models.values()), Bound())

    def total(self, name: str) -> Bound:
        """A token count (``prompt_tokens``, ``completion_tokens`` or ``tokens``) over models."""
        return sum((getattr(m, name) for m in self.models.values()), Bound())

    @property
    def n(self) -> int:
        """Attempts counted in the window (the sample size of error rate and latency)."""
        return self.requests.probe


def tally_observations(
    rows: Iterable[ObservationLike],
    running: Iterable[RunningRun],
    *,
    since: datetime,
    until: datetime,
    edge_s: float,
    settle_s: float = DEFAULT_SETTLE_S,
) -> ProbeTally:
    """Tally observations of one gateway against the window ``[since, until)``.

    Args:
        rows: observations started in ``[since − edge_s, until)`` (others are ignored).
        running: runs of the gateway still in progress at the poll.
        since: start of the dashboard's window.
        until: the poll time.
        edge_s: how far the gateway's window start may differ from ours.
        settle_s: how long after a request ends the gateway may take to count it.

    Returns:
        The tally; see the module docstring for what each bound means.
    """
    tally = ProbeTally(since=since, until=until)
    edge = timedelta(seconds=edge_s)
    per_run: dict[tuple[str, str], dict[int, ModelTally]] = defaultdict(
        lambda: defaultdict(ModelTally)
    )
    for o in rows:
        if not since - edge <= o.started_at < until:
            continue
        reached = o.status is not None and o.status != _UNATTRIBUTED_STATUS
        maybe = not reached and (o.status == _UNATTRIBUTED_STATUS or o.failure in _MAYBE_REACHED)
        if not reached and not maybe:
            continue
        inside = o.started_at >= since
        counted = reached and inside
        ended = o.started_at + timedelta(seconds=o.end_s or 0.0)
        certain = (
            counted and o.started_at >= since + edge and ended < until - timedelta(seconds=settle_s)
        )
        prompt, completion = _tokens(o)
        model = tally.models.setdefault(o.model, ModelTally())
        model.requests.add(1, counted=counted, certain=certain)
        model.prompt_tokens.add(prompt, counted=counted, certain=certain)
        model.completion_tokens.add(completion, counted=counted, certain=certain)
        run = per_run[(o.model, o.suite)][o.run_id]
        run.requests.add(1, counted=True, certain=True)
        run.prompt_tokens.add(prompt, counted=True, certain=True)
        run.completion_tokens.add(completion, counted=True, certain=True)
        if counted:
            if o.end_s is not None:
                tally.latencies_ms.append(o.end_s * 1000.0)
            if o.status is not None and o.status >= 400:
                tally.errors += 1
                tally.errors_5xx += o.status >= 500
    for r in running:
        model = tally.models.setdefault(r.model, ModelTally())
        model.running_runs += 1
        finished = per_run.get((r.model, r.suite), {})
        for name in ("requests", "prompt_tokens", "completion_tokens"):
            highs = [getattr(t, name).high for t in finished.values()]
            largest = None if not highs or None in highs else max(h for h in highs if h is not None)
            getattr(model, name).widen(largest)
    return tally


def _tokens(o: ObservationLike) -> tuple[int | None, int | None]:
    """Prompt and completion tokens the gateway may bill for one attempt (None: unknown)."""
    if o.status is not None and o.status >= 400:
        return 0, 0
    if o.prompt_tokens is None or o.completion_tokens is None:
        return None, None
    return o.prompt_tokens, o.completion_tokens


def probe_tally(
    store: Store,
    gateway: str,
    *,
    since: datetime,
    until: datetime,
    edge_s: float,
    settle_s: float = DEFAULT_SETTLE_S,
) -> ProbeTally:
    """Read the store and tally `gateway` over ``[since, until)`` (blocking: use a thread)."""
    # Runs first: one that finishes in between is then allowed twice, never missed.
    running = [
        RunningRun(r.model, r.suite)
        for r in store.runs(gateway=gateway, status="running")
        if r.started_at < until
    ]
    rows = store.observations(gateway=gateway, since=since - timedelta(seconds=edge_s), until=until)
    return tally_observations(
        rows, running, since=since, until=until, edge_s=edge_s, settle_s=settle_s
    )


def p99(values: list[float]) -> float | None:
    """The nearest-rank 99th percentile (the smallest value ≥ 99 % of the values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
