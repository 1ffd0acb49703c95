"""Every statistic the reports use, on statsmodels (and scipy for correlations).

Reports recompute these from records.jsonl, so a saved run can be re-analysed without
running models again.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.descriptivestats import sign_test
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.proportion import proportion_confint, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

MCNEMAR_EXACT_BELOW = 25  # discordant pairs; the usual rule for the exact binomial version


class _Result:
    def as_dict(self) -> dict:
        return asdict(self)


def _floats(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in 0..n, got {successes} of {n}")
    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return float(low), float(high)


@dataclass(frozen=True)
class Proportion(_Result):
    successes: int
    n: int
    rate: float
    ci_low: float
    ci_high: float


def proportion(successes: int, n: int, alpha: float = 0.05) -> Proportion:
    low, high = wilson_interval(successes, n, alpha)
    return Proportion(int(successes), int(n), successes / n, low, high)


@dataclass(frozen=True)
class McNemarResult(_Result):
    b: int  # A correct, B wrong
    c: int  # A wrong, B correct
    n: int
    statistic: float
    pvalue: float
    method: str


def mcnemar_test(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemarResult:
    """McNemar's test on paired predictions of the same items.

    Exact binomial when the discordant pairs b + c < 25, otherwise chi-square with
    continuity correction.
    """
    a = np.asarray(a_correct, dtype=bool)
    b_arr = np.asarray(b_correct, dtype=bool)
    if a.shape != b_arr.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired predictions must be 1-D and equally long (got {a.shape} and {b_arr.shape})")
    b = int(np.sum(a & ~b_arr))
    c = int(np.sum(~a & b_arr))
    table = [[int(np.sum(a & b_arr)), b], [c, int(np.sum(~a & ~b_arr))]]
    exact = b + c < MCNEMAR_EXACT_BELOW
    method = "exact binomial" if exact else "chi-square, continuity corrected"
    if b + c == 0:
        return McNemarResult(b, c, int(a.size), 0.0, 1.0, method)
    result = _sm_mcnemar(table, exact=exact, correction=True)
    return McNemarResult(b, c, int(a.size), float(result.statistic), float(min(1.0, result.pvalue)), method)


def cohens_d(x: Sequence[float], y: Sequence[float]) -> float:
    """(mean x - mean y) / pooled standard deviation (n - 1 weighting)."""
    x, y = _floats(x, "x"), _floats(y, "y")
    if x.size + y.size < 3:
        raise ValueError("Cohen's d needs at least three observations in total")
    pooled_var = ((x.size - 1) * x.var(ddof=1 if x.size > 1 else 0) + (y.size - 1) * y.var(ddof=1 if y.size > 1 else 0)) / (x.size + y.size - 2)
    if pooled_var == 0:
        return 0.0 if x.mean() == y.mean() else math.copysign(math.inf, x.mean() - y.mean())
    return float((x.mean() - y.mean()) / math.sqrt(pooled_var))


def hedges_g(x: Sequence[float], y: Sequence[float]) -> float:
    """Cohen's d with the exact small-sample bias correction J(df)."""
    df = len(x) + len(y) - 2
    correction = math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)
    return cohens_d(x, y) * correction


@dataclass(frozen=True)
class TTestResult(_Result):
    statistic: float
    pvalue: float
    df: float
    mean_difference: float
    ci_low: float
    ci_high: float


def mean_interval(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float]:
    """Student's t interval for the mean of a few independent values (e.g. one accuracy per training
    seed); (NaN, NaN) for fewer than two values, a zero-width interval when they are all equal."""
    array = _floats(values, "values")
    if array.size < 2:
        return float("nan"), float("nan")
    if np.ptp(array) == 0:
        return float(array[0]), float(array[0])
    low, high = DescrStatsW(array).tconfint_mean(alpha=alpha)
    return float(low), float(high)


