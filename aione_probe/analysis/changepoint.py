"""Run-level change detection: one-sided CUSUM calibrated by a block bootstrap.

Drift detectors see one value per run and metric (`aione_probe.analysis.drift`), turned
into a *residual* against the pinned baseline, oriented so that positive is worse. The
CUSUM statistic

    S_t = max(0, S_{t-1} + min(r_t - k, c))

accumulates the part of each residual above the reference value ``k`` (half the smallest
change worth a page, and never less than one probe's weight, so one prompt changing its
answer cannot accumulate evidence). It alarms at ``S_t >= h`` and clears when ``S_t``
returns to 0: the residuals have been back at baseline long enough to use up the evidence,
so one excursion pages once. One run adds at most ``c`` (below the threshold): a single
bad run never pages on its own.

**Whitened detectors.** Latency carries a run-level load that persists from run to run (a
loaded gateway is slow for hours), seen through the noise of estimating one run's latency
from a few dozen requests. A plain CUSUM must then be calibrated on the long-run spread,
and a step is slow to find. A whitened detector feeds on one-step prediction errors
instead: the residual is modelled as an AR(1) load plus independent per-run noise, i.e.
an ARMA(1,1) ``r_t - phi r_{t-1} = e_t - theta e_{t-1}``, fitted to the baseline's
residuals (`fit_predictor`), whose steady-state Kalman predictor is

    pred_{t+1} = phi pred_t + (phi - theta) e_t,    e_t = r_t - pred_t.

(``theta = 0`` is a pure AR(1) load, predicted by ``phi r_t``; ``theta = phi`` is white
noise, predicted by 0.) A step of size ``d`` shows in full in the first error and tends to
``w d`` afterwards, ``w = (1 - phi) / (1 - theta)`` (`rest_weight`: the predictor absorbs
the rest; the measurement noise makes it absorb less than a pure AR(1) would). The
statistic is the likelihood-ratio CUSUM of that signature (``k = d / 2``), in residual
units:

    S_t = max(0, min(e_t - k, c), S_{t-1} + min(w (e_t - w k), c))

(the first term: a step starting at this run; the second: one that started earlier). With
``w = 1`` it is the plain CUSUM above. A missing run advances the predictor (``phi`` per
missed slot) but not the statistic.

The threshold ``h`` is not derived from an assumed distribution. `calibrate` resamples the
baseline's own residuals (for a whitened detector: its prediction errors) with a stationary
bootstrap (blocks keep the run-to-run correlation of a loaded gateway, a slow weekly cycle,
a prompt stuck in a failing state), runs the detector over one horizon (a quarter) and
keeps the distribution of the largest statistic. A fortnight of baseline runs cannot show a
quarter's worst stretch, so the bootstrap also measures the long-run spread (blocks keep
the correlation), and Siegmund's approximation of the CUSUM's average run length turns it
into a threshold for the budget; a whitened detector also runs over Gaussian errors of the
baseline's spread (an upper confidence bound) and lag-1 correlation, because a bootstrap
cannot draw a single error larger than the largest the baseline saw.
`Calibration.threshold` takes the largest of these (alarms of a rare-event detector arrive
roughly as a Poisson process, so ``P(any alarm) = 1 - exp(-budget)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import signal, stats

#: The threshold is never below `MIN_THRESHOLD_K` reference values: a baseline with no
#: spread (fixed prompts answered identically every run) would otherwise alarm at once.
MIN_THRESHOLD_K = 1.5
#: The same floor for a whitened detector: a step of the smallest change worth a page adds
#: about ``k`` in its first run, so a baseline with no spread pages on the second run.
WHITENED_MIN_THRESHOLD_K = 1.0
#: Largest AR(1) coefficient a whitened detector uses (a random walk cannot be whitened
#: by a stationary model; the bootstrap calibrates what is left).
MAX_PHI = 0.9
#: The predictor uses the last prediction error clipped to this many baseline standard
#: deviations of the errors, so one wild run (a burst of timeouts) does not hide the next
#: from the detector.
PREDICTOR_CLIP_SD = 4.0
#: Grid step of `fit_predictor` (the coefficients' sampling error over a fortnight of
#: hourly runs is several times larger).
FIT_STEP = 0.025
#: Bootstrap blocks are at least a day of hourly runs long (or a quarter of the baseline):
#: a short baseline underestimates the autocorrelation of a slowly varying load.
MIN_BLOCK_RUNS = 6
HOURS = 24
#: Confidence level of the long-run spread's upper bound.
LONG_RUN_LEVEL = 0.75
#: Prior weight (in runs) of the overall level when estimating an hour-of-day level.
HOUR_SHRINK_RUNS = 3.0
DAYS = 7
#: Prior weight (in runs) of "no weekday effect" when estimating a day-of-week offset: a
#: day of runs, because under a persistent load a day's runs are far from independent.
WEEKDAY_SHRINK_RUNS = 24.0


def cusum_step(s: Any, error: Any, k: Any, cap: Any, rest: Any = 1.0) -> Any:
    """One detector update (scalars or arrays) with prediction error `error`.

    ``max(0, min(e - k, cap), s + min(w (e - w k), cap))`` with `rest` weight ``w``
    (`rest_weight`); with ``w = 1`` (and ``s >= 0``) the plain CUSUM
    ``max(0, s + min(e - k, cap))``.
    """
    onset = np.minimum(error - k, cap)
    later = s + np.minimum(rest * (error - rest * k), cap)
    return np.maximum(0.0, np.maximum(onset, later))


def rest_weight(phi: Any, theta: Any = 0.0) -> Any:
    """The share of a step left in the prediction errors after its first run:
    ``(1 - phi) / (1 - theta)`` (1 for a plain CUSUM, ``phi = theta = 0``)."""
    return (1.0 - phi) / (1.0 - theta)


def predict_next(pred: Any, error: Any, phi: Any, theta: Any, clip: Any = math.inf) -> Any:
    """The predictor's next value: ``phi pred + (phi - theta) clip(error)``."""
    return phi * pred + (phi - theta) * np.clip(error, -clip, clip)


