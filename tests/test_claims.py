"""The claims engine on synthetic data with known answers: one rule per test."""

import math

import numpy as np
import pytest

from harness import claims as C
from harness import stats


def _outcomes(hits: list[int], seed=0) -> dict:
    return {seed: {f"i{n}": float(h) for n, h in enumerate(hits)}}


def _claim(*evidence) -> C.Finding:
    return C.decide(C.Claim("x", "a claim", "1", "000_x.txt", "", list(evidence)))


def _paired(a_hits, b_hits, **kw) -> C.Paired:
    a = {s: {f"i{n}": float(h) for n, h in enumerate(hits)} for s, hits in a_hits.items()}
    b = {s: {f"i{n}": float(h) for n, h in enumerate(hits)} for s, hits in b_hits.items()}
    return C.Paired("bridge", "baseline", a, b, kw.pop("direction", "above"), **kw)


def _rows(n_both, n_a, n_b, n_none):
    """Paired right/wrong outcomes with the given counts of both right, only a, only b, neither."""
    a = [1] * n_both + [1] * n_a + [0] * n_b + [0] * n_none
    b = [1] * n_both + [0] * n_a + [1] * n_b + [0] * n_none
    return a, b


# ---------------------------------------------------------------- direction per seed, clustered test

def test_an_effect_in_every_seed_is_reproduced_and_one_seed_against_it_makes_it_mixed():
    a, b = _rows(50, 30, 5, 115)
    flipped, _ = _rows(50, 5, 30, 115)
    assert _claim(_paired({0: a, 1: a, 2: a}, {0: b})).verdict == C.REPRODUCED
    mixed = _claim(_paired({0: a, 1: a, 2: flipped}, {0: b}))
    # seed 2 shows no difference: the pooled effect is still significant, but not in every seed
    assert mixed.verdict == C.MIXED and "2: +0.0 pts" in mixed.seeds


def test_seeds_are_not_extra_items():
    """Three identical seeds are one seed's evidence: the clustered test gives (nearly) the same p."""
    a, b = _rows(50, 14, 5, 131)
    one = stats.paired_difference_test(np.array(a) - np.array(b), binary_single=True)
    three = _paired({0: a, 1: a, 2: a}, {0: b})
    finding = _claim(three)
    p_three = float(finding.statistic.split(", p ")[1].split(" ")[0])
    assert abs(p_three - one.pvalue) < 0.01 and one.pvalue > 0.05
    # the naive concatenation (each seed's items as new items) would have called it significant
    naive = stats.mcnemar_test(a * 3, b * 3)
    assert naive.pvalue < 0.05 and finding.verdict != C.REPRODUCED


def test_mcnemar_is_the_single_seed_case():
    a, b = _rows(20, 12, 2, 66)
    finding = _claim(_paired({0: a}, {0: b}))
    assert "McNemar" in finding.statistic and finding.verdict == C.REPRODUCED
    assert f"p {stats.mcnemar_test(a, b).pvalue:.2g}" in finding.statistic


# ---------------------------------------------------------------- power and minimum detectable effect

def test_a_null_result_is_not_reproduced_only_when_powered_for_the_reported_effect():
    a, b = _rows(60, 6, 5, 129)  # no effect
    powered = _claim(_paired({0: a}, {0: b}, reported=(0.8, 0.3)))
    assert powered.verdict == C.NOT_REPRODUCED and "power 1.00" in powered.power
    weak = _claim(_paired({0: a}, {0: b}, reported=(0.32, 0.30)))
    assert weak.verdict == C.UNDERPOWERED and "MDE" in weak.power
    silent = _claim(_paired({0: a}, {0: b}))
    assert silent.verdict == C.NOT_DETECTED


def test_power_matches_a_simulation_and_the_mde_sits_at_eighty_percent():
    rng = np.random.default_rng(1)
    n, p_a, p_b = 200, 0.30, 0.20
    hits = 0
    for _ in range(400):
        a = rng.random(n) < p_a
        b = rng.random(n) < p_b  # independent methods: discordance p_a(1-p_b) + p_b(1-p_a)
        hits += stats.mcnemar_test(a, b).pvalue < 0.05
    psi = p_a * (1 - p_b) + p_b * (1 - p_a)
    assert abs(stats.paired_power(n, p_a - p_b, psi) - hits / 400) < 0.08
    mde = stats.minimum_detectable_effect(lambda e: stats.paired_power(n, e, psi), 0.7)
    assert abs(stats.paired_power(n, mde, psi) - 0.8) < 1e-3


