"""TRE sweep statistics and tables, recomputed from records.jsonl alone (texts are scored here).

Metric keys in metrics.json: `<model>.d.<a>_vs_<b>.<metric>` (Cohen's d), `<model>.welch.<a>_vs_<b>.<metric>.t|p|df`,
`<model>.win.neural_vs_baseline.vocab_diversity.rate|wins|ties|losses|n|sign_test_p`,
`<model>.<condition>.<metric>.mean`, `<model>.<condition>.jaccard.mean`,
`<model>.params.<condition>.<param>.mean|min|max`, `<model>.category_delta.<category>.vocab_diversity`,
`<model>.required_n.neural_vs_baseline.vocab_diversity`, `<model>.calibration.*`, `<model>.nonfinite.*`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from harness import stats
from harness.claims import findings_for
from harness.kinds.contract import Analysis, Column, Table
from harness.kinds.tre_sweep import claims as tre_claims
from harness.kinds.tre_sweep.text_metrics import generation_metrics, mean_pairwise_jaccard, words
from harness.kinds.tre_sweep.units import unit_for_value
from registry.catalog import model_entry
from registry.kinds.tre_sweep import SAMPLING_PARAMS as PARAMS, TRESweepSpec

METRICS = ("vocab_diversity", "bigram_diversity", "char_entropy", "word_count")
EFFECT_METRICS = ("vocab_diversity", "bigram_diversity")
COMPARISONS = (("neural", "baseline"), ("neural", "random"), ("random", "baseline"))
CLAIM_CATALOGUE = tre_claims.CATALOGUE
LABELS = {"vocab_diversity": "vocab diversity", "bigram_diversity": "bigram diversity",
          "char_entropy": "char entropy", "word_count": "words"}


def scored_generations(records: list[dict]) -> list[dict]:
    """Generation records with their metrics (recomputed from the text) and word set."""
    out = []
    for r in records:
        if r.get("record") == "generation":
            out.append({**r, **generation_metrics(r["text"]), "vocabulary": set(words(r["text"]))})
    return out


def metric_values(gens: list[dict], metric: str) -> list[float]:
    return [g[metric] for g in gens if g[metric] is not None]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _try(fn, *args):
    try:
        return fn(*args)
    except ValueError:
        return None


def _with_reported(expected: dict, fragment: str) -> bool:
    return any(fragment in key for key in expected)


def headline_metrics(spec: TRESweepSpec) -> list[str]:
    """Metrics every complete run must have: each condition's mean vocab diversity per model, and
    the neural-vs-baseline effect size where both conditions ran."""
    keys = [f"{m}.{c}.vocab_diversity.mean" for m in spec.models for c in spec.conditions]
    if {"neural", "baseline"} <= set(spec.conditions):
        keys += [f"{m}.d.neural_vs_baseline.vocab_diversity" for m in spec.models]
    return keys


def analyze(spec: TRESweepSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
    out = Analysis()
    expected = {e.metric: e.value for e in spec.expected}
    gens = scored_generations(records)
    calibrations = {r["model"]: r for r in records if r.get("record") == "calibration"}
    models = list(dict.fromkeys(r["model"] for r in records))
    names = {r["model"]: r["display_name"] for r in records}
    by = defaultdict(list)
    for g in gens:
        by[(g["model"], g["condition"])].append(g)
    conditions = [c for c in spec.conditions if any(by[(m, c)] for m in models)]
    comparisons = [(a, b) for a, b in COMPARISONS if a in conditions and b in conditions]

    tables = [
        _effect_table(out, expected, models, names, by, comparisons),
        _significance_table(out, expected, models, names, by, conditions),
        _aggregate_table(out, expected, models, names, by, conditions),
        _jaccard_table(out, expected, models, names, by, conditions),
        _params_table(out, expected, spec, models, names, by, conditions),
        _category_table(out, expected, spec, models, names, by, conditions),
        _power_table(out, expected, models, names),
        _calibration_table(out, spec, models, names, calibrations),
        _nonfinite_table(out, models, names, by, conditions),
    ]
    tables = [t for t in tables if t is not None and t.rows]
    if any(t.key == "nonfinite" for t in tables):  # a run that met NaN/Inf leads with what went wrong
        tables.sort(key=lambda t: t.key not in ("nonfinite", "calibration"))
    out.tables += tables
    out.notes += _controller_notes(spec, expected, models, names, out.metrics)
    for (model, condition), rows in by.items():  # per prompt (mean over trials), for paired comparisons across runs
        out.outcomes[f"{model}.{condition}.vocab_diversity"] = {0: tre_claims.prompt_means(rows, "vocab_diversity")}
    data = tre_claims.ClaimData(spec, by, models, names, conditions, out.metrics, out.facts,
                                _parameter_shift_design(spec, models, names, out.metrics))
    out.findings = findings_for(spec, CLAIM_CATALOGUE, data)
    if any(g["word_count"] == 0 for g in gens):
        out.notes.append(f"{sum(g['word_count'] == 0 for g in gens)} generation(s) have no words; they count in "
                         "word means but have no diversity values.")
    return out


def implied_signal_levels(spec: TRESweepSpec, means: dict[str, float]) -> dict[str, float]:
    """The mean mapped signal u in [0, 1] that each parameter's mean implies under this controller's
    placement (linear: parameter = lo + u (hi - lo), or hi - u (hi - lo) for direction `down`; the
    `reconstructed` mapping: piecewise-linear through its centre at u = 0.5). One signal drives all three,
    so means the controller can produce imply one level (up to top_k's rounding and the nonlinearity of
    averaging a piecewise map)."""
    centres = getattr(spec.mapping, "centres", None)
    levels = {}
    for param, mean in means.items():
        r = getattr(spec.ranges, param)
        levels[param] = unit_for_value(mean, r.lo, r.hi, getattr(spec.mapping.directions, param),
                                       getattr(centres, param) if centres is not None else None)
    return levels


def jointly_attainable(levels: dict[str, float], tolerance: float = 0.05) -> bool:
    return max(levels.values()) - min(levels.values()) <= tolerance


def spec_notes(spec: TRESweepSpec) -> list[str]:
    """What the controller's design implies for the report's numbers, from the spec alone: the page of a
    spec not run yet shows it too (a run's analysis adds the random condition's observed means)."""
    expected = {e.metric: e.value for e in spec.expected}
    return _controller_notes(spec, expected, list(spec.models), {m: model_entry(m).display_name for m in spec.models}, {})


def _typical_signal_parameters(spec: TRESweepSpec) -> dict[str, float]:
    """A typical signal's parameters: the reconstructed mapping's centres, or the middle of each range."""
    centres = getattr(spec.mapping, "centres", None)
    return {p: getattr(centres, p) if centres is not None else
            getattr(spec.ranges, p).lo + 0.5 * (getattr(spec.ranges, p).hi - getattr(spec.ranges, p).lo) for p in PARAMS}


def _ranges_raise_top_p_and_lower_top_k(spec: TRESweepSpec) -> bool:
    """Whether the ranges alone give a typical signal a higher top_p and a lower top_k than the baseline's."""
    mid = _typical_signal_parameters(spec)
    return mid["top_p"] > spec.baseline.top_p and mid["top_k"] < spec.baseline.top_k


