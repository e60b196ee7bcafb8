"""Anytime-valid monitoring: e-values, e-detectors (e-CUSUM, Shiryaev–Roberts), budgets.

The service re-evaluates every comparison after every run, for months. A fixed-level test
repeated that way is certain to alarm eventually under the null. An *e-detector* is not:
each run contributes one e-value ``e_t`` (a non-negative number with ``E[e_t | past] <= 1``
when nothing has changed), and the detector's statistic

- e-CUSUM: ``M_t = e_t * max(M_{t-1}, 1)``,
- Shiryaev–Roberts: ``R_t = e_t * (R_{t-1} + 1)``,

alarms when it reaches a threshold ``c``. Under the null ``R_t - t`` is a supermartingale,
so the mean time to a false alarm is at least ``c`` runs, whatever the data's distribution
and however often the statistic is read (Shekhar & Ramdas 2023, arXiv:2309.09111). Since
``M_t <= R_t`` the e-CUSUM inherits the bound. ``R_t`` is the sum over every possible
change run ``j`` of the product of the e-values since ``j`` (the e-CUSUM takes their
maximum), and ``R_t + (n - t)`` is a non-negative supermartingale starting at ``n`` (one
product per start, each starting at 1), so by Ville's inequality the probability of any
alarm within ``n`` runs is at most ``n / c`` for both. Under a change the sum gathers the
evidence of every start near the true one, so Shiryaev–Roberts alarms no later than the
e-CUSUM on the same e-values: the service's authenticity detectors (`DetectorBank`) use it.
After an alarm the detector restarts, so the expected number of false alarms in ``n`` runs
is at most about ``n / c``: a budget of ``b`` false alarms per horizon of ``n`` runs is the
threshold ``c = n / b`` (`threshold_for_budget`). A bound on the *probability* of any false
alarm over the horizon follows too, since ``P(any) <= E[count]``.

Both statistics are kept in log space: an e-value of 1e-300 or 1e300 is ordinary.
Per-run p-values become e-values with a calibrator (`p_to_e`); a p-value that is valid for
its run gives an e-value that is valid for its run, which is all the detector needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

DetectorKind = Literal["cusum", "shiryaev_roberts"]


def p_to_e(p: float, kappa: float | None = None) -> float:
    """Turn a valid p-value into a valid e-value.

    With ``kappa`` in (0, 1): the calibrator ``kappa * p**(kappa - 1)`` (Vovk & Wang 2021).
    With ``kappa=None``: the mixture of those calibrators over ``kappa`` uniform on (0, 1),
    ``(1 - p + p ln p) / (p (ln p)^2)``, which needs no tuning and loses only a log factor
    against the best fixed ``kappa``. ``p = 1`` gives 0 or near 0 (evidence *for* the null),
    tiny ``p`` gives large e-values; both are finite.
    """
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"p-value must lie in [0, 1], got {p!r}")
    p = max(p, 1e-300)
    if kappa is not None:
        if not 0.0 < kappa < 1.0:
            raise ValueError(f"kappa must lie in (0, 1), got {kappa!r}")
        return kappa * p ** (kappa - 1.0)
    if p > 1.0 - 1e-9:
        # 1 - p + p ln p ~ (1-p)^2 / 2 and (ln p)^2 ~ (1-p)^2 near 1: the limit is 1/2.
        return 0.5
    lp = math.log(p)
    return (1.0 - p + p * lp) / (p * lp * lp)


def threshold_for_budget(false_alarms: float, horizon_runs: float) -> float:
    """The detector threshold that keeps expected false alarms per horizon within budget.

    ``false_alarms`` is the budget per horizon (e.g. 0.01 for "at most a 1 % chance of any
    false alarm per quarter", 1.0 for "at most one false alarm per quarter"), and
    ``horizon_runs`` the number of evaluations in that horizon (a quarter of 2-hourly runs
    is 1,080). The threshold is never below 1/0.05 = 20: a detector that alarms on a single
    unremarkable run would not be a detector.
    """
    if false_alarms <= 0:
        raise ValueError("the false-alarm budget must be positive")
    if horizon_runs <= 0:
        raise ValueError("the horizon must contain at least one run")
    return max(20.0, horizon_runs / false_alarms)


@dataclass
class EDetector:
    """An e-detector over a stream of per-run e-values (see the module docstring).

    `update` feeds one run's e-value and returns whether the detector is in alarm.
    `log_stat` is the current statistic in natural-log units; `history` keeps one entry
    per update (the log statistic after it) so reports can chart evidence over time.
    An alarm is sticky until `reset` (a re-pinned baseline, an acknowledged incident):
    the verdict keeps saying ``substituted`` while the evidence stays, and the false-alarm
    budget counts alarms, not the runs spent in one.
    """

    threshold: float
    kind: DetectorKind = "cusum"
    # Both recursions start from "no evidence": M_0 = R_0 = 0, i.e. log -inf.
    log_stat: float = -math.inf
    runs: int = 0
    alarmed_at: int | None = None
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.threshold <= 1.0:
            raise ValueError("an e-detector threshold must exceed 1")
        if self.kind not in ("cusum", "shiryaev_roberts"):
            raise ValueError(f"unknown detector kind {self.kind!r}")

    @property
    def log_threshold(self) -> float:
        """The alarm threshold in natural-log units."""
        return math.log(self.threshold)

    @property
    def statistic(self) -> float:
        """The detector's statistic on the e-value scale (may overflow to inf)."""
        return math.exp(self.log_stat) if self.log_stat < 700 else math.inf

    @property
    def alarm(self) -> bool:
        """True once the statistic has reached the threshold (until `reset`)."""
        return self.alarmed_at is not None

    def update(self, e_value: float) -> bool:
        """Feed one run's e-value; return whether the detector is in alarm afterwards."""
        if e_value < 0 or math.isnan(e_value):
            raise ValueError(f"an e-value is non-negative, got {e_value!r}")
        log_e = math.log(e_value) if e_value > 0 else -math.inf
        if self.kind == "cusum":
            prior = max(self.log_stat, 0.0)
        else:
            prior = float(np.logaddexp(self.log_stat, 0.0))
        self.log_stat = log_e + prior
        self.runs += 1
        self.history.append(self.log_stat)
        if self.alarmed_at is None and self.log_stat >= self.log_threshold:
            self.alarmed_at = self.runs
        return self.alarm

    def extend(self, e_values: Iterable[float]) -> bool:
        """Feed several runs' e-values in order; return the alarm state after the last."""
        for e in e_values:
            self.update(e)
        return self.alarm

    def update_log(self, log_e: float) -> bool:
        """Feed one run's e-value given as its natural log (``-inf`` for 0)."""
        if math.isnan(log_e):
            raise ValueError("an e-value's log cannot be NaN")
        return self.update(math.exp(log_e) if log_e < 700 else math.inf)

    def to_state(self) -> dict[str, float | int | str | None]:
        """The detector's state as JSON-ready values (history excluded): what the service
        stores after each run so re-evaluation continues from it instead of recounting."""
        return {
            "kind": self.kind,
            "threshold": self.threshold,
            "log_stat": None if self.log_stat == -math.inf else self.log_stat,
            "runs": self.runs,
            "alarmed_at": self.alarmed_at,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], threshold: float | None = None) -> EDetector:
        """Rebuild a detector from `to_state` (optionally under a new threshold)."""
        log_stat = state.get("log_stat")
        det = cls(
            threshold=float(threshold if threshold is not None else state["threshold"]),
            kind=state.get("kind", "cusum"),
            log_stat=-math.inf if log_stat is None else float(log_stat),
            runs=int(state.get("runs", 0)),
        )
        alarmed = state.get("alarmed_at")
        if alarmed is not None:
            det.alarmed_at = int(alarmed)
        elif det.log_stat >= det.log_threshold:
            det.alarmed_at = det.runs
        return det

    def reset(self) -> None:
        """Forget all evidence (after a re-pin or an acknowledged change)."""
        self.log_stat = -math.inf
        self.runs = 0
        self.alarmed_at = None
        self.history.clear()