def test_the_reported_effect_is_capped_at_what_the_baseline_leaves_possible():
    a, b = _rows(0, 0, 3, 197)  # the text baseline scores 1.5%: nothing can fall 70 points below it
    finding = _claim(_paired({0: a}, {0: b}, direction="below", reported=(0.06, 0.765)))
    assert "capped at the possible 1.5" in finding.power and finding.verdict == C.UNDERPOWERED


# ---------------------------------------------------------------- floors against the random baseline

def test_a_reference_that_does_not_beat_the_random_baseline_makes_the_comparison_untestable():
    a, b = _rows(40, 60, 3, 97)
    weak_reference = C.Reference("receiver text", _outcomes([1] * 63 + [0] * 137), chance=0.285)
    finding = _claim(_paired({0: a}, {0: b}, references=[weak_reference]))
    assert finding.verdict == C.UNTESTABLE and "does not beat the random baseline at 28.5%" in finding.statistic
    good_reference = C.Reference("receiver text", _outcomes([1] * 110 + [0] * 90), chance=0.285)
    assert _claim(_paired({0: a}, {0: b}, references=[good_reference])).verdict == C.REPRODUCED


def test_every_seed_of_a_trained_reference_must_clear_the_floor():
    a, b = _rows(40, 60, 3, 97)
    reference = C.Reference("prompt tuning", {0: _outcomes([1] * 110 + [0] * 90)[0],
                                              1: _outcomes([1] * 60 + [0] * 140)[0]}, chance=0.25)
    finding = _claim(_paired({0: a}, {0: b}, references=[reference]))
    assert finding.verdict == C.UNTESTABLE and "(seed 1)" in finding.statistic


# ---------------------------------------------------------------- invalid outputs, budgets

def test_an_effect_made_by_invalid_outputs_is_untestable():
    """The relay is 'wrong' on 72 items only because it gave no answer; on valid items it is as good."""
    n = 200
    a = [1] * 98 + [0] * 102
    b = [0] * 72 + [1] * 55 + [0] * 73
    valid_b = [0] * 72 + [1] * 128
    a_out, b_out = _outcomes(a), _outcomes(b)
    e = C.Paired("bridge", "text relay", a_out, b_out, "above", valid_a={0: {f"i{i}": True for i in range(n)}},
                 valid_b={0: {f"i{i}": bool(v) for i, v in enumerate(valid_b)}})
    finding = _claim(e)
    assert finding.verdict == C.UNTESTABLE and "decided by invalid outputs" in finding.statistic
    honest = C.Paired("bridge", "text relay", a_out, b_out, "above")
    assert _claim(honest).verdict == C.REPRODUCED


def test_unequal_training_budgets_are_untestable():
    a, b = _rows(40, 60, 3, 97)
    finding = _claim(_paired({0: a}, {0: b}, budgets={"bridge": "250 steps x batch 8",
                                                      "prompt tuning": "100 steps x batch 8"}))
    assert finding.verdict == C.UNTESTABLE and "unequal training budgets" in finding.statistic


# ---------------------------------------------------------------- levels, runs, no change, correlation, majority

def test_a_level_claim_uses_an_exact_binomial_and_says_whose_threshold():
    finding = _claim(C.Level("failed share", _outcomes([1] * 48 + [0] * 2), 0.8, "above", chosen_by="this project"))
    assert finding.verdict == C.REPRODUCED and "this project's" in finding.statistic
    assert f"p {stats.binomial_test(48, 50, 0.8):.2g} (exact binomial)" in finding.statistic
    # 23 of 25 is above 80%, but 25 items cannot show it
    assert _claim(C.Level("failed share", _outcomes([1] * 23 + [0] * 2), 0.8, "above")).verdict == C.NOT_DETECTED
    assert _claim(C.Level("failed share", _outcomes([1] * 12 + [0] * 13), 0.8, "above")).verdict == C.REVERSED