def fit_predictor(r: np.ndarray) -> tuple[float, float]:
    """``(phi, theta)`` of the ARMA(1,1) that best predicts `r` one run ahead.

    Least squares of the one-step prediction errors (conditional sum of squares) over a
    grid ``0 <= theta <= phi <= MAX_PHI`` of step `FIT_STEP`; non-finite runs advance the
    predictor without an error, the first run is burn-in. Returns ``(0, 0)`` (no
    whitening) for white noise and for fewer than 8 finite runs; ``phi = theta`` is
    reported as ``(0, 0)``, the same predictor.
    """
    r = np.asarray(r, dtype=float)
    if np.isfinite(r).sum() < 8:
        return 0.0, 0.0
    grid = np.arange(0.0, MAX_PHI + 1e-9, FIT_STEP)
    phi, theta = (a.ravel() for a in np.meshgrid(grid, grid, indexing="ij"))
    keep = theta <= phi + 1e-12
    phi, theta = phi[keep], theta[keep]
    sse = np.square(_errors(r, phi, theta)[:, 1:]).sum(axis=1)
    best = int(np.argmin(sse))  # the grid starts at (0, 0): white noise wins ties
    if phi[best] - theta[best] < 1e-9:
        return 0.0, 0.0
    return float(phi[best]), float(theta[best])