@dataclass
class DetectorBank:
    """Several e-detectors on parallel e-value streams (one per alternative), as one alarm.

    Each member gets the threshold ``threshold * len(names)``: the expected number of
    false alarms of the bank is at most the sum of its members', so the bank keeps the
    budget `threshold` was derived from (a union bound). New members are `kind`
    detectors (Shiryaev–Roberts: the same bound as the e-CUSUM, never later; module
    docs); members restored by `from_state` keep the kind they were stored with.
    """

    threshold: float
    names: tuple[str, ...]
    members: dict[str, EDetector] = field(default_factory=dict)
    kind: DetectorKind = "shiryaev_roberts"

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a detector bank needs at least one member")
        for name in self.names:
            self.members.setdefault(name, EDetector(self.member_threshold, kind=self.kind))

    @property
    def member_threshold(self) -> float:
        """Each member's threshold: the bank's times the number of members."""
        return self.threshold * len(self.names)

    @property
    def alarm(self) -> bool:
        """True once any member has alarmed."""
        return any(d.alarm for d in self.members.values())

    @property
    def log_stat(self) -> float:
        """The bank's statistic on the bank-threshold scale: max member log statistic
        minus log(number of members)."""
        return max(d.log_stat for d in self.members.values()) - math.log(len(self.names))

    @property
    def alarmed_at(self) -> int | None:
        """The first run at which a member alarmed."""
        runs = [d.alarmed_at for d in self.members.values() if d.alarmed_at is not None]
        return min(runs) if runs else None

    def update_log(self, log_e: dict[str, float]) -> bool:
        """Feed one run: the log e-value of every member's stream."""
        for name in self.names:
            self.members[name].update_log(log_e[name])
        return self.alarm

    def to_state(self) -> dict[str, Any]:
        """JSON-ready state of every member (see `EDetector.to_state`)."""
        return {name: d.to_state() for name, d in self.members.items()}

    @classmethod
    def from_state(
        cls, state: dict[str, Any], threshold: float, names: tuple[str, ...]
    ) -> DetectorBank:
        """Rebuild a bank from `to_state` under `threshold` (members not in it start fresh)."""
        bank = cls(threshold, names)
        for name in names:
            if name in state:
                bank.members[name] = EDetector.from_state(state[name], bank.member_threshold)
        return bank


