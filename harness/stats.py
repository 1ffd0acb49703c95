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


def mcnemar_test(a_correct: Sequence[bool], b_correct: Sequence[bool], exact: bool | None = None) -> McNemarResult:
    """McNemar's test on paired predictions of the same items.

    Exact binomial when the discordant pairs b + c < 25 (or when `exact` says so), otherwise chi-square
    with continuity correction.
    """
    a = np.asarray(a_correct, dtype=bool)
    b_arr = np.asarray(b_correct, dtype=bool)
    if a.shape != b_arr.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired predictions must be 1-D and equally long (got {a.shape} and {b_arr.shape})")
    b = int(np.sum(a & ~b_arr))
    c = int(np.sum(~a & b_arr))
    table = [[int(np.sum(a & b_arr)), b], [c, int(np.sum(~a & ~b_arr))]]
    exact = b + c < MCNEMAR_EXACT_BELOW if exact is None else exact
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


# ---------------------------------------------------------------------------------------------------- claims
# What the claims engine (harness/claims.py) tests with: paired differences over units (items, prompts), clustered
# across training seeds; power and minimum detectable effects; equivalence (TOST); Fisher-z correlation intervals.

SIGN_FLIP_EXACT_UP_TO = 16  # non-zero differences enumerated exactly (2^16 sign patterns); above, a seeded sample
SIGN_FLIP_RESAMPLES = 20_000


@dataclass(frozen=True)
class PairedTest(_Result):
    n: int  # units (items) with a difference defined
    mean_difference: float
    pvalue: float
    method: str
    second_moment: float  # mean of the squared per-unit differences (the discordance, for binary outcomes)