def _parameter_shift_design(spec: TRESweepSpec, models: list[str], names: dict, metrics: dict) -> str | None:
    """Why "TRE raised top_p and lowered top_k" holds by construction under these ranges, if it does."""
    if not _ranges_raise_top_p_and_lower_top_k(spec):
        return None
    mid = _typical_signal_parameters(spec)
    shifted = [f"{names[m]} random: top_p {metrics[f'{m}.params.random.top_p.mean']:.3f}, "
               f"top_k {metrics[f'{m}.params.random.top_k.mean']:.1f}" for m in models
               if f"{m}.params.random.top_p.mean" in metrics]
    return (f"with these ranges a typical signal already gives top_p {mid['top_p']:g} > {spec.baseline.top_p:g} and "
            f"top_k {mid['top_k']:g} < {spec.baseline.top_k:g}, so the shift follows from the ranges for almost any "
            "signal; the random condition, which shares them, shifts the same way"
            + (f" ({'; '.join(shifted)})" if shifted else ""))


def _controller_notes(spec: TRESweepSpec, expected: dict, models: list[str], names: dict, metrics: dict) -> list[str]:
    notes = []
    for m in models:
        means = {p: expected.get(f"{m}.params.neural.{p}.mean") for p in PARAMS}
        if all(isinstance(v, float) for v in means.values()):
            levels = implied_signal_levels(spec, means)
            attainable = ("can be met jointly" if jointly_attainable(levels) else
                          "cannot be met jointly by this controller (one signal drives all three through linear maps, "
                          "so their means must imply one level): a limit of the design, not a result")
            notes.append(f"{names[m]}: the report's neural parameter means imply signal levels "
                         + " / ".join(f"{levels[p]:.3f}" for p in PARAMS) + f" ({' / '.join(PARAMS)}) under these ranges "
                         f"and directions; they {attainable}.")
    centres = getattr(spec.mapping, "centres", None)
    if centres is not None:
        notes.append("Built in: the reconstructed mapping places a typical signal (u = 0.5) at its centres ("
                     + ", ".join(f"{p} {getattr(centres, p):g}" for p in PARAMS) + "), chosen as the report's neural "
                     "means, so the neural parameter means here confirm nothing about the report's; only the diversity "
                     "outcomes are evidence.")
    design = _parameter_shift_design(spec, models, names, metrics)
    if design:
        notes.append(f"Follows from the ranges: {design}.")
    return notes