def _errors(r: np.ndarray, phi: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Unclipped one-step prediction errors of the finite runs of `r`, one row per
    ``(phi, theta)`` pair; a non-finite run advances the predictor by ``phi``."""
    seen = np.isfinite(r)
    out = np.empty((len(phi), int(seen.sum())))
    pred = np.zeros(len(phi))
    col = 0
    for x, ok in zip(r, seen, strict=True):
        if not ok:
            pred = phi * pred
            continue
        out[:, col] = x - pred
        pred = predict_next(pred, out[:, col], phi, theta)
        col += 1
    return out


def lag1_correlation(r: np.ndarray) -> float:
    """Lag-1 autocorrelation of `r` over consecutive finite pairs (0 when there are
    fewer than 8 pairs or no spread)."""
    r = np.asarray(r, dtype=float)
    pairs = np.isfinite(r[1:]) & np.isfinite(r[:-1])
    if pairs.sum() < 8:
        return 0.0
    mean = float(np.mean(r[np.isfinite(r)]))
    a, b = r[:-1][pairs] - mean, r[1:][pairs] - mean
    den = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b / den) if den > 0 else 0.0


def prediction_errors(r: np.ndarray, phi: float, theta: float = 0.0) -> np.ndarray:
    """One-step prediction errors of the finite runs of `r` (`predict_next`, unclipped;
    the first run is burn-in), or all finite residuals when ``phi = 0``."""
    r = np.asarray(r, dtype=float)
    if phi == 0:
        return r[np.isfinite(r)]
    return _errors(r, np.array([phi]), np.array([theta]))[0, 1:]


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
        long_run_sd: an upper confidence bound of the long-run standard deviation of
            the detector's inputs (residuals, or prediction errors when whitened: the
            spread of a sum of many consecutive ones, per run), from the block bootstrap.
        maxima: sorted largest statistic of each bootstrap horizon.
        phi: AR coefficient of a whitened detector (0: plain CUSUM).
        theta: its MA coefficient (0: a pure AR(1); `fit_predictor`).
        clip: the predictor clips the last prediction error to +-clip.
        gaussian_maxima: sorted largest statistic of each horizon of Gaussian errors
            (whitened detectors only).
        whitened: a whitened detector (its `phi` may still come out 0).
    """

    k: float
    horizon_runs: int
    mean_block: float
    long_run_sd: float = 0.0
    maxima: list[float] = field(default_factory=list)
    phi: float = 0.0
    theta: float = 0.0
    clip: float = math.inf
    gaussian_maxima: list[float] = field(default_factory=list)
    whitened: bool = False

    def threshold(self, false_alarms: float) -> float:
        """The threshold that spends `false_alarms` expected alarms per horizon.

        The largest of: Siegmund's approximation of the CUSUM's average run length with
        the bootstrapped long-run spread (a fortnight of baseline runs cannot show a
        quarter's worst stretch, the law can; for a whitened detector, of the part that
        accumulates after a step's first run), the direct bootstrap quantile of the
        horizon maximum, the same quantile over Gaussian errors (whitened detectors), and
        a floor of `MIN_THRESHOLD_K` × k (`WHITENED_MIN_THRESHOLD_K` × k when whitened).
        """
        if false_alarms <= 0:
            raise ValueError("the false-alarm budget must be positive")
        floor = WHITENED_MIN_THRESHOLD_K if self.whitened else MIN_THRESHOLD_K
        candidates = [floor * self.k]
        p_any = 1.0 - math.exp(-false_alarms)
        for maxima in (self.maxima, self.gaussian_maxima):
            if maxima:
                q = float(np.quantile(np.asarray(maxima), 1.0 - p_any, method="higher"))
                candidates.append(q * (1.0 + 1e-9) + 1e-12)
        if self.long_run_sd > 0:
            arl = self.horizon_runs / false_alarms
            rest = rest_weight(self.phi, self.theta)
            candidates.append(
                siegmund_threshold(rest * rest * self.k, rest * self.long_run_sd, arl)
            )
        return max(candidates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored inside a drift baseline)."""
        return {
            "k": self.k,
            "horizon_runs": self.horizon_runs,
            "mean_block": self.mean_block,
            "long_run_sd": self.long_run_sd,
            "maxima": [round(m, 6) for m in self.maxima],
            "phi": self.phi,
            "theta": self.theta,
            "clip": self.clip if math.isfinite(self.clip) else None,
            "gaussian_maxima": [round(m, 6) for m in self.gaussian_maxima],
            "whitened": self.whitened,
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
            phi=float(data.get("phi", 0.0)),
            theta=float(data.get("theta", 0.0)),
            clip=math.inf if data.get("clip") is None else float(data["clip"]),
            gaussian_maxima=[float(m) for m in data.get("gaussian_maxima", [])],
            whitened=bool(data.get("whitened", False)),
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


def weekday_offsets(x: np.ndarray, weekdays: np.ndarray) -> np.ndarray:
    """Day-of-week offsets (Monday = 0) of the one-dimensional `x`, the remainder after
    the hour-of-day levels: each weekday's mean, shrunk towards 0 with weight
    ``n / (n + WEEKDAY_SHRINK_RUNS)``, then centred so the offsets average to 0 over the
    runs.
    """
    x = np.asarray(x, dtype=float)
    onehot = np.asarray(weekdays)[:, None] == np.arange(DAYS)[None, :]
    n = onehot.sum(axis=0)
    means = (x @ onehot) / np.maximum(n, 1)
    offsets = means * n / (n + WEEKDAY_SHRINK_RUNS)
    return offsets - float(offsets @ n) / max(int(n.sum()), 1)


def calibrate(
    residuals: np.ndarray,
    *,
    k: float,
    horizon_runs: int,
    rng: np.random.Generator,
    reps: int = 500,
    phi: float | None = None,
    theta: float = 0.0,
) -> Calibration:
    """Bootstrap the detector's null from the baseline's own residuals.

    The detector's inputs (the residuals, or for ``phi > 0`` their one-step prediction
    errors) are resampled into `reps` horizons of `horizon_runs` in blocks of mean length
    `mean_block_length` (at least a day of runs, or a quarter of the baseline), and the
    detector runs over them without the per-run cap (``h`` is what is being found):
    uncapped maxima bound the capped detector's from above, so the threshold is
    conservative. The residuals should be out-of-sample (`aione_probe.analysis.drift`
    cross-validates them), so that the error of the pinned levels is part of the null.

    Args:
        residuals: baseline residuals, oriented so that positive is worse, in run order
            (NaN entries are dropped).
        k: the detector's reference value.
        horizon_runs: runs per false-alarm horizon.
        rng: random source.
        reps: bootstrap replicates (each a full horizon).
        phi: AR coefficient of a whitened detector (`fit_predictor`, possibly 0); None
            for a plain CUSUM.
        theta: the whitened detector's MA coefficient (`fit_predictor`).
    """
    whitened = phi is not None
    phi = phi or 0.0
    theta = theta if phi > 0 else 0.0
    rest = rest_weight(phi, theta)
    r = np.asarray(residuals, dtype=float)
    e = prediction_errors(r, phi, theta)
    n = len(e)
    if n < 2:
        raise ValueError("calibration needs at least two baseline residuals")
    block = max(mean_block_length(e), min(MIN_BLOCK_RUNS, n / 4))
    future = e[stationary_bootstrap_paths(n, horizon_runs, block, reps, rng)]
    lr_sd = long_run_sd(e, block, rng, reps)
    gaussian: list[float] = []
    if whitened:
        errors = _gaussian_errors(e, block, horizon_runs, reps, rng)
        gaussian = sorted(_horizon_maxima(errors, k, rest))
    return Calibration(
        k=k,
        horizon_runs=horizon_runs,
        mean_block=block,
        long_run_sd=lr_sd,
        maxima=sorted(_horizon_maxima(future, k, rest)),
        phi=phi,
        theta=theta,
        clip=PREDICTOR_CLIP_SD * float(np.std(e)) if phi > 0 else math.inf,
        gaussian_maxima=gaussian,
        whitened=whitened,
    )


def _horizon_maxima(errors: np.ndarray, k: float, rest: float) -> np.ndarray:
    """Largest uncapped statistic of each row of prediction errors, without a loop.

    Unrolled, ``S_t = max(b_t, S_{t-1} + a_t)`` with ``b = max(0, e - k)`` and
    ``a = w (e - w k)`` (``w`` = `rest`) is ``A_t + max_{j <= t} (b_j - A_j)`` where ``A``
    is the running sum of ``a``.
    """
    onset = np.maximum(errors - k, 0.0)
    total = np.cumsum(rest * (errors - rest * k), axis=1)
    s = total + np.maximum.accumulate(onset - total, axis=1)
    return np.maximum(s.max(axis=1), 0.0)


def _gaussian_errors(
    e: np.ndarray, block: float, runs: int, reps: int, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian AR(1) prediction errors with the spread of `e` (the `LONG_RUN_LEVEL`
    upper confidence bound, about ``n / block`` independent blocks) and its lag-1
    correlation."""
    df = max(len(e) / block - 1.0, 1.0)
    sd = float(np.std(e)) * math.sqrt(df / float(stats.chi2.ppf(1.0 - LONG_RUN_LEVEL, df)))
    rho = float(np.clip(lag1_correlation(e), -MAX_PHI, MAX_PHI))
    z = rng.standard_normal((reps, runs))
    z[:, 1:] *= math.sqrt(1.0 - rho * rho)  # stationary from the first run
    return sd * signal.lfilter([1.0], [1.0, -rho], z, axis=1)


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


