"""Statistics of one per-chunk series (pressure or entropy): half-life, exponential fit, slope, cliffs,
collapse and convergence. Pure functions of a list of floats, tested on series with known answers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def half_life_chunk(series: list[float]) -> int | None:
    """The first chunk whose value is at most half the first chunk's; None if never (not reached)."""
    first = series[0]
    for chunk, value in enumerate(series[1:], start=1):
        if value <= 0.5 * first:
            return chunk
    return None


@dataclass
class ExponentialFit:
    p0: float
    p_inf: float
    tau: float
    half_life: float  # tau ln 2, in chunks
    ci_low: float  # 95% interval of tau ln 2 from the fit's covariance (delta method: ln 2 x se(tau))
    ci_high: float


def exponential_fit(series: list[float]) -> ExponentialFit | None:
    """Least-squares P(t) = P_inf + (P0 - P_inf) exp(-t / tau); None when it does not converge or the
    fitted curve does not decay (P_inf must lie below P0) or its half-life exceeds ten times the series."""
    from scipy.optimize import curve_fit

    y = np.asarray(series, dtype=float)
    t = np.arange(len(y), dtype=float)
    if len(y) < 4 or np.ptp(y) == 0:
        return None

    def model(t, p0, p_inf, tau):
        return p_inf + (p0 - p_inf) * np.exp(-t / tau)

    try:
        params, cov = curve_fit(model, t, y, p0=(y[0], y[-1], max(1.0, len(y) / 3)),
                                bounds=([-np.inf, -np.inf, 1e-3], [np.inf, np.inf, 1e6]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    p0, p_inf, tau = (float(v) for v in params)
    se = float(np.sqrt(cov[2, 2])) if np.isfinite(cov[2, 2]) else float("nan")
    if not math.isfinite(tau) or tau * math.log(2) > 10 * len(y) or p_inf >= p0:
        return None  # no decay, or one too slow to tell from none within the chunks generated
    half = tau * math.log(2)
    return ExponentialFit(p0, p_inf, tau, half, half - 1.96 * se * math.log(2), half + 1.96 * se * math.log(2))


@dataclass
class Slope:
    slope: float
    ci_low: float
    ci_high: float
    pvalue: float


def linear_slope(series: list[float]) -> Slope:
    """OLS slope per chunk with its 95% interval (statsmodels)."""
    from statsmodels.regression.linear_model import OLS  # not statsmodels.api, which imports all of statsmodels
    from statsmodels.tools.tools import add_constant

    y = np.asarray(series, dtype=float)
    if len(y) < 3 or np.ptp(y) == 0:
        slope = 0.0 if len(y) >= 2 and np.ptp(y) == 0 else float("nan")
        return Slope(slope, slope, slope, float("nan"))
    fit = OLS(y, add_constant(np.arange(len(y), dtype=float))).fit()
    low, high = fit.conf_int()[1]
    return Slope(float(fit.params[1]), float(low), float(high), float(fit.pvalues[1]))


def drops(series: list[float]) -> list[float]:
    """Chunk-to-chunk drops (positive when the value falls), one per chunk after the first."""
    return [a - b for a, b in zip(series[:-1], series[1:])]


def cliffs(series: list[float], fraction: float, z: float = 0.0) -> list[int]:
    """Chunks entered by a drop of at least `fraction` of the first chunk's value that is also an outlier
    among the series' chunk-to-chunk changes: above their median by `z` robust standard deviations
    (1.4826 x the median absolute deviation), so noise at the scale of the series is not a cliff."""
    steps = drops(series)
    if not steps:
        return []
    floor = fraction * abs(series[0])
    if z > 0:
        median = float(np.median(steps))
        spread = 1.4826 * float(np.median(np.abs(np.subtract(steps, median))))
        floor = max(floor, median + z * spread)
    return [chunk for chunk, drop in enumerate(steps, start=1) if floor > 0 and drop >= floor]


def largest_drop(series: list[float]) -> tuple[float, int | None]:
    """The largest single drop and the chunk it enters (0.0, None when the series never falls)."""
    steps = drops(series)
    if not steps or max(steps) <= 0:
        return 0.0, None
    chunk = int(np.argmax(steps))
    return float(steps[chunk]), chunk + 1


def collapse(series: list[float]) -> float:
    """(first - last) / first: the fraction of the first chunk's value lost by the last."""
    return (series[0] - series[-1]) / series[0] if series[0] else float("nan")


def thirds(series: list[float]) -> tuple[float, float]:
    """Means of the first and last third of the chunks (at least one chunk each)."""
    k = max(1, len(series) // 3)
    return float(np.mean(series[:k])), float(np.mean(series[-k:]))


def chunks_to_converge(series: list[float], tolerance: float) -> int | None:
    """The first chunk from which the series stays within `tolerance` of its last-third mean."""
    _, late = thirds(series)
    for chunk in range(len(series)):
        if all(abs(v - late) <= tolerance for v in series[chunk:]):
            return chunk
    return None