def _effect_table(out, expected, models, names, by, comparisons) -> Table:
    rep = _with_reported(expected, ".d.")
    table = Table("effect_sizes", "Effect sizes (Cohen's d over generations)", [
        Column("Model", align="l"), Column("Comparison", align="l"), Column("Metric", align="l"), Column("n", "d"),
        Column("n ", "d"), Column("Cohen's d", ".3f"), *([Column("reported", ".3f")] if rep else []),
        Column("Welch t", ".3f"), Column("p", ".3f")],
        caption="d = (mean A − mean B) / pooled SD (n − 1 weighting); Welch's t-test on the same values.")
    for m in models:
        for a, b in comparisons:
            for metric in EFFECT_METRICS:
                x, y = metric_values(by[(m, a)], metric), metric_values(by[(m, b)], metric)
                key = f"{m}.d.{a}_vs_{b}.{metric}"
                d = _try(stats.cohens_d, x, y) if x and y else None
                varies = len(x) > 1 and len(y) > 1 and (np.ptp(x) > 0 or np.ptp(y) > 0)
                welch = _try(stats.welch_t_test, x, y) if varies else None
                out.set(key, d)
                if welch is not None:
                    out.set(f"{m}.welch.{a}_vs_{b}.{metric}.t", welch.statistic)
                    out.set(f"{m}.welch.{a}_vs_{b}.{metric}.p", welch.pvalue)
                    out.set(f"{m}.welch.{a}_vs_{b}.{metric}.df", welch.df)
                table.add(names[m], f"{a} vs {b}", LABELS[metric], len(x), len(y), d,
                          *([expected.get(key)] if rep else []), welch.statistic if welch else None,
                          welch.pvalue if welch else None)
    return table


def _prompt_means(gens: list[dict], metric: str) -> dict[str, float]:
    grouped = defaultdict(list)
    for g in gens:
        if g[metric] is not None:
            grouped[g["prompt_id"]].append(g[metric])
    return {p: float(np.mean(v)) for p, v in grouped.items()}