def detect(
    residuals: np.ndarray,
    k: Any,
    h: Any,
    cap: Any,
    phi: Any = 0.0,
    clip: Any = math.inf,
    theta: Any = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the alarm-and-clear detector over rows of residuals (benchmarks, replays).

    The same recursion as `Cusum.update`, vectorised over rows.

    Args:
        residuals: shape (rows, runs); NaN is a run the detector does not see (the
            predictor still advances by one slot).
        k: reference value (a number, or one per row).
        h: threshold (a number, or one per row).
        cap: largest increment of one run (a number, or one per row).
        phi: AR coefficient (a number, or one per row; 0 for a plain CUSUM).
        clip: the predictor's clip of the last error (a number, or one per row).
        theta: MA coefficient (a number, or one per row).

    Returns:
        (alarms per row, alarm state per row and run).
    """
    r = np.atleast_2d(np.asarray(residuals, dtype=float))
    rows, runs = r.shape
    k, h, cap, phi, clip, theta = (
        np.broadcast_to(np.asarray(v, dtype=float), (rows,)) for v in (k, h, cap, phi, clip, theta)
    )
    rest = rest_weight(phi, theta)
    s = np.zeros(rows)
    pred = np.zeros(rows)
    alarm = np.zeros(rows, dtype=bool)
    count = np.zeros(rows, dtype=np.int64)
    state = np.zeros((rows, runs), dtype=bool)
    for t in range(runs):
        x = r[:, t]
        seen = ~np.isnan(x)
        x = np.where(seen, np.clip(x, -1e300, 1e300), 0.0)  # as `Cusum.update` does
        e = x - pred
        s = np.where(seen, cusum_step(s, e, k, cap, rest), s)
        pred = np.where(seen, predict_next(pred, e, phi, theta, clip), phi * pred)
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
        phi, theta: the predictor's coefficients (``phi = 0``: a plain CUSUM); clip: its
            clip of the last prediction error.
        s: current statistic.
        pred: the prediction of the next run's residual (`predict_next`).
        alarm: in alarm since `alarm_since` (ISO time of the run that tripped it).
        alarms: alarms since the baseline was pinned.
        runs: runs fed since the baseline was pinned.
    """

    k: float
    h: float
    cap: float
    phi: float = 0.0
    clip: float | None = None
    theta: float = 0.0
    s: float = 0.0
    pred: float = 0.0
    alarm: bool = False
    alarm_since: str | None = None
    alarms: int = 0
    runs: int = 0

    def skip(self, slots: int = 1) -> None:
        """Runs the detector did not see: the predictor advances, the statistic stays."""
        self.pred *= self.phi ** max(slots, 0)

    def update(self, residual: float, at: str) -> bool:
        """Feed one run's residual (positive = worse); return whether in alarm afterwards."""
        if not math.isfinite(residual):
            residual = math.copysign(1e300, residual)
        error = residual - self.pred
        rest = rest_weight(self.phi, self.theta)
        self.s = float(cusum_step(self.s, error, self.k, self.cap, rest))
        clip = math.inf if self.clip is None else self.clip
        self.pred = float(predict_next(self.pred, error, self.phi, self.theta, clip))
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