def count_alarms(e_values: Sequence[float], threshold: float, kind: DetectorKind = "cusum") -> int:
    """How often a detector that restarts after each alarm alarms on `e_values`.

    This is how the service spends its false-alarm budget (an alarm is acted on, then the
    evidence starts again), and what calibration benchmarks count under a null.
    """
    det = EDetector(threshold=threshold, kind=kind)
    alarms = 0
    for e in e_values:
        if det.update(e):
            alarms += 1
            det.reset()
    return alarms


def stationary_bootstrap(
    n_source: int, n_out: int, mean_block: float, rng: np.random.Generator
) -> np.ndarray:
    """Indices of a stationary-bootstrap resample (Politis & Romano 1994).

    Blocks start at uniform positions of the source series, have geometric lengths with
    mean `mean_block`, and wrap around; the resample keeps the source's short-range
    dependence (a loaded hour stays loaded for a few runs), which is what a detector's
    threshold must be calibrated against.
    """
    if n_source < 1 or n_out < 1:
        raise ValueError("need a non-empty source and output")
    if mean_block < 1:
        raise ValueError("mean block length must be at least 1")
    p_new = 1.0 / mean_block
    out = np.empty(n_out, dtype=np.int64)
    pos = int(rng.integers(n_source))
    starts = rng.random(n_out) < p_new
    jumps = rng.integers(n_source, size=n_out)
    for i in range(n_out):
        if i > 0:
            pos = int(jumps[i]) if starts[i] else (pos + 1) % n_source
        out[i] = pos
    return out