def _significance_table(out, expected, models, names, by, conditions) -> Table | None:
    if not {"neural", "baseline"} <= set(conditions):
        return None
    rep = _with_reported(expected, ".welch.") or _with_reported(expected, ".win.")
    table = Table("significance", "Neural vs baseline, vocab diversity: significance and win rate", [
        Column("Model", align="l"), Column("Welch t", ".3f"), Column("df", ".1f"), Column("p", ".3f"),
        *([Column("reported t", ".3f"), Column("reported p", ".3f")] if rep else []),
        Column("Wins", align="l"), Column("Win rate", ".0%"), *([Column("reported ", ".0%")] if rep else []),
        Column("Sign test p", ".3f")],
        caption="Welch's t over generations. Win: a prompt whose mean vocab diversity over trials is higher under "
                "neural than under baseline; sign test on wins vs losses (ties dropped).")
    key = "neural_vs_baseline.vocab_diversity"
    for m in models:
        neural, base = _prompt_means(by[(m, "neural")], "vocab_diversity"), _prompt_means(by[(m, "baseline")],
                                                                                          "vocab_diversity")
        shared = [p for p in neural if p in base]
        win = stats.win_rate([neural[p] for p in shared], [base[p] for p in shared]) if shared else None
        if win is not None:
            for part in ("rate", "wins", "ties", "losses", "n", "sign_test_pvalue"):
                out.set(f"{m}.win.{key}.{part.replace('_pvalue', '_p')}", getattr(win, part))
        t = out.metrics.get(f"{m}.welch.{key}.t")
        table.add(names[m], t, out.metrics.get(f"{m}.welch.{key}.df"), out.metrics.get(f"{m}.welch.{key}.p"),
                  *([expected.get(f"{m}.welch.{key}.t"), expected.get(f"{m}.welch.{key}.p")] if rep else []),
                  f"{win.wins}/{win.n}" if win else None, win.rate if win else None,
                  *([expected.get(f"{m}.win.{key}.rate")] if rep else []), win.sign_test_pvalue if win else None)
    return table


def _aggregate_table(out, expected, models, names, by, conditions) -> Table:
    rep = _with_reported(expected, ".vocab_diversity.mean")
    cols = [Column("Model", align="l"), Column("Condition", align="l"), Column("Generations", "d")]
    for metric, fmt in zip(METRICS, (".4f", ".4f", ".3f", ".1f")):
        cols.append(Column(LABELS[metric].capitalize() if metric != "word_count" else "Avg words", fmt))
        if rep:
            cols.append(Column("reported" + " " * len(cols), fmt))
    cols += [Column("Tokens", ".1f"), Column("Ended by EOS", ".0%")]
    table = Table("aggregate", "Aggregate metrics (mean over generations)", cols,
                  caption="Words: runs of letters or digits, lowercased, inner apostrophes kept. Vocab diversity = "
                          "distinct words / words; bigram diversity = distinct adjacent-word pairs / pairs; char "
                          "entropy = Shannon entropy (bits) of the characters as written.")
    for m in models:
        for c in conditions:
            gens = by[(m, c)]
            row = [names[m], c, len(gens)]
            for metric in METRICS:
                key = f"{m}.{c}.{metric}.mean"
                value = _mean(g[metric] for g in gens)
                out.set(key, value)
                row += [value, expected.get(key)] if rep else [value]
            tokens = _mean(g["n_tokens"] for g in gens)
            eos = _mean(float(g["stop_reason"] == "eos") for g in gens)
            out.set(f"{m}.{c}.n_tokens.mean", tokens)
            out.set(f"{m}.{c}.eos_rate", eos)
            out.set(f"{m}.{c}.n_generations", len(gens))
            table.add(*row, tokens, eos)
    return table


def _jaccard_table(out, expected, models, names, by, conditions) -> Table:
    rep = _with_reported(expected, ".jaccard.")
    table = Table("jaccard", "Cross-trial Jaccard similarity (lower = more diverse across repeated runs)", [
        Column("Model", align="l"), Column("Condition", align="l"), Column("Prompts", "d"), Column("Jaccard", ".4f"),
        *([Column("reported", ".4f")] if rep else [])],
        caption="Per prompt and condition: mean over pairs of trials of the Jaccard similarity of their word sets; "
                "then the mean over prompts.")
    for m in models:
        for c in conditions:
            grouped = defaultdict(list)
            for g in by[(m, c)]:
                grouped[g["prompt_id"]].append(g["vocabulary"])
            per_prompt = [j for v in grouped.values() if (j := mean_pairwise_jaccard(v)) is not None]
            key = f"{m}.{c}.jaccard.mean"
            value = float(np.mean(per_prompt)) if per_prompt else None
            out.set(key, value)
            table.add(names[m], c, len(per_prompt), value, *([expected.get(key)] if rep else []))
    return table


