"""Run-level change detection: one-sided CUSUM calibrated by a block bootstrap.

Drift detectors see one value per run and metric (`aione_probe.analysis.drift`), turned
into a *residual* against the pinned baseline, oriented so that positive is worse. The
CUSUM statistic

    S_t = max(0, S_{t-1} + min(r_t - k, c))

accumulates the part of each residual above the reference value ``k`` (half the smallest
change worth a page, and never less than one probe's weight, so one prompt changing its
answer cannot accumulate evidence). It alarms at ``S_t >= h`` and clears when ``S_t``
returns to 0: the residuals have been back at baseline long enough to use up the evidence,
so one excursion pages once. One run adds at most ``c`` (half the threshold or less): a
single bad run never pages on its own.

The threshold ``h`` is not derived from an assumed distribution. `calibrate` resamples the
baseline's own residuals with a stationary bootstrap (blocks keep the run-to-run
correlation of a loaded gateway, a slow weekly cycle, a prompt stuck in a failing state),
runs the detector over one horizon (a quarter) and keeps the distribution of the largest
statistic. A week of baseline runs cannot show a quarter's worst stretch, so
the bootstrap also measures the residuals' long-run spread (blocks keep the correlation),
and Siegmund's approximation of the CUSUM's average run length turns it into a threshold
for the budget. `Calibration.threshold` takes the larger of that and the direct bootstrap
quantile of the horizon maximum (alarms of a rare-event detector arrive roughly as a
Poisson process, so ``P(any alarm) = 1 - exp(-budget)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

#: The threshold is never below `MIN_THRESHOLD_K` reference values: a baseline with no
#: spread (fixed prompts answered identically every run) would otherwise alarm at once.
MIN_THRESHOLD_K = 1.5
#: Bootstrap blocks are at least a day of hourly runs long (or a quarter of the baseline):
#: a short baseline underestimates the autocorrelation of a slowly varying load.
MIN_BLOCK_RUNS = 6
HOURS = 24
#: Confidence level of the long-run spread's upper bound.
LONG_RUN_LEVEL = 0.75
#: Prior weight (in runs) of the overall level when estimating an hour-of-day level.
HOUR_SHRINK_RUNS = 3.0


def cusum_step(s: Any, residual: Any, k: float, cap: float) -> Any:
    """One CUSUM update (scalars or arrays): ``max(0, s + min(r - k, cap))``."""
    return np.maximum(0.0, s + np.minimum(residual - k, cap))


def stationary_bootstrap_paths(
    n_source: int, n_out: int, mean_block: float, reps: int, rng: np.random.Generator
) -> np.ndarray:
    """`reps` stationary-bootstrap index paths of length `n_out`, vectorised.

    The same resampling scheme as `aione_probe.analysis.sequential.stationary_bootstrap`
    (uniform block starts, geometric block lengths with mean `mean_block`, wrap-around),
    drawn for many replicates at once; calibration needs hundreds of quarter-long paths.
    """
    if n_source < 1 or n_out < 1 or reps < 1:
        raise ValueError("need a non-empty source, output and at least one replicate")
    if mean_block < 1:
        raise ValueError("mean block length must be at least 1")
    starts = rng.random((reps, n_out)) < 1.0 / mean_block
    starts[:, 0] = True
    jumps = rng.integers(n_source, size=(reps, n_out))
    steps = np.arange(n_out)
    # For each position: where its block started, and the source index drawn there.
    block_start = np.maximum.accumulate(np.where(starts, steps, 0), axis=1)
    origin = np.take_along_axis(jumps, block_start, axis=1)
    return (origin + steps - block_start) % n_source


def mean_block_length(x: np.ndarray, max_lag: int | None = None) -> float:
    """A block length for the bootstrap of `x`: twice its integrated autocorrelation time.

    Autocorrelations are summed up to the first lag where they fall below 0.05 (or
    `max_lag`, default a quarter of the series); the result is clipped to [1, n / 4].
    """
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 8 or float(np.std(x)) == 0.0:
        return 1.0
    d = x - x.mean()
    var = float(d @ d) / n
    tau = 1.0
    for lag in range(1, max_lag or n // 4):
        rho = float(d[:-lag] @ d[lag:]) / (n * var)
        if rho < 0.05:
            break
        tau += 2.0 * rho
    return float(min(max(2.0 * tau, 1.0), n / 4))


@dataclass
class Calibration:
    """One detector's null, bootstrapped from its baseline: alarm rate against threshold.

    Attributes:
        k: the reference value the detector runs with.
        horizon_runs: runs per horizon (a quarter at the baseline's run spacing).
        mean_block: bootstrap block length used.
        long_run_sd: an upper confidence bound of the residuals' long-run standard
            deviation (the spread of a sum of many consecutive residuals, per run), from
            the block bootstrap.
        maxima: sorted largest statistic of each bootstrap horizon.
    """

    k: float
    horizon_runs: int
    mean_block: float
    long_run_sd: float = 0.0
    maxima: list[float] = field(default_factory=list)

    def threshold(self, false_alarms: float) -> float:
        """The threshold that spends `false_alarms` expected alarms per horizon.

        The larger of: Siegmund's approximation of the CUSUM's average run length with
        the bootstrapped long-run spread (a week of baseline runs cannot show a
        quarter's worst stretch, the law can), the direct bootstrap quantile of the
        horizon maximum, and `MIN_THRESHOLD_K` × k.
        """
        if false_alarms <= 0:
            raise ValueError("the false-alarm budget must be positive")
        candidates = [MIN_THRESHOLD_K * self.k]
        if self.maxima:
            p_any = 1.0 - math.exp(-false_alarms)
            q = float(np.quantile(np.asarray(self.maxima), 1.0 - p_any, method="higher"))
            candidates.append(q * (1.0 + 1e-9) + 1e-12)
        if self.long_run_sd > 0:
            arl = self.horizon_runs / false_alarms
            candidates.append(siegmund_threshold(self.k, self.long_run_sd, arl))
        return max(candidates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored inside a drift baseline)."""
        return {
            "k": self.k,
            "horizon_runs": self.horizon_runs,
            "mean_block": self.mean_block,
            "long_run_sd": self.long_run_sd,
            "maxima": [round(m, 6) for m in self.maxima],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of `to_dict`."""
        return cls(
            k=float(data["k"]),
            horizon_runs=int(data["horizon_runs"]),
            mean_block=float(data["mean_block"]),
            long_run_sd=float(data.get("long_run_sd", 0.0)),
            maxima=[float(m) for m in data.get("maxima", [])],
        )


def hour_levels(x: np.ndarray, hours: np.ndarray, shrink: float = HOUR_SHRINK_RUNS) -> np.ndarray:
    """Hour-of-day levels of each row of `x`: the hour's mean shrunk towards the row's mean.

    An hour with ``n`` runs gets weight ``n / (n + shrink)``, so a thin hour (a schedule
    that rarely lands on it) stays near the overall level.

    Args:
        x: shape (rows, runs) or (runs,), finite.
        hours: UTC hour (0-23) of each run.

    Returns:
        shape (rows, 24) (or (24,) for one-dimensional `x`).
    """
    one = np.ndim(x) == 1
    x2 = np.atleast_2d(np.asarray(x, dtype=float))
    onehot = np.asarray(hours)[:, None] == np.arange(HOURS)[None, :]
    n = onehot.sum(axis=0)
    overall = x2.mean(axis=1, keepdims=True)
    means = (x2 @ onehot) / np.maximum(n, 1)
    w = n / (n + shrink)
    levels = overall + w * (means - overall)
    return levels[0] if one else levels


def calibrate(
    residuals: np.ndarray,
    *,
    k: float,
    horizon_runs: int,
    rng: np.random.Generator,
    reps: int = 500,
) -> Calibration:
    """Bootstrap the detector's null from the baseline's own residuals.

    Each replicate resamples `horizon_runs` residuals in blocks of mean length
    `mean_block_length` (at least a day of runs, or a quarter of the baseline) and runs the
    detector over them without the per-run cap (``h`` is what is being found): uncapped
    maxima bound the capped detector's from above, so the threshold is conservative. The
    residuals should be out-of-sample (`aione_probe.analysis.drift` cross-validates
    them), so that the error of the pinned levels is part of the null.

    Args:
        residuals: baseline residuals, oriented so that positive is worse, in run order
            (NaN entries are dropped).
        k: the detector's reference value.
        horizon_runs: runs per false-alarm horizon.
        rng: random source.
        reps: bootstrap replicates (each a full horizon).
    """
    r = np.asarray(residuals, dtype=float)
    r = r[np.isfinite(r)]
    n = len(r)
    if n < 2:
        raise ValueError("calibration needs at least two baseline residuals")
    block = max(mean_block_length(r), min(MIN_BLOCK_RUNS, n / 4))
    future = r[stationary_bootstrap_paths(n, horizon_runs, block, reps, rng)]
    s = np.zeros(reps)
    best = np.zeros(reps)
    for t in range(horizon_runs):
        s = np.maximum(0.0, s + future[:, t] - k)
        np.maximum(best, s, out=best)
    return Calibration(
        k=k,
        horizon_runs=horizon_runs,
        mean_block=block,
        long_run_sd=long_run_sd(r, block, rng, reps),
        maxima=sorted(best),
    )


def long_run_sd(r: np.ndarray, block: float, rng: np.random.Generator, reps: int) -> float:
    """An upper confidence bound (`LONG_RUN_LEVEL`) of the long-run standard deviation of
    `r`, per run.

    The block bootstrap's spread of the mean of ``n`` resampled runs, times sqrt(n): the
    standard deviation a CUSUM of correlated residuals effectively integrates. Its
    sampling error is large for a short baseline (about ``n / block`` independent
    blocks), so the bound divides the variance by the chi-square quantile of that many
    degrees of freedom at ``1 - LONG_RUN_LEVEL``.
    """
    n = len(r)
    means = r[stationary_bootstrap_paths(n, n, block, reps, rng)].mean(axis=1)
    var = float(np.var(means)) * n
    df = max(n / block - 1.0, 1.0)
    return math.sqrt(var * df / float(stats.chi2.ppf(1.0 - LONG_RUN_LEVEL, df)))


def siegmund_threshold(k: float, sd: float, arl: float) -> float:
    """The CUSUM threshold with average run length `arl` under the null.

    Siegmund's approximation for increments of mean ``-k`` and standard deviation `sd`:
    ``ARL = (exp(2 D b) - 2 D b - 1) / (2 D^2)`` with ``D = k / sd`` and
    ``b = h / sd + 1.166``, solved for ``h``.
    """
    if k <= 0 or sd <= 0 or arl <= 1:
        raise ValueError("need k > 0, sd > 0 and arl > 1")
    d = k / sd

    def run_length(b: float) -> float:
        x = 2 * d * b
        return (math.expm1(x) - x) / (2 * d * d) if x < 700 else math.inf

    lo, hi = 0.0, 1.0
    while run_length(hi) < arl:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if run_length(mid) < arl else (lo, mid)
    return max(0.0, (hi - 1.166) * sd)


def detect(residuals: np.ndarray, k: Any, h: Any, cap: Any) -> tuple[np.ndarray, np.ndarray]:
    """Run the alarm-and-clear detector over rows of residuals (benchmarks, replays).

    The same recursion as `Cusum.update`, vectorised over rows.

    Args:
        residuals: shape (rows, runs); NaN is a run the detector does not see.
        k: reference value (a number, or one per row).
        h: threshold (a number, or one per row).
        cap: largest increment of one run (a number, or one per row).

    Returns:
        (alarms per row, alarm state per row and run).
    """
    r = np.atleast_2d(np.asarray(residuals, dtype=float))
    rows, runs = r.shape
    k, h, cap = (np.broadcast_to(np.asarray(v, dtype=float), (rows,)) for v in (k, h, cap))
    s = np.zeros(rows)
    alarm = np.zeros(rows, dtype=bool)
    count = np.zeros(rows, dtype=np.int64)
    state = np.zeros((rows, runs), dtype=bool)
    for t in range(runs):
        x = r[:, t]
        seen = np.isfinite(x)
        s = np.where(seen, cusum_step(s, np.where(seen, x, 0.0), k, cap), s)
        new = ~alarm & (s >= h)
        count += new
        alarm = (alarm | new) & ~(seen & (s <= 0.0))
        state[:, t] = alarm
    return count, state


@dataclass
class Cusum:
    """One detector's state between analysis passes (stored in the verdict's details).

    Attributes:
        k: reference value; h: threshold; cap: largest increment of one run (all in the
            metric's residual units).
        s: current statistic.
        alarm: in alarm since `alarm_since` (ISO time of the run that tripped it).
        alarms: alarms since the baseline was pinned.
        runs: runs fed since the baseline was pinned.
    """

    k: float
    h: float
    cap: float
    s: float = 0.0
    alarm: bool = False
    alarm_since: str | None = None
    alarms: int = 0
    runs: int = 0

    def update(self, residual: float, at: str) -> bool:
        """Feed one run's residual (positive = worse); return whether in alarm afterwards."""
        if not math.isfinite(residual):
            residual = math.copysign(1e300, residual)
        self.s = float(cusum_step(self.s, residual, self.k, self.cap))
        self.runs += 1
        if not self.alarm and self.s >= self.h:
            self.alarm, self.alarm_since = True, at
            self.alarms += 1
        elif self.alarm and self.s <= 0.0:
            self.alarm, self.alarm_since = False, None
        return self.alarm

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cusum:
        """Inverse of `to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
