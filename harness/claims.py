"""The claims engine: one rule set decides every verdict of every kind, stated once (RULES, rendered as
reports/verdict_rules.md, which every verdict links to).

A kind declares which claims of a report its experiment tests (`Claim`) and supplies their evidence: paired
per-unit outcomes per training seed (`Paired`), per-unit values against a level (`Level`), one outcome per training
run (`PerRun`), values that should not move (`NoChange`), a correlation (`Correlation`), wins over paired units
(`Majority`), an outcome the harness's own construction guarantees (`ByConstruction`), or a reason the claim cannot
be tested here (`Untestable`). `decide` turns a claim into a `Finding`: the verdict, the statistic over all seeds,
the power, and the same rule applied to the report's own numbers. Kinds never write a verdict word.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np

from harness import stats

ALPHA = 0.05
POWER = 0.8
PER_RUN_RATE = 0.5  # the per-run event rate a run count is powered against (a report's one run gives no rate)

# ------------------------------------------------------------------------------------------- the vocabulary
REPRODUCED = "reproduced in kind"
MIXED = "mixed across seeds"
NOT_REPRODUCED = "not reproduced"
REVERSED = "not reproduced (reversed)"
UNDERPOWERED = "not detected (underpowered)"
NOT_DETECTED = "not detected"
INCONCLUSIVE = "inconclusive"
UNTESTABLE = "not testable at this scale"
DESIGN = "design consequence"
NOT_RUN = "not run"
VERDICTS = (REPRODUCED, MIXED, NOT_REPRODUCED, REVERSED, UNDERPOWERED, NOT_DETECTED, INCONCLUSIVE, UNTESTABLE,
            DESIGN, NOT_RUN)

SUPPORTED = "supported by the report's own data"
UNSUPPORTED = "unsupported by the report's own data"
UNDECIDABLE = "undecidable from the report's numbers"
NO_NUMBERS = "the report gives too few numbers"
SELF_CHECKS = (SUPPORTED, UNSUPPORTED, UNDECIDABLE, NO_NUMBERS)

RULES_PAGE = "verdict_rules.md"
ANCHORS = {REPRODUCED: "reproduced-in-kind", MIXED: "mixed-across-seeds", NOT_REPRODUCED: "not-reproduced",
           REVERSED: "not-reproduced", UNDERPOWERED: "not-detected-underpowered", NOT_DETECTED: "not-detected",
           INCONCLUSIVE: "inconclusive", UNTESTABLE: "not-testable-at-this-scale", DESIGN: "design-consequence",
           NOT_RUN: "not-run", SUPPORTED: "the-reports-own-numbers", UNSUPPORTED: "the-reports-own-numbers",
           UNDECIDABLE: "the-reports-own-numbers", NO_NUMBERS: "the-reports-own-numbers"}

# The rule set, stated once: (anchor, title, text). reports/verdict_rules.md is rendered from it.
RULES: list[tuple[str, str, str]] = [
    ("scope", "What a verdict is about",
     "A verdict says whether the report's effect appears in this run, at this run's scale (its models, items and "
     "budgets), decided over every training seed. On the local profile the models differ from the report's, so a "
     "verdict there is about the effect in kind, never about the report's numbers. Every test is two-sided at "
     f"alpha = {ALPHA}; each claim is tested on its own (a replication of one named claim, not a family search)."),
    ("reproduced-in-kind", REPRODUCED,
     "The claimed effect is significant over all seeds together in the reported direction, every training seed "
     "shows that direction on its own, and nothing below makes the comparison untestable. Paired comparisons "
     "(method A against method B on the same items) take each item as one unit: its difference is A's outcome "
     "averaged over A's seeds minus B's averaged over B's, so seeds never count as extra items. With one seed and "
     "right/wrong outcomes this is McNemar's exact test; otherwise the sign-flip (paired randomisation) test of the "
     "mean difference, exact up to 16 differing items and a seeded 20,000-resample estimate beyond. A claim about a "
     "level (a rate above or below a value) uses the one-sample test of the per-unit means against it (exact "
     "binomial over units when each unit has one right/wrong outcome: one seed, or every seed agreeing on it). A claim naming several comparisons needs every one (an "
     "intersection-union test: no multiplicity correction is due): a decisive failure of any one (reversed, "
     "absent with power, mixed) decides the claim, else the weakest part does. The p-value treats the trained models as given; "
     "what guards against an effect of one lucky training run is the rule that every seed must show the direction."),
    ("mixed-across-seeds", MIXED,
     "Significant over all seeds, but at least one training seed points the other way (or no way): the effect "
     "does not survive retraining, so it is not reproduced in kind. For an outcome that is one event per training "
     "run (a loss that explodes, codes that collapse), some runs show it and some do not."),
    ("not-reproduced", NOT_REPRODUCED,
     "Testable, and absent or reversed: not significant although the test had at least 80% power to see the "
     "report's own effect size at this run's size (capped at what the compared baseline leaves possible: a method "
     "cannot fall below 0% or rise above 100%), or significant in the opposite direction (shown as 'not reproduced "
     f"(reversed)'). An event per training run that no run shows is not reproduced when the runs had {POWER:.0%} "
     f"power to show an event that happens in half of all runs ({PER_RUN_RATE:.0%}, this project's choice: a "
     "report's one run gives no rate), i.e. at least three runs; with fewer it is not detected (underpowered). A claim of no change is not "
     "reproduced when a change is significant."),
    ("not-detected-underpowered", UNDERPOWERED,
     "Not significant, and the test could not have seen the report's effect: power below 80% at the reported effect "
     "size. The minimum detectable effect (80% power) is given beside it. Absence of evidence, not evidence of "
     "absence."),
    ("not-detected", NOT_DETECTED,
     "Not significant, and the report gives no effect size to judge the power by; the minimum detectable effect is "
     "given."),
    ("inconclusive", INCONCLUSIVE,
     "A claim of no change or a constant (\"stays constant\", \"not significant\") is an equivalence test (two "
     "one-sided tests, TOST) with a margin stated in the spec and labelled as this project's choice: reproduced in "
     "kind when the 90% interval lies inside the margin (and every seed's estimate does), not reproduced when a "
     "change is significant, inconclusive when neither. An interval that merely contains 0 shows nothing."),
    ("not-testable-at-this-scale", UNTESTABLE,
     "The comparison cannot say anything here. (1) Floors: every reference method of a comparison must beat the "
     "random baseline on the same items by its own 95% interval (Wilson; every seed of a trained one): the lower "
     "bound above the random baseline's observed rate or the analytic chance rate, whichever is higher. The reference "
     "methods are the compared baselines and, for a text relay, also the receiver reading the text itself, because "
     "the relay passes through the receiver: if the receiver cannot do the task, a relay's fall says nothing about "
     "the relay. "
     "A baseline at chance makes 'beats it' untestable. (2) Invalid outputs: where outputs can be invalid "
     "(unparseable), the comparison is repeated on the items both methods answered validly and shown (a "
     "sensitivity check: which items are valid depends on the methods); if its decision differs from the one on all "
     "items (a significant effect either way on one, none or the other way on the other), invalid outputs decide "
     "it. (3) Budgets: compared trained "
     "methods must have the same steps, batch and evaluation items. (4) The data the claim needs are missing "
     "(named)."),
    ("design-consequence", DESIGN,
     "The harness's own construction guarantees the outcome (named on the row), so the run cannot test the claim."),
    ("not-run", NOT_RUN, "The run the claim needs has not been made under this profile."),
    ("the-reports-own-numbers", "The report's own numbers",
     "Wherever the report gives enough numbers (n and the compared rates, d and p, win counts, r and n, a rate and its "
     "n), the same rule is applied to them: supported by the report's own data, unsupported by them, undecidable from "
     "them, or the report gives too few numbers. Paired rates without the pairing: supported when even the least "
     "favourable pairing of items consistent with the two rates is significant, unsupported when even the most "
     "favourable is not (the gap is within chance at its n), undecidable between. A report's reference method that "
     "does not beat its own chance rate fails the floor. The rules are the standard tests for data of that shape, so "
     "when the report's own numbers fail one the row says why, and it is the claim that is unsupported: a gap within "
     "chance, a claim resting on too few cases (one trajectory, two prompts), or its own test not significant. Where a "
     "threshold or margin is this project's, the row says so, and a reader may judge that choice instead."),
    ("replicates", "Replicates",
     "Units that are identical by construction (greedy decoding of the same prompt under another seed) count once. "
     "Correlations get Fisher-z intervals, which stay inside [-1, 1]."),
]


# ------------------------------------------------------------------------------------------------- evidence
Outcomes = dict  # training seed -> {unit id -> outcome in [0, 1] or a number}


@dataclass
class Reference:
    """A method a comparison rests on, which must beat the random baseline on the same items (the floor)."""

    name: str
    outcomes: Outcomes  # seed -> unit -> 0/1 (or digit accuracy in [0, 1])
    chance: float  # the random baseline's observed rate on the same items, or the analytic chance rate
    chance_name: str = "the random baseline"


@dataclass
class Paired:
    """Method `a` against method `b` on the same units, per training seed (a deterministic method has one key)."""

    a_name: str
    b_name: str
    a: Outcomes
    b: Outcomes
    direction: str  # "above": a beats b; "below": a falls below b
    valid_a: Outcomes | None = None  # seed -> unit -> bool (a parseable output); None: outputs cannot be invalid
    valid_b: Outcomes | None = None
    references: list[Reference] = field(default_factory=list)
    budgets: dict[str, str] | None = None  # trained method -> its budget, written out ("250 steps x batch 8")
    reported: tuple[float, float] | None = None  # the report's rates of a and b
    reported_n: int | None = None
    reported_chance: dict[str, float] | None = None  # the report's rates of its references and its chance rate
    reported_p: float | None = None  # the report's own two-sample test of a against b, when it gives one
    reported_d: float | None = None  # ... or its standardised difference (Cohen's d) over reported_n units per side
    effect_sd: float | None = None  # the spread d is standardised by here: turns a reported d into an effect to power
    unit: str = "items"
    scale: float = 100.0  # 100: outcomes are rates, effects shown in percentage points; 1: plain values
    bounds: tuple[float, float] = (0.0, 1.0)  # the range an outcome can take (caps the effect a test can see)


@dataclass
class Level:
    """Per-unit values against a level: the claim is that their mean lies above (or below) `threshold`."""

    name: str
    values: Outcomes  # seed -> unit -> value
    threshold: float
    direction: str  # "above" | "below"
    chosen_by: str = "the report"  # who set the threshold ("this project" when the report gives none)
    reported: float | None = None  # the report's own value of the statistic
    reported_n: int | None = None
    fingerprints: dict | None = None  # unit -> what makes it (identical fingerprints: one replicate)
    unit: str = "items"
    percent: bool = True
    bounds: tuple[float, float] | None = None  # the range a value can take; a rate's is [0, 1]


@dataclass
class PerRun:
    """One outcome per training run (seed): the claimed event happened (True) or not."""

    name: str
    happened: dict  # seed -> bool
    detail: dict  # seed -> a short text of what was measured
    reported: bool | None = None  # the report's own run showed it


@dataclass
class NoChange:
    """A claim of no change (a constant, 'not significant'): per-unit values whose mean should be 0 within the
    margin the spec states (this project's choice)."""

    name: str
    values: Outcomes  # seed -> unit -> value (a slope, a difference)
    margin: float | None
    reported_mean: float | None = None  # the report's estimate and its standard error, when it gives them
    reported_se: float | None = None
    fingerprints: dict | None = None
    unit: str = "units"
    fmt: str = ".3g"


@dataclass
class Correlation:
    name: str
    x: Sequence[float]
    y: Sequence[float]
    direction: str  # "positive" | "negative"
    reported_r: float | None = None
    reported_n: int | None = None
    unit: str = "prompts"


@dataclass
class Majority:
    """a beats b on most paired units (a sign test over the units, ties dropped)."""

    name: str
    differences: dict  # unit -> a - b
    reported_wins: int | None = None
    reported_n: int | None = None
    unit: str = "prompts"


@dataclass
class Trend:
    """An outcome that moves one way over an ordered axis (more soft tokens, worse accuracy): one run per level on
    the same units, each with its training seeds."""

    name: str
    levels: list  # (x, label, outcomes: seed -> unit -> value), in axis order
    direction: str  # "decreasing" | "increasing"
    references: list[Reference] = field(default_factory=list)
    budgets: dict[str, str] | None = None
    reported: list[float] | None = None  # the report's value at each level, same order
    reported_n: int | None = None
    reported_chance: dict[str, float] | None = None  # the report's reference rates and its chance rate
    axis: str = "doubling"  # the slope is per doubling of x (log2)
    unit: str = "items"
    scale: float = 100.0


@dataclass
class ByConstruction:
    reason: str


@dataclass
class Untestable:
    reason: str
    not_run: bool = False


Evidence = Union[Paired, Level, PerRun, NoChange, Correlation, Majority, Trend, ByConstruction, Untestable]


@dataclass
class Claim:
    """A report's claim as a kind supplies it: what the report says, where, its numbers, and the evidence."""

    id: str
    statement: str
    section: str
    report: str  # the document: a seed report file or a reference
    reported: str  # the report's numbers, as a reader would quote them
    evidence: list[Evidence]
    note: str = ""
    subject: str = ""  # what the claim is tested on (a spec or a page), for the findings page


# ---------------------------------------------------------------------------------------------- findings
class _EngineMark:
    """The mark only `decide` puts on a finding (tests check every verdict on a page came from one). A finding made
    in another process (the report collects in two) unpickles with this process's mark."""

    def __reduce__(self):
        return (_engine_mark, ())


def _engine_mark() -> "_EngineMark":
    return _ENGINE


_ENGINE = _EngineMark()


@dataclass(frozen=True)
class Finding:
    claim: str
    statement: str
    section: str
    report: str
    reported: str
    statistic: str  # this run, over all seeds
    seeds: str  # the direction per training seed
    power: str  # power at the reported effect and the minimum detectable effect, or why none
    verdict: str
    self_check: str
    self_detail: str
    subject: str = ""
    note: str = ""
    origin: object = field(default=None, repr=False, compare=False)

    @property
    def from_engine(self) -> bool:
        return self.origin is _ENGINE

    def link(self, prefix: str = "") -> str:
        return f"{prefix}{RULES_PAGE}#{ANCHORS[self.verdict]}"


@dataclass
class _Part:
    verdict: str
    statistic: str
    seeds: str = ""
    power: str = ""
    self_check: str = NO_NUMBERS
    self_detail: str = ""


def decide(claim: Claim) -> Finding:
    """The verdict on a claim from its evidence, by the rule set above; a claim with several pieces of evidence
    needs every one."""
    parts = [_decide(e) for e in claim.evidence] or [_Part(UNTESTABLE, "no evidence supplied")]
    verdict = _combine([p.verdict for p in parts])
    check = _combine_checks([p.self_check for p in parts])
    join = lambda attr: "; ".join(dict.fromkeys(getattr(p, attr) for p in parts if getattr(p, attr)))  # noqa: E731
    return Finding(claim.id, claim.statement, claim.section, claim.report, claim.reported, join("statistic"),
                   join("seeds"), join("power"), verdict, check, join("self_detail"), claim.subject, claim.note,
                   _ENGINE)


def _verdict(significant: bool, claimed_way: bool, every_seed: bool, power: float | None) -> str:
    """The one decision of a test: significant the claimed way is reproduced in kind (mixed across seeds unless every
    seed points that way), significant the other way is reversed; a null is not reproduced where the test had the
    power to see the report's effect, underpowered where it had not, and not detected where no effect size gives
    a power."""
    if significant:
        return (REPRODUCED if every_seed else MIXED) if claimed_way else REVERSED
    if power is None:
        return NOT_DETECTED
    return NOT_REPRODUCED if power >= POWER else UNDERPOWERED


def _combine(verdicts: list[str]) -> str:
    """Every part is needed: a decisive failure of any one (reversed, absent with power, mixed) decides the claim
    whatever the others say; otherwise the weakest part does."""
    for word in (REVERSED, NOT_REPRODUCED, MIXED, NOT_RUN, UNTESTABLE, DESIGN, UNDERPOWERED, NOT_DETECTED,
                 INCONCLUSIVE):
        if word in verdicts:
            return word
    return REPRODUCED


def _combine_checks(checks: list[str]) -> str:
    for word in (UNSUPPORTED, UNDECIDABLE, NO_NUMBERS):
        if word in checks:
            return word
    return SUPPORTED


def _decide(evidence: Evidence) -> _Part:
    if isinstance(evidence, Untestable):
        return _Part(NOT_RUN if evidence.not_run else UNTESTABLE, evidence.reason)
    if isinstance(evidence, ByConstruction):
        return _Part(DESIGN, evidence.reason)
    return {Paired: _paired, Level: _level, PerRun: _per_run, NoChange: _no_change, Correlation: _correlation,
            Majority: _majority, Trend: _trend}[type(evidence)](evidence)


# ------------------------------------------------------------------------------------------ paired methods
def _unit_means(outcomes: Outcomes, units: list) -> np.ndarray:
    return np.array([np.mean([float(by_unit[u]) for by_unit in outcomes.values()]) for u in units])


MEAN = "mean"  # a side whose seeds cannot be paired one to one enters a per-seed comparison as its mean over seeds


def _seed_pairs(a: Outcomes, b: Outcomes) -> list[tuple]:
    """(label, a's seed, b's seed): a deterministic side repeats its one run; seeds pair in order when both sides
    have as many; otherwise each of a's seeds meets b's mean over its seeds, so no seed is dropped."""
    a_seeds, b_seeds = list(a), list(b)
    if len(b_seeds) == 1:
        return [(s, s, b_seeds[0]) for s in a_seeds]
    if len(a_seeds) == 1:
        return [(s, a_seeds[0], s) for s in b_seeds]
    if len(a_seeds) != len(b_seeds):
        return [(s, s, MEAN) for s in a_seeds]
    return [(f"{sa}/{sb}" if sa != sb else sa, sa, sb) for sa, sb in zip(a_seeds, b_seeds)]


def _value(outcomes: Outcomes, seed, unit) -> float:
    if seed == MEAN:
        return float(np.mean([float(by_unit[unit]) for by_unit in outcomes.values()]))
    return float(outcomes[seed][unit])


def _valid(flags: Outcomes | None, seed, unit) -> bool:
    if flags is None:
        return True
    if seed == MEAN:
        return all(bool(by_unit[unit]) for by_unit in flags.values())
    return bool(flags[seed][unit])


def _pct(value: float, scale: float = 100.0) -> str:
    return f"{value * scale:+.1f} pts" if scale == 100.0 else f"{value:+.3g}"


def _level_text(value: float, scale: float) -> str:
    return f"{100 * value:.1f}%" if scale == 100.0 else f"{value:.3g}"


def _paired(e: Paired) -> _Part:
    sign = 1 if e.direction == "above" else -1
    if not e.a or not e.b:
        return _Part(UNTESTABLE, f"no outcomes of {e.a_name if not e.a else e.b_name} in this run")
    units = sorted(set.intersection(*[set(o) for o in (*e.a.values(), *e.b.values())]))
    if not units:
        return _Part(UNTESTABLE, f"{e.a_name} and {e.b_name} share no {e.unit}")
    reasons = _floor_failures(e.references, units) + _budget_failure(e.budgets)
    a_mean, b_mean = _unit_means(e.a, units), _unit_means(e.b, units)
    d = a_mean - b_mean
    binary = all(float(v) in (0.0, 1.0) for o in (*e.a.values(), *e.b.values()) for v in o.values())
    single = len(e.a) == 1 and len(e.b) == 1
    test = stats.paired_difference_test(d, binary_single=binary and single)
    per_seed = []
    for label, sa, sb in _seed_pairs(e.a, e.b):
        diff = float(np.mean([_value(e.a, sa, u) - _value(e.b, sb, u) for u in units]))
        per_seed.append((label, diff))
    seeds_text = "per seed " + ", ".join(f"{label}: {_pct(diff, e.scale)}" for label, diff in per_seed) \
        if len(per_seed) > 1 else f"one seed ({per_seed[0][0]})"
    statistic = (f"{e.a_name} {_level_text(a_mean.mean(), e.scale)} vs {e.b_name} {_level_text(b_mean.mean(), e.scale)} "
                 f"on {len(units)} "
                 f"{e.unit}, {len(e.a)} seed(s): Δ {_pct(test.mean_difference, e.scale)}, p {test.pvalue:.2g} "
                 f"({test.method})")
    # power at the report's effect, capped by what the compared method leaves possible here
    low_bound, high_bound = e.bounds
    cap = (high_bound - b_mean.mean()) if sign > 0 else (b_mean.mean() - low_bound)
    power_at = lambda eff: stats.paired_power(len(units), eff, stats.alternative_second_moment(  # noqa: E731
        eff, test.mean_difference, test.second_moment, binary and single))
    mde = stats.minimum_detectable_effect(power_at, cap)
    mde_text = f"MDE {_pct(mde, e.scale).lstrip('+')}" if mde is not None else \
        f"no effect up to the possible {_pct(cap, e.scale).lstrip('+')} is detectable"
    reported_effect, source = None, "reported"
    if e.reported is not None:
        reported_effect = sign * (e.reported[0] - e.reported[1])
    elif e.reported_d is not None and e.effect_sd:
        reported_effect, source = sign * e.reported_d * e.effect_sd, f"reported d {e.reported_d:g}, i.e."
    power = None
    if reported_effect is not None and reported_effect > 0:
        target = min(reported_effect, cap)
        power = power_at(target) if target > 0 else 0.0
        power_text = (f"power {power:.2f} at the {source} {_pct(reported_effect, e.scale).lstrip('+')}"
                      + (f" (capped at the possible {_pct(target, e.scale).lstrip('+')})" if target < reported_effect
                         else "")
                      + f"; {mde_text}")
    else:
        power_text = mde_text
    part = _Part("", statistic, seeds_text, power_text, *self_check(e))
    significant = test.pvalue < ALPHA
    if reasons:
        part.verdict = UNTESTABLE
        part.statistic = "; ".join(reasons) + f" ({statistic})"
        return part
    valid_text, decided_by_invalid = _valid_items_test(e, units, _decision(test))
    if valid_text:
        part.statistic = f"{statistic}; {valid_text}"
    if decided_by_invalid:
        part.verdict = UNTESTABLE
        part.statistic = f"decided by invalid outputs: {part.statistic}"
        return part
    part.verdict = _verdict(significant, sign * test.mean_difference > 0,
                            all(sign * diff > 0 for _, diff in per_seed), power)
    return part


def _floor_failures(references: list[Reference], units: list) -> list[str]:
    failures = []
    for ref in references:
        for seed, by_unit in ref.outcomes.items():
            values = [float(by_unit[u]) for u in units if u in by_unit]
            if not values:
                failures.append(f"no outcomes of {ref.name} on these items")
                continue
            low, rate = _lower_bound(values), float(np.mean(values))
            if not low > ref.chance:
                seed_text = f" (seed {seed})" if len(ref.outcomes) > 1 else ""
                failures.append(f"{ref.name}{seed_text} {100 * rate:.1f}% (95% lower bound {100 * low:.1f}%) does not "
                                f"beat {ref.chance_name} at {100 * ref.chance:.1f}% on the same items")
                break
    return failures


def _lower_bound(values: list[float]) -> float:
    """The 95% lower bound of a rate (Wilson) or of a mean of fractional outcomes (t)."""
    if all(v in (0.0, 1.0) for v in values):
        return stats.wilson_interval(int(sum(values)), len(values))[0]
    low, _ = stats.mean_interval(values)
    return low if low == low else float(np.mean(values))


def _budget_failure(budgets: dict[str, str] | None) -> list[str]:
    if budgets and len(set(budgets.values())) > 1:
        return ["unequal training budgets (" + ", ".join(f"{m} {b}" for m, b in budgets.items()) + ")"]
    return []


def _decision(test) -> int:
    """+1 / -1: a significant difference either way; 0: none."""
    return 0 if test.pvalue >= ALPHA else (1 if test.mean_difference > 0 else -1)


def _valid_items_test(e: Paired, units: list, decision: int) -> tuple[str, bool]:
    """The comparison on the items both methods answered validly (shown whenever an output was invalid), and
    whether its decision (an effect either way, or none) differs from the one on all items: then invalid outputs
    decide the comparison."""
    if e.valid_a is None and e.valid_b is None:
        return "", False
    diffs, invalid = [], 0
    for u in units:
        per_seed = []
        for _, sa, sb in _seed_pairs(e.a, e.b):
            if _valid(e.valid_a, sa, u) and _valid(e.valid_b, sb, u):
                per_seed.append(_value(e.a, sa, u) - _value(e.b, sb, u))
            else:
                invalid += 1
        if per_seed:
            diffs.append(float(np.mean(per_seed)))
    if not invalid:
        return "", False
    if len(diffs) < 2:
        return f"no item has valid outputs of both {e.a_name} and {e.b_name}", True
    single = len(e.a) == 1 and len(e.b) == 1
    test = stats.paired_difference_test(diffs, binary_single=single and all(x in (-1.0, 0.0, 1.0) for x in diffs))
    text = (f"on the {len(diffs)} {e.unit} both answered validly: Δ {_pct(test.mean_difference, e.scale)}, "
            f"p {test.pvalue:.2g}")
    return text, _decision(test) != decision


def _paired_self_check(e: Paired) -> tuple[str, str]:
    """The same comparison on the report's numbers: its references against its chance rate, then its own two-sample
    test where it gives one (p, or d over n per side), else its rates and n over every pairing of items those allow."""
    sign = 1 if e.direction == "above" else -1
    chance = (e.reported_chance or {}).get("chance")
    for ref in e.references:  # a rate at or below chance fails the floor at any n
        rate = (e.reported_chance or {}).get(ref.name)
        if rate is not None and chance is not None and rate <= chance:
            return UNSUPPORTED, (f"the report's {ref.name} {100 * rate:.1f}% is not above its chance "
                                 f"{100 * chance:.1f}%: the comparison rests on a baseline at chance")
    if e.reported_n:
        for ref in e.references:
            rate = (e.reported_chance or {}).get(ref.name)
            if rate is not None and chance is not None:
                low = stats.wilson_interval(round(rate * e.reported_n), e.reported_n)[0]
                if not low > chance:
                    return UNSUPPORTED, (f"the report's {ref.name} {100 * rate:.1f}% (lower bound {100 * low:.1f}%, "
                                         f"n {e.reported_n}) does not beat its chance {100 * chance:.1f}%: the "
                                         f"comparison rests on a baseline at chance")
    if e.reported_p is not None or (e.reported_d is not None and e.reported_n):
        effect = e.reported_d if e.reported_d is not None else (e.reported[0] - e.reported[1] if e.reported else None)
        if e.reported_p is not None:
            pvalue, how = e.reported_p, f"its own test: p {e.reported_p:.3g}"
        else:
            t = e.reported_d * math.sqrt(e.reported_n / 2)
            pvalue = float(2 * stats.scipy_stats.t.sf(abs(t), 2 * e.reported_n - 2))
            how = f"d {e.reported_d:g} over {e.reported_n} per side: two-sample t {t:.2f}, p {pvalue:.2g}"
        if effect is None:
            return UNDECIDABLE, how + "; the report gives no direction for it"
        holds = pvalue < ALPHA and sign * effect > 0
        return (SUPPORTED, how) if holds else (UNSUPPORTED, how + ("; not significant" if pvalue >= ALPHA
                                                                   else "; in the other direction"))
    if e.reported is None or not e.reported_n:
        return NO_NUMBERS, ""
    n = int(e.reported_n)
    rate_a, rate_b = e.reported
    hits_a, hits_b = round(rate_a * n), round(rate_b * n)
    if sign * (hits_a - hits_b) <= 0:
        return UNSUPPORTED, f"the report's own rates ({100 * rate_a:.1f}% vs {100 * rate_b:.1f}%) point the other way"
    both = max(0, hits_a + hits_b - n)  # least favourable: as few items right for both as the rates allow
    worst = stats.mcnemar_test(*_pairs(n, hits_a - both, hits_b - both, both), exact=True).pvalue
    best = stats.mcnemar_test(*_pairs(n, max(hits_a - hits_b, 0), max(hits_b - hits_a, 0), min(hits_a, hits_b)),
                              exact=True).pvalue
    detail = (f"{100 * rate_a:.1f}% vs {100 * rate_b:.1f}% of {n}: McNemar p between {best:.2g} (most favourable "
              f"pairing) and {worst:.2g} (least)")
    if worst < ALPHA:
        return SUPPORTED, detail
    if best >= ALPHA:
        return UNSUPPORTED, detail + f"; a {abs(100 * (rate_a - rate_b)):.1f}-point gap on {n} items is within chance"
    return UNDECIDABLE, detail + "; it depends on how the items pair, which the report does not give"


def _pairs(n: int, only_a: int, only_b: int, both: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * only_a + [False] * only_b
    b = [True] * both + [False] * only_a + [True] * only_b
    rest = n - len(a)
    return a + [False] * rest, b + [False] * rest


# ------------------------------------------------------------------------------------------------- trends
def _slope(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def _trend(e: Trend) -> _Part:
    """The per-unit least-squares slope over the levels (log2 of x; each level's outcome averaged over its seeds),
    tested over units by the sign-flip test; every seed's slope must point the claimed way, and no step between
    neighbouring levels may go significantly the other way (the claim is of a monotone trend)."""
    sign = 1 if e.direction == "increasing" else -1
    if len(e.levels) < 2 or any(not outcomes for _, _, outcomes in e.levels):
        return _Part(UNTESTABLE, f"{e.name}: a level has no run")
    units = sorted(set.intersection(*[set(o) for _, _, outcomes in e.levels for o in outcomes.values()]))
    if len(units) < 2:
        return _Part(UNTESTABLE, f"{e.name}: the levels share {len(units)} {e.unit}")
    x = np.log2([float(level[0]) for level in e.levels])
    means = np.array([_unit_means(outcomes, units) for _, _, outcomes in e.levels])  # level x unit
    slopes = np.array([_slope(x, means[:, k]) for k in range(len(units))])
    test = stats.paired_difference_test(slopes)
    reasons = _floor_failures(e.references, units) + _budget_failure(e.budgets)
    seeds = [s for s in e.levels[0][2] if all(s in outcomes for _, _, outcomes in e.levels)]
    per_seed = {s: _slope(x, np.array([np.mean([float(outcomes[s][u]) for u in units])
                                       for _, _, outcomes in e.levels])) for s in seeds}
    against = []
    for (_, la, oa), (_, lb, ob) in zip(e.levels, e.levels[1:]):
        step = stats.paired_difference_test(_unit_means(ob, units) - _unit_means(oa, units))
        if step.pvalue < ALPHA and sign * step.mean_difference < 0:
            against.append(f"{la} -> {lb}: {_pct(step.mean_difference, e.scale)}, p {step.pvalue:.2g}")
    level_text = ", ".join(f"{label} {_level_text(m, e.scale)}" for (_, label, _), m in zip(e.levels, means.mean(1)))
    statistic = (f"{e.name}: {level_text} on {len(units)} {e.unit}; slope per {e.axis} "
                 f"{_pct(test.mean_difference, e.scale)}, p {test.pvalue:.2g} ({test.method} over per-{e.unit[:-1]} "
                 f"slopes)" + (f"; against the trend: {'; '.join(against)}" if against else ""))
    seeds_text = "slope per seed " + ", ".join(f"{s}: {_pct(v, e.scale)}" for s, v in per_seed.items()) \
        if len(per_seed) > 1 else ""
    power_at = lambda eff: stats.paired_power(len(units), eff, stats.alternative_second_moment(  # noqa: E731
        eff, test.mean_difference, test.second_moment, False))
    span = float(np.ptp(x)) or 1.0
    mde = stats.minimum_detectable_effect(power_at, 1.0 / span if e.scale == 100.0 else 10 * abs(slopes).max() + 1)
    power_text = f"MDE {_pct(mde, e.scale).lstrip('+')} per {e.axis}" if mde is not None else ""
    power = None
    if e.reported is not None and len(e.reported) == len(e.levels):
        reported_slope = _slope(x, np.array(e.reported, dtype=float))
        if sign * reported_slope > 0:
            power = power_at(abs(reported_slope))
            power_text = f"power {power:.2f} at the reported {_pct(reported_slope, e.scale)} per {e.axis}; {power_text}"
    part = _Part("", statistic, seeds_text, power_text.strip("; "), *_trend_self_check(e, x))
    significant = test.pvalue < ALPHA
    if reasons:
        part.verdict, part.statistic = UNTESTABLE, "; ".join(reasons) + f" ({statistic})"
    elif significant and sign * test.mean_difference > 0 and against:
        part.verdict = NOT_REPRODUCED  # the overall slope goes the claimed way, but a step goes against it
    else:
        part.verdict = _verdict(significant, sign * test.mean_difference > 0,
                                all(sign * v > 0 for v in per_seed.values()), power)
    return part


def _trend_self_check(e: Trend, x: np.ndarray) -> tuple[str, str]:
    """The report's levels: monotone the claimed way, then its first and last level as a paired comparison."""
    if e.reported is None or len(e.reported) != len(e.levels):
        return NO_NUMBERS, ""
    sign = 1 if e.direction == "increasing" else -1
    steps = np.diff(np.array(e.reported, dtype=float))
    if not all(sign * d > 0 for d in steps):
        return UNSUPPORTED, "the report's own levels (" + ", ".join(_level_text(v, e.scale) for v in e.reported) + \
            ") do not move one way"
    first, last = e.levels[0][1], e.levels[-1][1]
    check = _paired_self_check(Paired(last, first, {}, {}, "above" if sign > 0 else "below",
                                      references=e.references, reported=(e.reported[-1], e.reported[0]),
                                      reported_n=e.reported_n, reported_chance=e.reported_chance))
    return check[0], "monotone; " + check[1] if check[1] else "monotone"


# ------------------------------------------------------------------------------------------------ levels
def _distinct_units(values: Outcomes, fingerprints: dict | None) -> tuple[Outcomes, int]:
    """Drop units whose fingerprint repeats an earlier unit's (identical by construction); returns how many."""
    if not fingerprints:
        return values, 0
    seen, keep = set(), set()
    for unit in sorted(fingerprints, key=str):
        if fingerprints[unit] not in seen:
            seen.add(fingerprints[unit])
            keep.add(unit)
    dropped = len(fingerprints) - len(keep)
    return {s: {u: v for u, v in by_unit.items() if u in keep} for s, by_unit in values.items()}, dropped


def _level(e: Level) -> _Part:
    values, dropped = _distinct_units(e.values, e.fingerprints)
    units = sorted(set.intersection(*[set(v) for v in values.values()])) if values else []
    if len(units) < 2:
        return _Part(UNTESTABLE, f"{e.name}: {len(units)} {e.unit}, too few to test")
    sign = 1 if e.direction == "above" else -1
    means = _unit_means(values, units)
    binary = all(float(v) in (0.0, 1.0) for by_unit in values.values() for v in by_unit.values())
    # one yes/no outcome per unit: one seed, or every seed agreeing on each unit (a t-test over such means would
    # call a unanimous zero spread certain; counting every seed's trajectory as a trial would overcount a unit)
    agreeing = binary and all(float(m) in (0.0, 1.0) for m in means)
    fmt = (lambda v: f"{100 * v:.1f}%") if e.percent else (lambda v: f"{v:.3g}")  # noqa: E731
    if agreeing:
        pvalue = stats.binomial_test(int(means.sum()), len(units), e.threshold)
        method = "exact binomial" + ("" if len(values) == 1 else f" over {e.unit}, every seed agreeing on each")
        if not 0 < e.threshold < 1:
            pvalue = 0.0 if (means.mean() - e.threshold) * sign > 0 else 1.0
    else:
        spread = float(means.std(ddof=1))
        pvalue = stats.one_sample_t_test(means, e.threshold).pvalue if spread > 0 else (
            0.0 if means.mean() != e.threshold else 1.0)
        method = "one-sample t-test over " + e.unit
    mean = float(means.mean())
    per_seed = {s: float(np.mean([by_unit[u] for u in units])) for s, by_unit in values.items()}
    seeds_text = "per seed " + ", ".join(f"{s}: {fmt(v)}" for s, v in per_seed.items()) if len(per_seed) > 1 \
        else f"one seed ({next(iter(per_seed))})"
    chosen = "" if e.chosen_by == "the report" else f", a threshold of {e.chosen_by}'s"
    statistic = (f"{e.name} {fmt(mean)} on {len(units)} {e.unit} vs {'>' if sign > 0 else '<'} {fmt(e.threshold)}"
                 f"{chosen}: p {pvalue:.2g} ({method})" + (f"; {dropped} identical replicates counted once"
                                                           if dropped else ""))
    sd = float(np.sqrt(e.threshold * (1 - e.threshold))) if binary and 0 < e.threshold < 1 else \
        float(means.std(ddof=1)) if len(units) > 1 else 0.0
    power, power_text = None, ""
    if e.reported is not None and sign * (e.reported - e.threshold) > 0:
        power = stats.one_sample_power(len(units), e.reported - e.threshold, sd)
        power_text = f"power {power:.2f} at the reported {fmt(e.reported)}"
    low_bound, high_bound = e.bounds or ((0.0, 1.0) if e.percent else (-math.inf, math.inf))
    room = (high_bound - e.threshold) if sign > 0 else (e.threshold - low_bound)
    if not math.isfinite(room):  # unbounded: search up to ten spreads (or ten units when there is no spread)
        room = 10 * sd if sd > 0 else 10.0
    mde = stats.minimum_detectable_effect(lambda x: stats.one_sample_power(len(units), x, sd), room)
    if mde is not None:
        power_text = "; ".join(t for t in (power_text, f"MDE {fmt(mde)} from the threshold") if t)
    part = _Part("", statistic, seeds_text, power_text, *self_check(e))
    significant = pvalue < ALPHA
    part.verdict = _verdict(significant, sign * (mean - e.threshold) > 0,
                            all(sign * (v - e.threshold) > 0 for v in per_seed.values()), power)
    return part


def _per_run(e: PerRun) -> _Part:
    runs = list(e.happened)
    if not runs:
        return _Part(UNTESTABLE, f"{e.name}: no training run to read")
    shown = [s for s in runs if e.happened[s]]
    detail = "; ".join(f"seed {s}: {e.detail[s]}" if len(runs) > 1 else e.detail[s] for s in runs)
    statistic = f"{e.name}: in {len(shown)} of {len(runs)} run(s)" + (" (one outcome per training run)"
                                                                       if len(runs) > 1 else "")
    power = 1 - (1 - PER_RUN_RATE) ** len(runs)
    power_text = (f"one outcome per training run: {len(runs)} run(s) show an event of per-run rate "
                  f"{PER_RUN_RATE:.0%} at least once with probability {power:.2f}")
    part = _Part("", statistic, detail, power_text, *self_check(e))
    if len(shown) == len(runs):
        part.verdict = REPRODUCED
    elif shown:
        part.verdict = MIXED
    else:
        part.verdict = NOT_REPRODUCED if power >= POWER else UNDERPOWERED
    return part


def _no_change(e: NoChange) -> _Part:
    if e.margin is None:
        return _Part(UNTESTABLE, f"{e.name}: a claim of no change needs an equivalence margin, and the spec states "
                                 f"none")
    values, dropped = _distinct_units(e.values, e.fingerprints)
    units = sorted(set.intersection(*[set(v) for v in values.values()])) if values else []
    if len(units) < 2:
        return _Part(UNTESTABLE, f"{e.name}: {len(units)} {e.unit}, too few for an equivalence test")
    means = _unit_means(values, units)
    test = stats.equivalence_test(means, e.margin)
    per_seed = {s: float(np.mean([by_unit[u] for u in units])) for s, by_unit in values.items()}
    f = lambda v: format(v, e.fmt)  # noqa: E731
    seeds_text = "per seed " + ", ".join(f"{s}: {f(v)}" for s, v in per_seed.items()) if len(per_seed) > 1 else ""
    statistic = (f"{e.name} {f(test.mean)}, 90% interval [{f(test.ci_low)}, {f(test.ci_high)}] on {len(units)} "
                 f"{e.unit} against the margin ±{format(e.margin, e.fmt.replace('+', ''))} (this project's): TOST p "
                 f"{test.pvalue_tost:.2g}, "
                 f"difference from 0 p {test.pvalue_difference:.2g}"
                 + (f"; {dropped} identical replicates counted once" if dropped else ""))
    part = _Part("", statistic, seeds_text, f"TOST power {test.power_at_zero:.2f} if the true change is 0",
                 *self_check(e))
    if test.pvalue_tost < ALPHA and all(abs(v) < e.margin for v in per_seed.values()):
        part.verdict = REPRODUCED
    elif test.pvalue_difference < ALPHA:
        part.verdict = NOT_REPRODUCED
    else:
        part.verdict = INCONCLUSIVE if test.power_at_zero >= POWER else UNDERPOWERED
    return part


def _correlation(e: Correlation) -> _Part:
    result = stats.fisher_z_correlation(e.x, e.y)
    if math.isnan(result.r):
        return _Part(UNTESTABLE, f"{e.name}: {len(e.x)} {e.unit} (a correlation needs at least 4, not constant)")
    sign = 1 if e.direction == "positive" else -1
    statistic = (f"{e.name}: Pearson r {result.r:+.2f}, 95% Fisher-z interval [{result.ci_low:+.2f}, "
                 f"{result.ci_high:+.2f}] over {result.n} {e.unit}, p {result.pvalue:.2g}")
    mde = stats.minimum_detectable_effect(lambda r: stats.correlation_power(result.n, r), 0.999)
    power_text = f"MDE r {mde:.2f}" if mde is not None else ""
    power = None
    if e.reported_r is not None and sign * e.reported_r > 0:
        power = stats.correlation_power(result.n, e.reported_r)
        power_text = f"power {power:.2f} at the reported r {e.reported_r:+.2f}; " + power_text
    part = _Part("", statistic, "", power_text, *self_check(e))
    part.verdict = _verdict(result.pvalue < ALPHA, sign * result.r > 0, True, power)
    return part


def _majority(e: Majority) -> _Part:
    values = list(e.differences.values())
    wins, losses = sum(v > 0 for v in values), sum(v < 0 for v in values)
    ties = len(values) - wins - losses
    pvalue = stats.sign_test_pvalue(wins, losses)
    statistic = (f"{e.name}: wins {wins}, ties {ties}, losses {losses} of {len(values)} {e.unit}; sign test "
                 f"p {pvalue:.2g}")
    power, power_text = None, ""
    if wins + losses == 0:
        return _Part(NOT_DETECTED, statistic, "", f"every one of the {len(values)} {e.unit} ties", *self_check(e))
    if e.reported_wins is not None and e.reported_n:
        share = e.reported_wins / e.reported_n
        if share > 0.5:
            power = stats.sign_test_power(wins + losses, share)
            power_text = f"power {power:.2f} at the reported share {100 * share:.0f}%"
    part = _Part("", statistic, "", power_text, *self_check(e))
    part.verdict = _verdict(pvalue < ALPHA, wins > losses, True, power)
    return part


# ------------------------------------------------------------------------------- the report's own numbers
def self_check(e: Evidence) -> tuple[str, str]:
    """The evidence's rule applied to the report's own numbers (they need no run): (verdict, what was checked)."""
    if isinstance(e, Paired):
        return _paired_self_check(e)
    if isinstance(e, Level) and e.reported is not None and e.reported_n and e.percent:
        sign = 1 if e.direction == "above" else -1
        n = e.reported_n
        hits = round(e.reported * n)
        p_report = stats.binomial_test(hits, n, e.threshold) if 0 < e.threshold < 1 else 0.0
        holds = sign * (e.reported - e.threshold) > 0 and p_report < ALPHA
        extreme = stats.binomial_test(n if sign > 0 else 0, n, e.threshold) if 0 < e.threshold < 1 else 0.0
        why = "" if holds else (f"; no outcome of {n} could show it: the claim rests on too few cases" if extreme >= ALPHA
                                else "; its own numbers do not reach the level")
        return (SUPPORTED if holds else UNSUPPORTED,
                f"{100 * e.reported:.1f}% of {n}: p {p_report:.2g} against {100 * e.threshold:.1f}%{why}")
    if isinstance(e, PerRun) and e.reported is not None:
        return (SUPPORTED, "the report's one run shows it") if e.reported else \
            (UNSUPPORTED, "the report's own run does not show it")
    if isinstance(e, NoChange) and e.reported_mean is not None and e.reported_se and e.margin:
        f = lambda v: format(v, e.fmt)  # noqa: E731
        low, high = e.reported_mean - 1.645 * e.reported_se, e.reported_mean + 1.645 * e.reported_se
        inside = -e.margin < low and high < e.margin
        return (SUPPORTED if inside else UNSUPPORTED,
                f"the report's {f(e.reported_mean)} ± {f(e.reported_se)} (SE): 90% interval [{f(low)}, {f(high)}] "
                f"{'inside' if inside else 'not inside'} ±{f(e.margin)}")
    if isinstance(e, NoChange) and e.reported_mean is not None and e.margin:
        f = lambda v: format(v, e.fmt)  # noqa: E731
        if abs(e.reported_mean) >= e.margin:
            return UNSUPPORTED, (f"the report's own estimate {f(e.reported_mean)} lies outside ±{f(e.margin)} (this "
                                 f"project's margin): no interval around it lies inside")
        return UNDECIDABLE, (f"the report's estimate {f(e.reported_mean)} is inside ±{f(e.margin)}, but it gives no "
                             f"spread to test it by")
    if isinstance(e, Correlation) and e.reported_n is not None and e.reported_n < 4:
        return UNSUPPORTED, f"{e.reported_n} {e.unit}: too few to show any correlation (a Fisher-z test needs 4)"
    if isinstance(e, Correlation) and e.reported_r is not None and e.reported_n and e.reported_n >= 4:
        sign = 1 if e.direction == "positive" else -1
        own = stats.fisher_z_interval(e.reported_r, e.reported_n)
        return (SUPPORTED if own.pvalue < ALPHA and sign * e.reported_r > 0 else UNSUPPORTED,
                f"r {e.reported_r:+.2f} over {e.reported_n}: p {own.pvalue:.2g}")
    if isinstance(e, Majority) and e.reported_wins is not None and e.reported_n:
        own = stats.sign_test_pvalue(e.reported_wins, e.reported_n - e.reported_wins)
        holds = own < ALPHA and 2 * e.reported_wins > e.reported_n
        return (SUPPORTED if holds else UNSUPPORTED,
                f"{e.reported_wins} of {e.reported_n} (ties not given: counted as losses): sign test p {own:.2g}"
                + ("" if holds else "; more wins than losses, but not more than chance gives"))
    return NO_NUMBERS, ""


# ------------------------------------------------------------------------------------- claims from a spec
@dataclass
class ClaimKind:
    """How a kind tests one claim id: the default wording and a function (claim entry, the kind's data) -> evidence."""

    statement: str
    evidence: object  # Callable[[ClaimRef, object], list[Evidence]]
    plain: tuple[str, ...] = ()  # reported keys that are plain values, not rates (shown as given)


COUNT_KEYS = ("n", "wins", "items", "prompts")
PLAIN_KEYS = ("d", "p", "r", "t", "slope", "se", "mean", "half_life", "collapse", "relative_change", "top_p",
              "infonce_minus_chance")


def describe_reported(reported: dict, plain: tuple[str, ...] = ()) -> str:
    """A claim entry's `reported` numbers as a reader quotes them: rates as percentages, counts as integers, plain
    values (PLAIN_KEYS and the claim kind's own `plain`) as given."""
    parts = []
    for key, value in reported.items():
        label = key.replace("_", " ")
        if isinstance(value, str):
            parts.append(f"{label} {value}")
        elif key in COUNT_KEYS or key.endswith("_n"):
            parts.append(f"{label} {int(value)}")
        elif key in PLAIN_KEYS or key in plain or not 0 <= value <= 1:
            parts.append(f"{label} {value:g}")
        else:
            parts.append(f"{label} {100 * value:.1f}%")
    return ", ".join(parts)


def findings_for(spec, catalogue: dict[str, ClaimKind], data, subject: str | None = None) -> list[Finding]:
    """Decide every claim a spec lists under `claims:` with the kind's catalogue and data; an id the kind does not
    know is one SpecError naming the spec and field."""
    from registry.errors import SpecError

    findings = []
    for n, ref in enumerate(spec.claims):
        if ref.id not in catalogue:
            raise SpecError(f"unknown claim {ref.id!r} for the {spec.kind} kind (known: {', '.join(sorted(catalogue))})",
                            spec.name, f"claims.{n}.id")
        kind = catalogue[ref.id]
        claim = Claim(ref.id, ref.statement or kind.statement, ref.section, spec.source.label(),
                      describe_reported(ref.reported, kind.plain), list(kind.evidence(ref, data)), ref.note,
                      subject or spec.name)
        findings.append(decide(claim))
    return findings


def not_run_findings(spec, catalogue: dict[str, ClaimKind], subject: str | None = None) -> list[Finding]:
    """The claims of a spec with no run under this profile: not run, with the report's own numbers still checked
    (the kind builds the evidence without data; only its reported numbers are read)."""
    findings = []
    for ref in spec.claims:
        kind = catalogue.get(ref.id)
        evidence = list(kind.evidence(ref, None)) if kind else []
        checks = [self_check(e) for e in evidence]
        claim = Claim(ref.id, ref.statement or (kind.statement if kind else ref.id), ref.section, spec.source.label(),
                      describe_reported(ref.reported, kind.plain if kind else ()),
                      [Untestable("no run under this profile yet", not_run=True)],
                      ref.note, subject or spec.name)
        finding = decide(claim)
        verdict = _combine_checks([c[0] for c in checks]) if checks else NO_NUMBERS
        findings.append(Finding(**{**finding.__dict__, "self_check": verdict,
                                   "self_detail": "; ".join(c[1] for c in checks if c[1])}))
    return findings


# ------------------------------------------------------------------------------------------------ helpers
def verdict_words_in(text: str) -> list[str]:
    """Every verdict or self-check word a text contains (for the test that only findings carry them)."""
    lowered = str(text).lower()
    return [word for word in (*VERDICTS, *SELF_CHECKS) if word in lowered]