def _params_table(out, expected, spec, models, names, by, conditions) -> Table:
    rep = _with_reported(expected, ".params.")
    table = Table("parameters", "What the controller chose (every sampled token)", [
        Column("Model", align="l"), Column("Condition", align="l"), Column("Parameter", align="l"),
        Column("Mean", ".4g"), Column("Min", ".4g"), Column("Max", ".4g"),
        *([Column("reported mean", ".4g"), Column("reported range", align="l")] if rep else []),
        Column("Range allowed", align="l"), Column("Baseline fixed", align="l")])
    for m in models:
        for c in conditions:
            for param in PARAMS:
                values = [v for g in by[(m, c)] for v in g[param]]
                stats_ = {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))} \
                    if values else {"mean": None, "min": None, "max": None}
                for part, value in stats_.items():
                    out.set(f"{m}.params.{c}.{param}.{part}", value)
                key = f"{m}.params.{c}.{param}"
                lo, hi = expected.get(f"{key}.min"), expected.get(f"{key}.max")
                reported_range = f"[{lo:g}, {hi:g}]" if isinstance(lo, float) and isinstance(hi, float) else None
                allowed = getattr(spec.ranges, param)
                table.add(names[m], c, param, stats_["mean"], stats_["min"], stats_["max"],
                          *([expected.get(f"{key}.mean"), reported_range] if rep else []),
                          f"[{allowed.lo:g}, {allowed.hi:g}]", f"{getattr(spec.baseline, param):g}")
    return table


def _category_table(out, expected, spec, models, names, by, conditions) -> Table | None:
    if not {"neural", "baseline"} <= set(conditions):
        return None
    rep = _with_reported(expected, ".category_delta.")
    table = Table("categories", "Vocab diversity by prompt category (neural − baseline)", [
        Column("Model", align="l"), Column("Category", align="l"), Column("Generations", "d"),
        Column("Neural", ".4f"), Column("Baseline", ".4f"), Column("Δ", "+.3f"),
        *([Column("reported Δ", "+.3f")] if rep else []), Column("Cohen's d", ".3f")])
    for m in models:
        for category in spec.categories:
            neural = metric_values([g for g in by[(m, "neural")] if g["category"] == category], "vocab_diversity")
            base = metric_values([g for g in by[(m, "baseline")] if g["category"] == category], "vocab_diversity")
            if not neural or not base:
                continue
            key = f"{m}.category_delta.{category}.vocab_diversity"
            delta = float(np.mean(neural) - np.mean(base))
            out.set(key, delta)
            d = _try(stats.cohens_d, neural, base)
            out.set(f"{m}.category_d.{category}.vocab_diversity", d)
            table.add(names[m], category, len(neural), float(np.mean(neural)), float(np.mean(base)), delta,
                      *([expected.get(key)] if rep else []), d)
    return table


def _power_table(out, expected, models, names) -> Table:
    key = "power.required_n_per_group.d_0_1"
    rep = key in expected or _with_reported(expected, ".required_n.")
    table = Table("power", "Generations per condition needed to detect the effect (two-sided t-test, α = 0.05, "
                  "power 0.8)", [Column("Effect", align="l"), Column("d", ".3f"), Column("n per condition", ",d"),
                                 *([Column("reported", ",.0f")] if rep else [])])
    for m in models:
        d = out.metrics.get(f"{m}.d.neural_vs_baseline.vocab_diversity")
        n = _try(stats.required_n_per_group, d) if d is not None else None
        out.set(f"{m}.required_n.neural_vs_baseline.vocab_diversity", n)
        table.add(f"{names[m]}: neural vs baseline vocab diversity", d, n,
                  *([expected.get(f"{m}.required_n.neural_vs_baseline.vocab_diversity")] if rep else []))
    n01 = stats.required_n_per_group(0.1)
    out.set(key, n01)
    table.add("the report's example, d = 0.1", 0.1, n01, *([expected.get(key)] if rep else []))
    return table