def test_a_level_over_seeds_that_agree_on_every_unit_counts_each_unit_once():
    """Three trained models, three prompts, no trajectory reaching the level: three outcomes, not nine, and never
    the certainty (p 0) a t-test over identical unit means would give."""
    values = {seed: {f"p{i}": 0.0 for i in range(3)} for seed in (0, 1, 2)}
    finding = _claim(C.Level("reached", values, 0.5, "above", unit="trajectories"))
    assert f"p {stats.binomial_test(0, 3, 0.5):.2g} (exact binomial over trajectories" in finding.statistic
    assert finding.verdict == C.NOT_DETECTED
    mixed = {0: {"p0": 1.0, "p1": 0.0, "p2": 1.0}, 1: {"p0": 0.0, "p1": 0.0, "p2": 1.0}}  # seeds disagree on p0
    assert "one-sample t-test" in _claim(C.Level("reached", mixed, 0.5, "above", unit="trajectories")).statistic


def test_an_event_per_run_needs_every_run():
    ev = lambda happened: C.PerRun("loss explodes", dict(enumerate(happened)), {i: "" for i in range(3)})  # noqa: E731
    assert _claim(ev([True, True, True])).verdict == C.REPRODUCED
    assert _claim(ev([True, False, True])).verdict == C.MIXED
    assert _claim(ev([False, False, False])).verdict == C.NOT_REPRODUCED


def test_no_change_is_an_equivalence_test_never_an_interval_containing_zero():
    rng = np.random.default_rng(0)
    flat = {0: {i: float(v) for i, v in enumerate(rng.normal(0, 0.01, 40))}}
    assert _claim(C.NoChange("slope", flat, margin=0.02)).verdict == C.REPRODUCED
    # wide and noisy: the interval contains 0, yet nothing is shown
    noisy = {0: {i: v for i, v in enumerate([0.3, -0.3] * 5)}}
    verdict = _claim(C.NoChange("slope", noisy, margin=0.02)).verdict
    assert verdict in (C.UNDERPOWERED, C.INCONCLUSIVE)
    moving = {0: {i: float(v) for i, v in enumerate(rng.normal(0.05, 0.01, 40))}}
    assert _claim(C.NoChange("slope", moving, margin=0.02)).verdict == C.NOT_REPRODUCED
    assert _claim(C.NoChange("slope", flat, margin=None)).verdict == C.UNTESTABLE


def test_correlation_intervals_stay_inside_minus_one_to_one():
    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    y = [0.1, 0.9, 2.2, 2.8, 4.1]
    finding = _claim(C.Correlation("gain vs entropy", x, y, "positive"))
    low, high = (float(v) for v in finding.statistic.split("interval [")[1].split("]")[0].split(", "))
    assert -1 <= low <= high <= 1 and finding.verdict == C.REPRODUCED
    # a strong correlation on few points: a t interval on r (r +- t * se) leaves [-1, 1]; Fisher z does not
    result = stats.fisher_z_correlation([1, 2, 3, 4, 5], [1.1, 1.9, 3.2, 3.9, 5.1])
    se = math.sqrt((1 - result.r ** 2) / (result.n - 2))
    assert result.r + stats.scipy_stats.t.ppf(0.975, result.n - 2) * se > 1  # the naive interval would leave it
    assert -1 <= result.ci_low < result.r < result.ci_high < 1
    assert result.ci_high - result.r < result.r - result.ci_low  # and is asymmetric, as r's sampling law is


def test_identical_replicates_count_once():
    """Ten greedy trajectories of one prompt under ten seeds are one unit, not ten."""
    values = {0: {f"seed{s}": 0.9 for s in range(10)} | {"b": 0.8, "c": 0.85}}
    fingerprints = {f"seed{s}": "the same greedy tokens" for s in range(10)} | {"b": "other tokens", "c": "more"}
    finding = _claim(C.Level("share", values, 0.5, "above", fingerprints=fingerprints, percent=False))
    assert "on 3 items" in finding.statistic and "9 identical replicates counted once" in finding.statistic
    counted = _claim(C.Level("share", values, 0.5, "above", percent=False))
    assert "on 12 items" in counted.statistic  # without fingerprints every seed would be a unit


# ---------------------------------------------------------------- the report's own numbers

