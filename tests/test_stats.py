"""harness.stats against reference values computed outside this code.

R values: `t.test(extra ~ group, data = sleep)` (Welch), `t.test(..., paired = TRUE)`,
`prop.test(8, 10, correct = FALSE)$conf.int` (Wilson), `binom.test(3, 13)` (exact McNemar),
`pwr::pwr.t.test(d = 0.1, power = 0.8)` (n = 1570.7), `power.t.test(delta = .5, power = .8)`
(n = 63.77), `p.adjust(c(.01, .04, .03), "holm")`. Other values use the textbook formulas,
written out here independently of statsmodels.
"""

import math

import pytest

from harness import stats

SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_wilson_interval_matches_r():
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.4901625, abs=1e-6)
    assert high == pytest.approx(0.9433178, abs=1e-6)


def test_wilson_interval_textbook_formula():
    k, n, z = 189, 200, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.wilson_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert stats.wilson_interval(0, 5)[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 0)


def test_mcnemar_exact_for_few_discordant_pairs():
    a = [True] * 3 + [False] * 10 + [True] * 5
    b = [False] * 3 + [True] * 10 + [True] * 5
    result = stats.mcnemar_test(a, b)
    assert (result.b, result.c, result.n) == (3, 10, 18)
    assert result.method == "exact binomial"
    expected = 2 * sum(math.comb(13, i) for i in range(4)) / 2**13  # two-sided binomial, p = 0.5
    assert result.pvalue == pytest.approx(expected) and result.pvalue == pytest.approx(0.09228516, abs=1e-7)


def test_mcnemar_chi_square_with_continuity_correction():
    a = [True] * 30 + [False] * 10 + [True] * 50
    b = [False] * 30 + [True] * 10 + [False] * 50
    result = stats.mcnemar_test(a, b)
    assert (result.b, result.c) == (80, 10)
    assert result.method.startswith("chi-square")
    chi2 = (abs(80 - 10) - 1) ** 2 / (80 + 10)
    assert result.statistic == pytest.approx(chi2)
    assert result.pvalue == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))  # chi-square sf, 1 df


def test_mcnemar_no_discordant_pairs_and_bad_input():
    assert stats.mcnemar_test([True, False], [True, False]).pvalue == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar_test([True], [True, False])


def test_cohens_d_and_hedges_g():
    n1 = n2 = 10
    m1, m2 = sum(SLEEP_1) / n1, sum(SLEEP_2) / n2
    v1 = sum((x - m1) ** 2 for x in SLEEP_1) / (n1 - 1)
    v2 = sum((x - m2) ** 2 for x in SLEEP_2) / (n2 - 1)
    d = (m1 - m2) / math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    assert stats.cohens_d(SLEEP_1, SLEEP_2) == pytest.approx(d) and d == pytest.approx(-0.8321811, abs=1e-6)
    # Hedges (1981): J = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)), about 1 - 3/(4 df - 1)
    df = n1 + n2 - 2
    j = math.gamma(df / 2) / (math.sqrt(df / 2) * math.gamma((df - 1) / 2))
    assert stats.hedges_g(SLEEP_1, SLEEP_2) == pytest.approx(d * j)
    assert j == pytest.approx(1 - 3 / (4 * df - 1), abs=1e-3)


def test_welch_t_test_matches_r():
    result = stats.welch_t_test(SLEEP_1, SLEEP_2)
    assert result.statistic == pytest.approx(-1.860813, abs=1e-6)
    assert result.df == pytest.approx(17.77647, abs=1e-5)
    assert result.pvalue == pytest.approx(0.07939414, abs=1e-7)
    assert (result.ci_low, result.ci_high) == pytest.approx((-3.3654832, 0.2054832), abs=1e-6)


def test_paired_t_test_matches_r():
    result = stats.paired_t_test(SLEEP_1, SLEEP_2)
    assert result.statistic == pytest.approx(-4.062128, abs=1e-6)
    assert result.df == 9
    assert result.pvalue == pytest.approx(0.002832890, abs=1e-8)
    assert (result.ci_low, result.ci_high) == pytest.approx((-2.4598858, -0.7001142), abs=1e-6)


def test_one_sample_t_test_matches_scipy_and_the_paired_test_is_one_on_differences():
    from scipy.stats import ttest_1samp

    result = stats.one_sample_t_test(SLEEP_1, 0.5)
    reference = ttest_1samp(SLEEP_1, 0.5)
    assert result.statistic == pytest.approx(reference.statistic) and result.pvalue == pytest.approx(reference.pvalue)
    assert result.df == 9 and result.mean_difference == pytest.approx(sum(SLEEP_1) / 10 - 0.5)
    paired = stats.paired_t_test(SLEEP_1, SLEEP_2)
    on_differences = stats.one_sample_t_test([a - b for a, b in zip(SLEEP_1, SLEEP_2)], 0.0)
    assert paired == on_differences


def test_two_proportion_z_test_is_the_pooled_z_test():
    x1, n1, x2, n2 = 17, 200, 4, 200
    pooled = (x1 + x2) / (n1 + n2)
    z = (x1 / n1 - x2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert stats.two_proportion_z_test([x1, x2], [n1, n2]) == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))


def test_win_rate_counts_and_sign_test():
    result = stats.win_rate([3, 2, 5, 1, 4], [1, 2, 4, 2, 0])
    assert (result.wins, result.ties, result.losses, result.n) == (3, 1, 1, 5)
    assert result.rate == pytest.approx(0.6)
    # sign test: 3 wins vs 1 loss, two-sided binomial p = 2 * P(X <= 1 | n=4) = 0.625
    assert result.sign_test_pvalue == pytest.approx(0.625)


def test_required_n_per_group_matches_r_and_the_report():
    assert stats.required_n_per_group(0.1) == 1571  # R: 1570.73; the TRE report says "~1570"
    assert stats.required_n_per_group(0.5) == 64  # R power.t.test: 63.77
    assert stats.required_n_per_group(-0.5) == 64
    with pytest.raises(ValueError):
        stats.required_n_per_group(0.0)


def test_adjust_pvalues_holm_matches_r():
    assert stats.adjust_pvalues([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.adjust_pvalues([0.01, 0.04, 0.03], "bonferroni") == pytest.approx([0.03, 0.12, 0.09])
    assert stats.adjust_pvalues([]) == []


def test_correlation_and_undefined_cases():
    result = stats.correlation([1, 2, 3, 4, 5], [2, 4, 5, 4, 5])
    xs, ys = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    mx, my = sum(xs) / 5, sum(ys) / 5
    r = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(
        sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    assert result.pearson_r == pytest.approx(r)
    assert math.isnan(stats.correlation([1, 2], [3, 4]).pearson_r)
    assert math.isnan(stats.correlation([1, 1, 1], [3, 4, 5]).spearman_rho)
    with pytest.raises(ValueError):
        stats.correlation([1, float("nan"), 2], [1, 2, 3])