def _format_variances(values) -> str:
    return ", ".join("nan" if v is None else f"{v:.4g}" for v in values)


def _calibration_table(out, spec, models, names, calibrations) -> Table:
    table = Table("calibration", "Calibration of the neural signal", [
        Column("Model", align="l"), Column("Layer", align="l"), Column("Point", align="l"), Column("dtype", align="l"),
        Column("Width", ",d"), Column("Units", align="r"), Column("Tokens", ",d"), Column("Top-5 variance", align="l"),
        Column("Signal mean", ".3f"), Column("Signal SD", ".3f"), Column("Non-finite values", ",d")],
        caption=f"Units: the {spec.top_k_neurons} highest-variance units over the calibration tokens (padding and "
                "special tokens excluded). Top-5 variance as a plain variance reports it (NaN propagates). The "
                f"signal is the {spec.aggregate.replace('_', ' ')} of the units' z-scores.")
    for m in models:
        c = calibrations.get(m)
        if c is None:
            continue
        out.set(f"{m}.calibration.layer", c["layer"])
        out.set(f"{m}.calibration.n_layers", c["n_layers"])
        out.set(f"{m}.calibration.width", c["width"])
        out.set(f"{m}.calibration.n_units", len(c["neurons"]))
        out.set(f"{m}.calibration.n_tokens", c["n_tokens"])
        out.set(f"{m}.calibration.nonfinite_values", c["nonfinite_values"])
        out.set(f"{m}.calibration.signal_std", c["signal_std"])
        out.facts[f"{m}.calibration.top5_variances"] = _format_variances(c["top5_variance_raw"])
        out.facts[f"{m}.calibration.dtype"] = c["dtype"]
        table.add(names[m], f"{c['layer']} of {c['n_layers']}", c["point_kind"].replace("_", " "), c["dtype"],
                  c["width"], f"{len(c['neurons'])} of {spec.top_k_neurons}", c["n_tokens"], _format_variances(c["top5_variance_raw"]),
                  c["signal_mean"], c["signal_std"], c["nonfinite_values"])
    return table


def _nonfinite_table(out, models, names, by, conditions) -> Table | None:
    table = Table("nonfinite", "Non-finite values met while sampling (mask policy)", [
        Column("Model", align="l"), Column("Condition", align="l"), Column("Tokens sampled", ",d"),
        Column("Steps with NaN/Inf logits", ",d"), Column("Steps with no finite signal unit", ",d"),
        Column("Generations ended by NaN", ",d")],
        caption="A step's non-finite logits are dropped (-inf); a row left with no finite logit ends there. "
                "A signal without any finite unit keeps its previous value (0, typical, before any).")
    any_bad = False
    for m in models:
        for c in conditions:
            gens = by[(m, c)]
            logit = sum(g["nonfinite_logit_tokens"] for g in gens)
            signal = sum(g["nonfinite_signal_tokens"] for g in gens)
            ended = sum(g["stop_reason"] == "nonfinite" for g in gens)
            out.set(f"{m}.nonfinite.{c}.logit_tokens", logit)
            out.set(f"{m}.nonfinite.{c}.signal_tokens", signal)
            out.set(f"{m}.nonfinite.{c}.ended_generations", ended)
            any_bad |= bool(logit or signal or ended)
            table.add(names[m], c, sum(len(g["temperature"]) for g in gens), logit, signal, ended)
        bad = any(out.metrics.get(f"{m}.nonfinite.{c}.{k}", 0) for c in conditions
                  for k in ("logit_tokens", "signal_tokens", "ended_generations"))
        out.facts[f"{m}.nonfinite_sampling"] = "yes" if bad else "no"
    return table if any_bad else None