def test_the_same_rule_applied_to_the_reports_own_numbers():
    a, b = _rows(150, 40, 10, 0)
    # SST-2 super-additivity: 94.7% vs 92.0% of 200 items; no pairing of 200 items makes 2.7 points significant
    sst2 = _claim(_paired({0: a}, {0: b}, reported=(0.947, 0.920), reported_n=200))
    assert sst2.self_check == C.UNSUPPORTED and "most favourable" in sst2.self_detail
    # AG News: 88.9% vs 79.0%: significant however the items pair
    agnews = _claim(_paired({0: a}, {0: b}, reported=(0.889, 0.790), reported_n=200))
    assert agnews.self_check == C.SUPPORTED
    middle = _claim(_paired({0: a}, {0: b}, reported=(0.60, 0.52), reported_n=200))
    assert middle.self_check == C.UNDECIDABLE
    assert _claim(_paired({0: a}, {0: b})).self_check == C.NO_NUMBERS


def test_a_reports_reference_below_its_own_chance_fails_the_floor():
    a, b = _rows(150, 40, 10, 0)
    reference = C.Reference("text relay", _outcomes(b), chance=0.0)
    finding = _claim(_paired({0: a}, {0: b}, references=[reference], reported=(0.215, 0.02), reported_n=200,
                             reported_chance={"text relay": 0.02, "chance": 0.013}))
    assert finding.self_check == C.UNSUPPORTED and "does not beat its chance" in finding.self_detail
    # a rate at or below chance fails at any n, so the report need not give one (SST-2 prompt tuning 49.5% vs 50%)
    no_n = _claim(_paired({0: a}, {0: b}, references=[reference], reported=(0.967, 0.495),
                          reported_chance={"text relay": 0.495, "chance": 0.5}))
    assert no_n.self_check == C.UNSUPPORTED and "is not above its chance 50.0%" in no_n.self_detail


def test_win_counts_and_correlations_of_the_report_are_checked():
    wins = {f"p{i}": (1.0 if i < 20 else -1.0) for i in range(35)}
    finding = _claim(C.Majority("neural wins", wins, reported_wins=20, reported_n=35))
    assert finding.self_check == C.UNSUPPORTED and finding.verdict in (C.UNDERPOWERED, C.NOT_REPRODUCED)
    corr = _claim(C.Correlation("r", [1, 2, 3, 4, 5], [1, 2, 3, 5, 4], "positive", reported_r=0.3, reported_n=10))
    assert corr.self_check == C.UNSUPPORTED


def test_findings_come_only_from_the_engine():
    from harness.report.tables import findings_table

    made = _claim(C.ByConstruction("the ranges force it"))
    assert made.verdict == C.DESIGN and made.from_engine
    assert len(findings_table([made]).rows) == 1
    forged = C.Finding("x", "", "", "", "", "", "", "", C.REPRODUCED, C.SUPPORTED, "")
    with pytest.raises(ValueError, match="not decided by the claims engine"):  # a page refuses a kind-made verdict
        findings_table([made, forged])
    assert math.isnan(stats.paired_power(0, 0.1, 0.1))


# ---------------------------------------------------------------- cases a review found

def test_unequal_seed_counts_drop_no_seed():
    """Three seeds against two: each of a's seeds meets b's mean, so a seed that reverses is seen."""
    a = {0: [1] * 100, 1: [1] * 100, 2: [0] * 100}
    b = {0: [1] * 30 + [0] * 70, 1: [1] * 30 + [0] * 70}
    finding = _claim(_paired(a, b))
    assert finding.verdict == C.MIXED and "2: -30.0 pts" in finding.seeds


def test_the_sign_flip_test_counts_ties_at_any_scale():
    big = [871.6213571577978] * 9 + [-871.6213571577978] * 5
    assert stats.paired_difference_test(big).pvalue == pytest.approx(stats.sign_test_pvalue(9, 5))
    assert stats.paired_difference_test([244119.63] * 12).pvalue == pytest.approx(2 / 2 ** 12)