def bootstrap_mean_interval(values: Sequence[float], alpha: float = 0.05, resamples: int = 9999,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean (seeded, so a re-analysis gives the same interval);
    (NaN, NaN) for fewer than two values, a zero-width interval when they are all equal."""
    array = _floats(values, "values")
    if array.size < 2:
        return float("nan"), float("nan")
    if np.ptp(array) == 0:
        return float(array[0]), float(array[0])
    result = scipy_stats.bootstrap((array,), np.mean, confidence_level=1 - alpha, n_resamples=resamples,
                                   method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def welch_t_test(x: Sequence[float], y: Sequence[float], alpha: float = 0.05) -> TTestResult:
    """Two-sample t-test without assuming equal variances (Welch-Satterthwaite df)."""
    x, y = _floats(x, "x"), _floats(y, "y")
    compare = CompareMeans(DescrStatsW(x), DescrStatsW(y))
    statistic, pvalue, df = compare.ttest_ind(usevar="unequal")
    low, high = compare.tconfint_diff(alpha=alpha, usevar="unequal")
    return TTestResult(float(statistic), float(pvalue), float(df), float(x.mean() - y.mean()), float(low), float(high))


def one_sample_t_test(x: Sequence[float], value: float, alpha: float = 0.05) -> TTestResult:
    """t-test of the mean of x against a fixed value (mean_difference and its interval: mean(x) - value)."""
    sample = DescrStatsW(_floats(x, "x") - value)
    statistic, pvalue, df = sample.ttest_mean(0.0)
    low, high = sample.tconfint_mean(alpha=alpha)
    return TTestResult(float(statistic), float(pvalue), float(df), float(sample.mean), float(low), float(high))


def paired_t_test(x: Sequence[float], y: Sequence[float], alpha: float = 0.05) -> TTestResult:
    """t-test on the differences x - y of paired observations."""
    x, y = _floats(x, "x"), _floats(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"paired samples must be equally long ({x.size} vs {y.size})")
    return one_sample_t_test(x - y, 0.0, alpha)


def two_proportion_z_test(successes: Sequence[int], trials: Sequence[int]) -> float:
    """Two-sided p-value of a z-test that two independent proportions are equal."""
    return float(proportions_ztest(list(successes), list(trials))[1])


@dataclass(frozen=True)
class WinRate(_Result):
    wins: int
    ties: int
    losses: int
    n: int
    rate: float  # wins / n, as the reports count it
    ci_low: float
    ci_high: float
    sign_test_pvalue: float  # wins vs losses, ties dropped


def win_rate(x: Sequence[float], y: Sequence[float]) -> WinRate:
    """How often x beats its paired y, with a Wilson interval and a sign test."""
    x, y = _floats(x, "x"), _floats(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"paired samples must be equally long ({x.size} vs {y.size})")
    wins, losses = int(np.sum(x > y)), int(np.sum(x < y))
    ties = int(x.size - wins - losses)
    low, high = wilson_interval(wins, int(x.size))
    pvalue = float(sign_test(x - y, 0.0)[1]) if wins + losses else 1.0
    return WinRate(wins, ties, losses, int(x.size), wins / x.size, low, high, pvalue)


def required_n_per_group(d: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Observations per group for a two-sided two-sample t-test to detect effect size d."""
    if d == 0 or not math.isfinite(d):
        raise ValueError("the effect size must be finite and non-zero")
    n = TTestIndPower().solve_power(effect_size=abs(d), alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
    return int(math.ceil(float(np.atleast_1d(n)[0])))


def adjust_pvalues(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Family-wise (holm, bonferroni) or false-discovery (fdr_bh) adjustment."""
    if len(pvalues) == 0:
        return []
    return [float(p) for p in multipletests(list(pvalues), method=method)[1]]


@dataclass(frozen=True)
class Correlation(_Result):
    n: int
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float


def correlation(x: Sequence[float], y: Sequence[float]) -> Correlation:
    """Pearson and Spearman correlation; NaN where undefined (n < 3 or a constant input)."""
    x, y = _floats(x, "x"), _floats(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must be equally long ({x.size} vs {y.size})")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        nan = float("nan")
        return Correlation(int(x.size), nan, nan, nan, nan)
    pearson = scipy_stats.pearsonr(x, y)
    spearman = scipy_stats.spearmanr(x, y)
    return Correlation(int(x.size), float(pearson.statistic), float(pearson.pvalue),
                       float(spearman.statistic), float(spearman.pvalue))