def paired_difference_test(differences: Sequence[float], binary_single: bool = False,
                           resamples: int = SIGN_FLIP_RESAMPLES, seed: int = 0) -> PairedTest:
    """Two-sided test that the mean per-unit difference is 0. Each unit (an item) is one cluster: its difference is
    the mean over training seeds, so repeated seeds never count as independent items. One binary outcome per unit
    and side (a single seed) is McNemar's exact binomial test on the discordant units; otherwise the sign-flip
    (paired randomisation) test of the mean difference, exact up to SIGN_FLIP_EXACT_UP_TO non-zero units and
    a seeded Monte Carlo sample beyond, so a re-analysis gives the same p."""
    d = _floats(differences, "differences")
    mean, m2 = float(d.mean()), float(np.mean(d ** 2))
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return PairedTest(int(d.size), 0.0, 1.0, "no unit differs", m2)
    if binary_single:
        b, c = int(np.sum(nonzero > 0)), int(np.sum(nonzero < 0))
        result = _sm_mcnemar([[0, b], [c, 0]], exact=True)
        return PairedTest(int(d.size), mean, float(min(1.0, result.pvalue)), "McNemar, exact binomial", m2)
    observed = abs(nonzero.sum())
    tie = observed * (1 - 1e-9) - 1e-12  # sums equal to the observed one up to rounding count as ties
    if nonzero.size <= SIGN_FLIP_EXACT_UP_TO:
        signs = ((np.arange(2 ** nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1) * 2 - 1
        sums = np.abs(signs @ nonzero)
        pvalue = float(np.mean(sums >= tie))
        method = "sign-flip test, exact"
    else:
        rng = np.random.default_rng(seed)
        sums = np.abs((rng.integers(0, 2, size=(resamples, nonzero.size), dtype=np.int8) * 2 - 1) @ nonzero)
        pvalue = float((np.sum(sums >= tie) + 1) / (resamples + 1))
        method = f"sign-flip test, {resamples:,} seeded resamples"
    return PairedTest(int(d.size), mean, min(1.0, pvalue), method, m2)


def paired_power(n: int, effect: float, second_moment: float, alpha: float = 0.05) -> float:
    """Power of a two-sided paired test of mean difference `effect` over n units whose squared differences average
    `second_moment` under that effect (Connor 1987's approximation for McNemar's test, where it is the share of
    discordant units; the normal approximation in general). Callers build the second moment for each effect with
    `alternative_second_moment`."""
    if n <= 0 or effect == 0:
        return float("nan") if n <= 0 else alpha
    psi = max(second_moment, effect ** 2)
    z = scipy_stats.norm.ppf(1 - alpha / 2)
    spread = math.sqrt(max(psi - effect ** 2, 0.0))
    signal = math.sqrt(n) * abs(effect) - z * math.sqrt(psi)
    if spread == 0:
        return 1.0 if signal > 0 else 0.0
    return float(scipy_stats.norm.cdf(signal / spread))


def alternative_second_moment(effect: float, observed_mean: float, observed_second_moment: float,
                              binary_single: bool) -> float:
    """E[d^2] if the true mean difference were `effect`, keeping what the data show of the spread: for one seed of
    right/wrong outcomes, the items on which the compared method beats the claimed one stay (2 min(b, c) / n) and
    |effect| of the items separate them; otherwise the observed variance plus effect^2. Never below what the
    observed data imply, so power is not overstated."""
    if binary_single:
        return min(1.0, observed_second_moment - abs(observed_mean) + abs(effect))
    return max(observed_second_moment - observed_mean ** 2, 0.0) + effect ** 2


def minimum_detectable_effect(power_at, cap: float, power: float = 0.8) -> float | None:
    """The smallest effect in (0, cap] at which `power_at(effect)` reaches `power`; None when even `cap` does not."""
    if cap <= 0 or power_at(cap) < power:
        return None
    low, high = 0.0, cap
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (low, mid) if power_at(mid) >= power else (mid, high)
    return high


def one_sample_power(n: int, effect: float, sd: float, alpha: float = 0.05) -> float:
    """Power of a two-sided one-sample test (normal approximation) to see a mean `effect` away from the null."""
    if n <= 0 or sd <= 0:
        return 1.0 if n > 0 and effect != 0 else float("nan")
    z = scipy_stats.norm.ppf(1 - alpha / 2)
    return float(scipy_stats.norm.cdf(math.sqrt(n) * abs(effect) / sd - z))


def binomial_test(successes: int, n: int, p: float) -> float:
    """Two-sided exact binomial test of a rate against p."""
    return float(scipy_stats.binomtest(int(successes), int(n), p).pvalue)


@dataclass(frozen=True)
class Equivalence(_Result):
    n: int
    mean: float
    ci_low: float  # 90% interval: TOST at alpha 0.05 shows equivalence exactly when it lies inside the margin
    ci_high: float
    pvalue_tost: float
    pvalue_difference: float  # the ordinary two-sided test against 0
    power_at_zero: float  # the chance TOST shows equivalence at this n and spread when the true mean is 0


def equivalence_test(values: Sequence[float], margin: float, alpha: float = 0.05) -> Equivalence:
    """Two one-sided t-tests (statsmodels) that the mean of `values` lies within (-margin, margin)."""
    x = _floats(values, "values")
    if x.size < 2:
        raise ValueError("an equivalence test needs at least two values")
    described = DescrStatsW(x)
    if np.ptp(x) == 0:
        inside = abs(x[0]) < margin
        return Equivalence(int(x.size), float(x[0]), float(x[0]), float(x[0]), 0.0 if inside else 1.0,
                           0.0 if x[0] != 0 else 1.0, 1.0 if inside else 0.0)
    pvalue, _, _ = described.ttost_mean(-margin, margin)
    low, high = described.tconfint_mean(alpha=2 * alpha)
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    t = scipy_stats.t.ppf(1 - alpha, x.size - 1)
    power = max(0.0, 2 * scipy_stats.t.cdf(margin / se - t, x.size - 1) - 1)
    return Equivalence(int(x.size), float(x.mean()), float(low), float(high), float(pvalue),
                       float(described.ttest_mean(0.0)[1]), float(power))


@dataclass(frozen=True)
class FisherCorrelation(_Result):
    n: int
    r: float
    ci_low: float
    ci_high: float
    pvalue: float


def fisher_z_correlation(x: Sequence[float], y: Sequence[float], alpha: float = 0.05) -> FisherCorrelation:
    """Pearson's r with a Fisher-z interval (always inside [-1, 1]) and the z-test of r = 0; needs n >= 4."""
    x, y = _floats(x, "x"), _floats(y, "y")
    if x.shape != y.shape or x.size < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        nan = float("nan")
        return FisherCorrelation(int(x.size), nan, nan, nan, nan)
    r = float(scipy_stats.pearsonr(x, y).statistic)
    return fisher_z_interval(r, int(x.size), alpha)


def fisher_z_interval(r: float, n: int, alpha: float = 0.05) -> FisherCorrelation:
    z, se = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), 1 / math.sqrt(n - 3)
    crit = scipy_stats.norm.ppf(1 - alpha / 2)
    pvalue = float(2 * scipy_stats.norm.sf(abs(z) / se))
    return FisherCorrelation(n, r, math.tanh(z - crit * se), math.tanh(z + crit * se), pvalue)


def correlation_power(n: int, r: float, alpha: float = 0.05) -> float:
    if n < 4 or r == 0:
        return float("nan") if n < 4 else alpha
    return float(scipy_stats.norm.cdf(abs(math.atanh(min(abs(r), 1 - 1e-12))) * math.sqrt(n - 3)
                                      - scipy_stats.norm.ppf(1 - alpha / 2)))


def sign_test_pvalue(wins: int, losses: int) -> float:
    """Two-sided sign test (ties dropped): are wins and losses equally likely?"""
    return 1.0 if wins + losses == 0 else binomial_test(wins, wins + losses, 0.5)


def sign_test_power(n: int, share: float, alpha: float = 0.05) -> float:
    """Power of the two-sided exact sign test over n untied units when a unit wins with probability `share`."""
    if n <= 0:
        return float("nan")
    ks = np.arange(n + 1)
    reject = np.array([sign_test_pvalue(int(k), int(n - k)) < alpha for k in ks])
    return float(scipy_stats.binom.pmf(ks[reject], n, share).sum())