def test_a_reversal_made_by_invalid_outputs_is_untestable_too():
    n = 200
    a = [0] * 80 + [1] * 60 + [0] * 60   # invalid on the first 80 items, right on 60 of the other 120
    b = [1] * 60 + [0] * 20 + [1] * 30 + [0] * 90
    valid_a = {0: {f"i{i}": i >= 80 for i in range(n)}}
    e = C.Paired("bridge", "relay", _outcomes(a), _outcomes(b), "above", valid_a=valid_a)
    finding = _claim(e)
    assert finding.verdict == C.UNTESTABLE and "decided by invalid outputs" in finding.statistic


def test_a_reported_p_without_a_direction_is_undecidable_and_the_floor_comes_first():
    a, b = _rows(150, 40, 10, 0)
    assert _claim(_paired({0: a}, {0: b}, reported_p=0.001)).self_check == C.UNDECIDABLE
    reference = C.Reference("receiver text", _outcomes(b), chance=0.0)
    floor_first = _claim(_paired({0: a}, {0: b}, references=[reference], reported_p=0.001, reported_n=200,
                                 reported_chance={"receiver text": 0.01, "chance": 0.013}))
    assert floor_first.self_check == C.UNSUPPORTED and "at chance" in floor_first.self_detail


def test_every_unit_tied_is_not_detected_and_a_level_mde_stays_possible():
    tied = _claim(C.Majority("wins", {f"p{i}": 0.0 for i in range(10)}))
    assert tied.verdict == C.NOT_DETECTED and "ties" in tied.power and "nan" not in tied.power
    level = _claim(C.Level("share", _outcomes([1] * 9 + [0]), 0.8, "above"))
    assert "MDE" not in level.power or float(level.power.split("MDE ")[1].split("%")[0]) <= 20.0


def test_power_keeps_the_disagreement_the_data_show():
    """39% vs 33% claimed, 6 items for a and 5 for b observed: the 5 items b wins stay in the power calculation."""
    a, b = _rows(60, 6, 5, 129)
    finding = _claim(_paired({0: a}, {0: b}, reported=(0.39, 0.33)))
    power = float(finding.power.split("power ")[1].split(" ")[0])
    assert 0.6 < power < 0.8 and finding.verdict == C.UNDERPOWERED


# ---------------------------------------------------------------- cases a second review found

def test_invalid_outputs_are_re_tested_always_and_decide_when_the_decisions_differ():
    """Three seeds. (1) The bridge wins only on items the baseline answers invalidly: significant on all items,
    nothing on the valid ones. (2) The baseline's invalid outputs hide a real loss of the bridge: nothing on all
    items, a significant effect on the valid ones. Both: invalid outputs decide it. (3) Agreeing tests: the
    valid-items result is still shown."""
    n = 120
    a = {s: [1] * 60 + [0] * 60 for s in range(3)}
    b = {0: [0] * 60 + [0] * 60}
    valid_b = {0: {f"i{k}": k >= 60 for k in range(n)}}  # the baseline's first 60 answers are unparseable
    one = _claim(_paired(a, b, valid_b=valid_b))
    assert one.verdict == C.UNTESTABLE and "decided by invalid outputs" in one.statistic
    assert "on the 60 items both answered validly: Δ +0.0 pts" in one.statistic
    a2 = {s: [1] * 30 + [0] * 30 + [0] * 60 for s in range(3)}  # bridge right on 30 items the baseline garbles
    b2 = {0: [0] * 60 + [1] * 45 + [0] * 15}  # and the baseline right on 45 of the 60 valid ones, where a has 0
    valid = {0: {f"i{k}": k >= 60 for k in range(n)}}
    two = _claim(_paired(a2, b2, valid_b=valid))
    assert two.verdict == C.UNTESTABLE and "p 1" not in two.statistic.split("validly")[1]
    three = _claim(_paired({s: [1] * 100 + [0] * 20 for s in range(3)}, {0: [0] * 100 + [0] * 20},
                           valid_b={0: {f"i{k}": k != 119 for k in range(n)}}))
    assert three.verdict == C.REPRODUCED and "on the 119 items both answered validly" in three.statistic


def test_a_decisive_failure_of_one_part_decides_the_claim():
    a, b = _rows(50, 5, 40, 105)  # a falls well below b: reversed
    floor = C.Reference("receiver text", _outcomes([0] * 200), chance=0.5)
    untestable = _paired({0: a}, {0: b}, references=[floor])
    assert _claim(untestable).verdict == C.UNTESTABLE
    assert _claim(untestable, _paired({0: a}, {0: b})).verdict == C.REVERSED
    assert _claim(untestable, C.Untestable("a run is missing", not_run=True)).verdict == C.NOT_RUN


