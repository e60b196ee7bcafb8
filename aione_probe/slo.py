"""Service level objectives: what counts as a good request for each SLI, and sanity flags.

Three SLIs per target (gateway, model), in the SRE workbook's style:

* ``availability``: one event per *request*, judged on its final attempt after retries. A
  429 or 503 that a retry recovers is a good event (rate limiting has its own metric and a
  ticket); a request the shutdown cancelled is no event at all.
* ``ttft`` (streamed requests) and ``e2e`` (all requests): one event per request that got
  an answer or timed out. Good when the answer came within the threshold; a timeout is a
  miss; an HTTP error or a broken body is no latency event (availability counts it), so a
  failing target never pages twice.

The thresholds and targets come from the config (``[[slos]]``); the service exports both
as gauges, so the burn-rate rules in grafana/rules need no per-target constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aione_probe.errors import FailureKind
from aione_probe.types import Observation

if TYPE_CHECKING:
    from aione_probe.config import Config

SLOS = ("availability", "ttft", "e2e")
LATENCY_SLOS = ("ttft", "e2e")

LOOPBACK_FLOOR_S = 0.0005
"""No gateway answers faster than this: the client against a server that answers at once,
over 127.0.0.1, measured 0.9-1.2 ms at the fastest (bench/slo.py); half that is a floor
no real answer goes below. A threshold under it cannot be met by construction."""

_TIMEOUTS = frozenset(
    {
        FailureKind.timeout_connect,
        FailureKind.timeout_first_token,
        FailureKind.timeout_idle,
        FailureKind.timeout_total,
    }
)


@dataclass(frozen=True)
class Objectives:
    """One target's objectives: shares of good events (`*_target`) and latency thresholds.

    Defaults are AIone's own: 99 % success, first token within 3 s for 99 % of streamed
    answers (its documented 2–3 s streaming TTFT); 30 s end to end for 99 %.
    """

    availability_target: float = 0.99
    ttft_s: float = 3.0
    ttft_target: float = 0.99
    e2e_s: float = 30.0
    e2e_target: float = 0.99

    def target(self, slo: str) -> float:
        """The target share of good events of `slo`."""
        return float(getattr(self, f"{slo}_target"))

    def threshold_s(self, slo: str) -> float:
        """The latency threshold of a latency SLO, in seconds."""
        return float(getattr(self, f"{slo}_s"))


def sli_events(final: Observation, objectives: Objectives) -> list[tuple[str, bool]]:
    """The (SLI, good) events of one request, from its final attempt.

    Returns:
        Up to three pairs: availability always (unless cancelled), ttft for streamed
        requests that answered or timed out, e2e for any request that answered or timed out.
    """
    if final.failure is FailureKind.cancelled:
        return []
    events = [("availability", final.ok)]
    timed_out = final.failure in _TIMEOUTS
    if not (final.ok or timed_out):
        return events
    measured = {"ttft": final.ttft_s, "e2e": final.e2e_s}
    for slo in LATENCY_SLOS:
        if slo == "ttft" and not final.stream:
            continue  # a plain request's "TTFT" is its whole body: e2e covers it
        value = measured[slo]
        good = final.ok and value is not None and value <= objectives.threshold_s(slo)
        events.append((slo, good))
    return events


def objective_flags(objectives: Objectives, *, first_token_timeout_s: float) -> list[str]:
    """Objectives that cannot be met, or cannot page, by construction (check-config flags).

    Accepted by the config (they are not malformed), but worth a human look.
    """
    flags = []
    for slo in LATENCY_SLOS:
        threshold = objectives.threshold_s(slo)
        if threshold < LOOPBACK_FLOOR_S:
            flags.append(
                f"{slo} threshold {threshold * 1000:g} ms is below the loopback floor "
                f"({LOOPBACK_FLOOR_S * 1000:g} ms): no answer can meet it, every event misses"
            )
    if objectives.e2e_s < objectives.ttft_s:
        flags.append(
            f"e2e threshold {objectives.e2e_s:g} s is below the ttft threshold "
            f"{objectives.ttft_s:g} s: a streamed answer ends after its first token"
        )
    if objectives.ttft_s >= first_token_timeout_s:
        flags.append(
            f"ttft threshold {objectives.ttft_s:g} s is not below timeouts.first_token "
            f"({first_token_timeout_s:g} s): a slow first token times out before it can miss"
        )
    for slo in SLOS:
        if objectives.target(slo) >= 1.0:
            flags.append(
                f"{slo} target 1.0 leaves no error budget: any bad event is an infinite "
                "burn rate and pages"
            )
    return flags


def slo_flags(cfg: Config) -> list[tuple[str, str]]:
    """(config key, flag) for every ``[[slos]]`` entry, or the defaults when there is none.

    The timeout compared with is the shortest ``timeouts.first_token`` of the gateways an
    entry covers.
    """
    entries = [(f"slos[{i}]", s) for i, s in enumerate(cfg.slos)] or [("slos (defaults)", None)]
    out = []
    for where, entry in entries:
        covered = [g for g in cfg.gateways if entry is None or not entry.gateways
                   or g.name in entry.gateways]  # fmt: skip
        timeout = min((g.timeouts.first_token for g in covered), default=float("inf"))
        objectives = entry.objectives() if entry is not None else Objectives()
        out += [(where, f) for f in objective_flags(objectives, first_token_timeout_s=timeout)]
    return out
