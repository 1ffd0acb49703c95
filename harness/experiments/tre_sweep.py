"""TRE sampling sweep (seed 000): activation-driven vs random vs fixed sampling parameters.

`run` calibrates each model, then generates every (prompt, trial) under every condition with
the same per-(prompt, trial) random stream, and stores the text and the parameters chosen at
every token. `analyze` scores the texts and computes every statistic from those records.
Definitions (controller, mapping, metrics) are in registry/kinds/tre_sweep.py.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from harness import stats
from harness.experiments.base import RunContext, RunOutput
from harness.generation import generate_rows
from harness.models import NonFiniteActivationError
from harness.report.tables import Analysis, Column, Table
from harness.sampling import stream_seed, uniform_stream
from harness.text_metrics import generation_metrics, mean_pairwise_jaccard, words
from harness.tre.calibration import calibrate
from harness.tre.controller import BaselineController, NeuralController, RandomController
from registry.errors import SpecError
from registry.kinds.tre_sweep import TRESweepSpec

METRICS = ("vocab_diversity", "bigram_diversity", "char_entropy", "word_count")
EFFECT_METRICS = ("vocab_diversity", "bigram_diversity")
COMPARISONS = (("neural", "baseline"), ("neural", "random"), ("random", "baseline"))
PARAMS = ("temperature", "top_p", "top_k")
LABELS = {"vocab_diversity": "vocab diversity", "bigram_diversity": "bigram diversity",
          "char_entropy": "char entropy", "word_count": "words"}


# ----------------------------------------------------------------------------- run
def generation_seed(spec_seed: int, prompt_id: str, trial: int) -> int:
    """The sampling stream of one (prompt, trial); every condition uses it, so conditions are paired."""
    return stream_seed("tre-sample", spec_seed, prompt_id, trial)


def random_condition_seed(spec_seed: int, prompt_id: str, trial: int) -> int:
    return stream_seed("tre-random-params", spec_seed, prompt_id, trial)


def prompt_formatter(lm, name: str, prompt_format: str):
    """(format(text) -> str, add_special_tokens) for the spec's prompt_format and this model."""
    has_template = bool(getattr(lm.tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise SpecError(f"{name}: the tokenizer has no chat template (use plain or auto)", field="prompt_format")
    if prompt_format == "chat" or (prompt_format == "auto" and lm.entry.instruct and has_template):
        def chat(text: str) -> str:
            return lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                    add_generation_prompt=True)
        return chat, False, "chat"
    return (lambda text: text), True, "plain"


def _controller(condition: str, spec: TRESweepSpec, name: str, lm, calibration, rows: int, random_uniforms):
    if condition == "baseline":
        return BaselineController(spec.baseline, rows)
    if condition == "random":
        return RandomController(spec.ranges, random_uniforms)
    return NeuralController(name, lm.anatomy, calibration, aggregate_how=spec.aggregate, ema_alpha=spec.ema_alpha,
                            mapping=spec.mapping, ranges=spec.ranges, rows=rows,
                            check_finite=spec.nan_policy == "error")


def run(spec: TRESweepSpec, ctx: RunContext) -> RunOutput:
    prompts = spec.selected_prompts()
    batch = spec.batch_size or len(prompts)
    starts = range(0, len(prompts), batch)
    records: list[dict] = []
    bar = ctx.progress(total=len(spec.models) * spec.trials * len(spec.conditions) * len(starts), desc="tre sweep",
                       unit="batch")
    for name in spec.models:
        bar.set_postfix_str(f"loading {name}")
        lm = ctx.models.get(name, spec.dtype)
        layer = lm.anatomy.layer_index(spec.layer_for(lm.anatomy.n_layers))
        if spec.point == "mlp_neurons":
            try:
                lm.anatomy.mlp_down_projection(layer)
            except AttributeError as exc:
                raise SpecError(f"{name}: {exc}; use mlp_output", field="point") from None
        fmt, add_special, used_format = prompt_formatter(lm, name, spec.prompt_format)
        texts = [fmt(p.text) for p in prompts]
        bar.set_postfix_str(f"calibrating {name}")
        calibration = calibrate(lm, name, [fmt(t) for t in spec.calibration.texts] or texts,
                                add_special_tokens=add_special, max_tokens=spec.calibration.max_tokens, layer=layer,
                                point_kind=spec.point, top_k=spec.top_k_neurons, aggregate_how=spec.aggregate,
                                batch_size=batch, nan_policy=spec.nan_policy)
        records.append({**calibration.as_record(), "display_name": lm.entry.display_name, "prompt_format": used_format})
        for trial in range(spec.trials):
            seeds = [generation_seed(spec.seed, p.id, trial) for p in prompts]
            uniforms = torch.stack([uniform_stream(s, (spec.max_new_tokens,)) for s in seeds])
            random_uniforms = torch.stack([uniform_stream(random_condition_seed(spec.seed, p.id, trial),
                                                          (spec.max_new_tokens, 3)) for p in prompts])
            for condition in spec.conditions:
                for start in starts:
                    rows = slice(start, start + batch)
                    bar.set_postfix_str(f"{name} trial {trial + 1}/{spec.trials} {condition}", refresh=False)
                    controller = _controller(condition, spec, name, lm, calibration, len(texts[rows]),
                                             random_uniforms[rows])
                    try:
                        generated = generate_rows(lm, name, texts[rows], controller, uniforms[rows],
                                                  max_new_tokens=spec.max_new_tokens, nan_policy=spec.nan_policy,
                                                  add_special_tokens=add_special, progress=bar)
                    except NonFiniteActivationError as exc:
                        raise NonFiniteActivationError(f"{exc} ({condition} condition, trial {trial})") from None
                    for prompt, seed, row in zip(prompts[rows], seeds[rows], generated):
                        records.append(_generation_record(lm, name, condition, trial, prompt, seed, row))
                    bar.update(1)
        ctx.models.release(name)
    bar.close()
    return RunOutput(records=records, curves=_curves(records))


def _generation_record(lm, name, condition, trial, prompt, seed, row) -> dict:
    record = {
        "record": "generation", "model": name, "display_name": lm.entry.display_name, "condition": condition,
        "prompt_id": prompt.id, "category": prompt.category, "trial": trial, "seed": seed, "prompt": prompt.text,
        "text": lm.tokenizer.decode(row.token_ids, skip_special_tokens=True), "n_tokens": len(row.token_ids),
        "stop_reason": row.stop_reason, "temperature": row.temperature, "top_p": row.top_p, "top_k": row.top_k,
        "nonfinite_logit_tokens": row.nonfinite_logit_tokens, "nonfinite_signal_tokens": row.nonfinite_signal_tokens,
    }
    if condition == "neural":
        record["signal_raw"] = row.signal_raw
        record["signal"] = row.signal
    return record


def _curves(records: list[dict]) -> list[dict]:
    """Mean parameter per token position, per model and varying condition (DVC plots; x = row index)."""
    columns: dict[str, list[list[float]]] = {}
    for r in records:
        if r["record"] != "generation" or r["condition"] == "baseline":
            continue
        for param in PARAMS + (("signal",) if r["condition"] == "neural" else ()):
            series = columns.setdefault(f"{r['model']}.{r['condition']}.{param}", [])
            for t, value in enumerate(r[param]):
                if len(series) <= t:
                    series.append([])
                if value is not None:
                    series[t].append(value)
    depth = max((len(s) for s in columns.values()), default=0)
    return [{"position": t, **{k: (round(float(np.mean(s[t])), 6) if t < len(s) and s[t] else "")
                               for k, s in columns.items()}} for t in range(depth)]


# ----------------------------------------------------------------------------- analysis
def scored_generations(records: list[dict]) -> list[dict]:
    """Generation records with their metrics (recomputed from the text) and word set."""
    out = []
    for r in records:
        if r.get("record") == "generation":
            out.append({**r, **generation_metrics(r["text"]), "vocabulary": set(words(r["text"]))})
    return out


def _values(gens: list[dict], metric: str) -> list[float]:
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


def analyze(spec: TRESweepSpec, records: list[dict]) -> Analysis:
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
    if any(g["word_count"] == 0 for g in gens):
        out.notes.append(f"{sum(g['word_count'] == 0 for g in gens)} generation(s) have no words; they count in "
                         "word means but have no diversity values.")
    return out


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
                x, y = _values(by[(m, a)], metric), _values(by[(m, b)], metric)
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
            neural = _values([g for g in by[(m, "neural")] if g["category"] == category], "vocab_diversity")
            base = _values([g for g in by[(m, "baseline")] if g["category"] == category], "vocab_diversity")
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


# ----------------------------------------------------------------------------- figures
def figures(spec: TRESweepSpec, records: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    gens = scored_generations(records)
    models = list(dict.fromkeys(g["model"] for g in gens))
    names = {g["model"]: g["display_name"] for g in gens}
    paths = []

    traces = [next((g for g in gens if g["model"] == m and g["condition"] == "neural" and len(g["temperature"]) > 1),
                   None) for m in models]
    traces = [g for g in traces if g is not None]
    if traces:
        fig, axes = plt.subplots(4, len(traces), figsize=(4.6 * len(traces) + 1.5, 8), sharex="col", squeeze=False)
        for col, g in enumerate(traces):
            steps = np.arange(len(g["temperature"]))
            signal = np.array([np.nan if v is None else v for v in g["signal"]])
            raw = np.array([np.nan if v is None else v for v in g["signal_raw"]])
            axes[0, col].plot(steps, raw, ".", ms=3, color="grey", label="per token")
            axes[0, col].plot(steps, signal, color="black", lw=1.2, label=f"EMA (α = {spec.ema_alpha:g})")
            axes[0, col].axhline(0, color="grey", lw=0.6, ls=":")
            axes[0, col].legend(fontsize=7, loc="upper right")
            axes[0, col].set_title(f"{names[g['model']]}\n{g['prompt_id']}, trial {g['trial']}", fontsize=9)
            for row, param in enumerate(PARAMS, start=1):
                ax = axes[row, col]
                allowed = getattr(spec.ranges, param)
                ax.plot(steps, g[param], color=f"C{row - 1}", lw=1.2, drawstyle="steps-mid")
                ax.axhline(allowed.lo, color="grey", lw=0.7, ls="--")
                ax.axhline(allowed.hi, color="grey", lw=0.7, ls="--")
                ax.axhline(getattr(spec.baseline, param), color="red", lw=0.8, ls=":", label="baseline")
                if col == 0:
                    ax.set_ylabel(param)
            axes[-1, col].set_xlabel("generated token")
        axes[0, 0].set_ylabel("signal (calibration z)")
        axes[1, 0].legend(fontsize=7, loc="upper right")
        fig.suptitle("Neural condition, per token: the signal and the parameters it chose\n(dashed: allowed range)",
                     fontsize=10)
        fig.tight_layout()
        paths.append(out_dir / "param_traces.png")
        fig.savefig(paths[-1], dpi=130)
        plt.close(fig)

    conditions = [c for c in spec.conditions if any(g["condition"] == c for g in gens)]
    if any(g["vocab_diversity"] is not None for g in gens):
        fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models) + 1.5, 4), squeeze=False)
        for col, m in enumerate(models):
            data = [_values([g for g in gens if g["model"] == m and g["condition"] == c], "vocab_diversity") or [np.nan]
                    for c in conditions]
            ax = axes[0, col]
            ax.boxplot(data, showmeans=True)
            ax.set_xticks(range(1, len(conditions) + 1), conditions)
            ax.set_title(names[m], fontsize=9)
            if col == 0:
                ax.set_ylabel("vocab diversity (per generation)")
        fig.suptitle("Vocab diversity by condition (triangle: mean)")
        fig.tight_layout()
        paths.append(out_dir / "vocab_diversity_by_condition.png")
        fig.savefig(paths[-1], dpi=130)
        plt.close(fig)

    if {"neural", "baseline"} <= set(conditions) and any(g["vocab_diversity"] is not None for g in gens):
        fig, ax = plt.subplots(figsize=(7.5, 4))
        width = 0.8 / max(1, len(models))
        for i, m in enumerate(models):
            deltas = []
            for category in spec.categories:
                n = _values([g for g in gens if g["model"] == m and g["condition"] == "neural"
                             and g["category"] == category], "vocab_diversity")
                b = _values([g for g in gens if g["model"] == m and g["condition"] == "baseline"
                             and g["category"] == category], "vocab_diversity")
                deltas.append(np.mean(n) - np.mean(b) if n and b else np.nan)
            ax.bar(np.arange(len(spec.categories)) + i * width, deltas, width, label=names[m])
        ax.axhline(0, color="black", lw=0.7)
        ax.set_xticks(np.arange(len(spec.categories)) + width * (len(models) - 1) / 2,
                      [c.replace("_", "-") for c in spec.categories], rotation=30, ha="right")
        ax.set_ylabel("Δ vocab diversity (neural − baseline)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "category_deltas.png")
        fig.savefig(paths[-1], dpi=130)
        plt.close(fig)
    return paths