def test_an_event_per_run_absent_from_too_few_runs_is_underpowered():
    one = _claim(C.PerRun("collapse", {0: False}, {0: "no"}))
    assert one.verdict == C.UNDERPOWERED and "probability 0.50" in one.power
    three = _claim(C.PerRun("collapse", {0: False, 1: False, 2: False}, {s: "no" for s in range(3)}))
    assert three.verdict == C.NOT_REPRODUCED and "probability 0.88" in three.power


def test_a_no_change_claim_checks_the_reports_point_estimate_against_the_margin():
    flat = {0: {f"u{i}": v for i, v in enumerate(np.random.default_rng(0).normal(0, 0.001, 30))}}
    outside = _claim(C.NoChange("InfoNCE - ln B", flat, margin=0.05, reported_mean=-0.053))
    assert outside.verdict == C.REPRODUCED and outside.self_check == C.UNSUPPORTED
    assert "lies outside ±0.05" in outside.self_detail
    inside = _claim(C.NoChange("InfoNCE - ln B", flat, margin=0.05, reported_mean=-0.012))
    assert inside.self_check == C.UNDECIDABLE


def _levels(rates_by_seed: dict[int, list[float]], n: int = 200, seed: int = 0) -> list:
    """Four token counts; each seed's per-item right/wrong outcomes at the given rates (items shared)."""
    rng = np.random.default_rng(seed)
    draws = rng.random(n)  # one difficulty per item, so levels are paired by item
    levels = []
    for k, tokens in enumerate((16, 32, 64, 128)):
        outcomes = {s: {f"i{i}": float(draws[i] < rates[k]) for i in range(n)} for s, rates in rates_by_seed.items()}
        levels.append((tokens, f"{tokens} tokens", outcomes))
    return levels


def test_a_trend_over_every_level_needs_each_seed_and_no_step_against_it():
    falling = _levels({0: [0.4, 0.3, 0.2, 0.1], 1: [0.42, 0.3, 0.22, 0.1], 2: [0.38, 0.28, 0.2, 0.12]})
    finding = _claim(C.Trend("accuracy", falling, "decreasing", reported=[0.215, 0.135, 0.075, 0.01], reported_n=200))
    assert finding.verdict == C.REPRODUCED and "slope per doubling -8.0 pts" in finding.statistic
    assert finding.self_check == C.SUPPORTED and finding.power.startswith("power ")
    one_seed_rises = _levels({0: [0.4, 0.3, 0.2, 0.1], 1: [0.4, 0.3, 0.2, 0.1], 2: [0.1, 0.2, 0.3, 0.4]})
    assert _claim(C.Trend("accuracy", one_seed_rises, "decreasing")).verdict == C.MIXED
    bump = _levels({s: [0.4, 0.1, 0.35, 0.05] for s in range(3)})  # falls overall, but 32 -> 64 rises significantly
    bumped = _claim(C.Trend("accuracy", bump, "decreasing"))
    assert bumped.verdict == C.NOT_REPRODUCED and "32 tokens -> 64 tokens" in bumped.statistic
    flat = _levels({s: [0.2, 0.2, 0.2, 0.2] for s in range(3)})
    assert _claim(C.Trend("accuracy", flat, "decreasing", reported=[0.215, 0.135, 0.075, 0.01])).verdict \
        == C.NOT_REPRODUCED
    not_monotone = _claim(C.Trend("accuracy", falling, "decreasing", reported=[0.2, 0.25, 0.1, 0.05]))
    assert not_monotone.self_check == C.UNSUPPORTED and "do not move one way" in not_monotone.self_detail


def test_a_bounded_level_searches_its_detectable_effect_within_its_range():
    values = {0: {f"p{i}": v for i, v in enumerate(np.random.default_rng(1).normal(0.9, 0.02, 12))}}
    finding = _claim(C.Level("top_p", values, 0.9, "above", percent=False, bounds=(0.0, 1.0)))
    mde = float(finding.power.split("MDE ")[1].split(" ")[0])
    assert 0 < mde <= 0.1
