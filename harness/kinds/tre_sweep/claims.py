"""TRE sweep, the report's claims (seed 000): what each claim id compares, and its evidence from a run.

The unit is the prompt: a prompt's outcome is its mean over trials (trials of one prompt share the prompt, so
they are not independent units), and the conditions of a (prompt, trial) share one random stream, so conditions
pair by prompt. A spec's `claims:` entries carry the report's numbers for its model: `neural`, `baseline` and
`random` (mean vocab diversity), `d` and `p` (its Welch test over generations), `n` (generations per condition),
`wins` and `prompts`; a claim of no difference carries its `margin` in Cohen's d (this project's choice).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from harness import claims as C
from registry.common import ClaimRef

METRIC = "vocab_diversity"


@dataclass
class ClaimData:
    spec: object
    by: dict  # (model, condition) -> scored generations
    models: list
    names: dict
    conditions: list
    metrics: dict
    facts: dict
    design: str | None  # why the ranges alone shift top_p and top_k, when they do


def prompt_means(gens: list[dict], key: str) -> dict[str, float]:
    """prompt id -> mean over its trials of `key` (a metric, or a per-token parameter averaged over the generation)."""
    grouped = defaultdict(list)
    for g in gens:
        value = g.get(key)
        if isinstance(value, list):
            value = float(np.mean(value)) if value else None
        if value is not None:
            grouped[g["prompt_id"]].append(value)
    return {p: float(np.mean(v)) for p, v in grouped.items()}


def _pooled_sd(data: ClaimData, model: str, a: str, b: str) -> float:
    x = [g[METRIC] for c in (a, b) for g in data.by[(model, c)] if g[METRIC] is not None]
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


def _each(build):
    """Evidence per model the run measured (a spec not run yet: built without data, for the self-check only)."""
    def evidence(ref: ClaimRef, data: ClaimData | None) -> list[C.Evidence]:
        if data is None:
            built = build(ref, None, None)
            return built if isinstance(built, list) else [built]
        out = []
        for model in data.models:
            built = build(ref, data, model)
            out += built if isinstance(built, list) else [built]
        return out
    return evidence


def _paired(a: str, b: str):
    def build(ref: ClaimRef, data: ClaimData | None, model: str | None) -> C.Evidence:
        r = ref.reported
        reported = (r[a], r[b]) if a in r and b in r else None
        common = dict(reported=reported, reported_n=int(r["n"]) if "n" in r else None, reported_p=r.get("p"),
                      reported_d=r.get("d"), unit="prompts")
        if data is None:
            return C.Paired(a, b, {}, {}, "above", **common)
        if b not in data.conditions or a not in data.conditions:
            return C.Untestable(f"the run has no {b if b not in data.conditions else a} condition")
        name = lambda c: f"{c} ({data.names[model]})"  # noqa: E731
        return C.Paired(name(a), name(b), {0: prompt_means(data.by[(model, a)], METRIC)},
                        {0: prompt_means(data.by[(model, b)], METRIC)}, "above", effect_sd=_pooled_sd(data, model, a, b),
                        **common)
    return _each(build)


def _not_significant(ref: ClaimRef, data: ClaimData | None, model: str | None) -> C.Evidence:
    """No neural-vs-baseline difference: per-prompt differences in units of the pooled per-generation SD (Cohen's d),
    equivalent to 0 within the margin."""
    r = ref.reported
    se = None
    if "d" in r and "n" in r:  # the standard error of d for two groups of n
        n = float(r["n"])
        se = math.sqrt(2 / n + r["d"] ** 2 / (4 * n))
    if data is None:
        return C.NoChange("neural - baseline vocab diversity (d)", {}, ref.margin, r.get("d"), se)
    if "baseline" not in data.conditions or "neural" not in data.conditions:
        return C.Untestable("the run lacks the neural or the baseline condition")
    sd = _pooled_sd(data, model, "neural", "baseline")
    neural, base = prompt_means(data.by[(model, "neural")], METRIC), prompt_means(data.by[(model, "baseline")], METRIC)
    values = {p: (neural[p] - base[p]) / sd for p in neural if p in base} if sd and sd == sd else {}
    return C.NoChange(f"neural - baseline vocab diversity, per prompt, in pooled SDs ({data.names[model]})",
                      {0: values}, ref.margin, r.get("d"), se, unit="prompts")


def _wins(ref: ClaimRef, data: ClaimData | None, model: str | None) -> C.Evidence:
    r = ref.reported
    reported = dict(reported_wins=int(r["wins"]) if "wins" in r else None,
                    reported_n=int(r["prompts"]) if "prompts" in r else None)
    if data is None:
        return C.Majority("neural wins", {}, **reported)
    neural, base = prompt_means(data.by[(model, "neural")], METRIC), prompt_means(data.by[(model, "baseline")], METRIC)
    return C.Majority(f"neural beats baseline on a prompt's mean vocab diversity ({data.names[model]})",
                      {p: neural[p] - base[p] for p in neural if p in base}, **reported)


def _parameter_shift(ref: ClaimRef, data: ClaimData | None, model: str | None) -> list[C.Evidence]:
    if data is None:
        return [C.Untestable("no run")]
    if data.design:
        return [C.ByConstruction(data.design)]
    gens = data.by[(model, "neural")]
    spec = data.spec
    return [C.Level(f"neural mean top_p ({data.names[model]})", {0: prompt_means(gens, "top_p")}, spec.baseline.top_p,
                    "above", unit="prompts", percent=False, bounds=(0.0, 1.0)),
            C.Level(f"neural mean top_k ({data.names[model]})", {0: prompt_means(gens, "top_k")}, spec.baseline.top_k,
                    "below", unit="prompts", percent=False)]


def _nonfinite(ref: ClaimRef, data: ClaimData | None, model: str | None) -> C.Evidence:
    if data is None:
        return C.PerRun("NaN/Inf in sampling", {}, {}, reported=True)
    m, conditions = data.metrics, data.conditions
    logit = sum(m.get(f"{model}.nonfinite.{c}.logit_tokens", 0) for c in conditions)
    ended = sum(m.get(f"{model}.nonfinite.{c}.ended_generations", 0) for c in conditions)
    generations = sum(len(data.by[(model, c)]) for c in conditions)
    bad = data.facts.get(f"{model}.nonfinite_sampling") == "yes"
    return C.PerRun(f"sampling meets NaN/Inf probabilities ({data.names[model]})", {0: bad},
                    {0: f"{logit:,.0f} sampling steps with NaN/Inf logits; {ended:,.0f} of {generations:,} generations "
                        f"ended by them; calibration {m.get(f'{model}.calibration.nonfinite_values', 0):,.0f} "
                        "non-finite values"}, reported=True)


DIVERSITIES = ("neural", "baseline", "random")  # reported vocab diversities: plain values, not rates
CATALOGUE: dict[str, C.ClaimKind] = {
    "neural_raises_diversity_over_baseline": C.ClaimKind(
        "TRE (the neural condition) raises vocab diversity over the fixed baseline", _paired("neural", "baseline"),
        plain=DIVERSITIES),
    "neural_raises_diversity_over_random": C.ClaimKind(
        "TRE raises vocab diversity over random parameters in the same ranges", _paired("neural", "random"),
        plain=DIVERSITIES),
    "neural_vs_baseline_not_significant": C.ClaimKind(
        "The neural vs baseline difference is not significant (no effect, as an equivalence test)",
        _each(_not_significant), plain=DIVERSITIES),
    "neural_wins_most_prompts": C.ClaimKind("Neural beats the baseline on most prompts", _each(_wins)),
    "tre_raises_top_p_lowers_top_k": C.ClaimKind(
        "TRE raised top_p and lowered top_k versus the baseline", _each(_parameter_shift)),
    "nonfinite_sampling": C.ClaimKind(
        "Sampling meets NaN/Inf probabilities (Why Gemma 3 Failed)", _each(_nonfinite)),
}
