"""Alignment, the analysis: quality levels of every generation from its scores, the layer x direction x
map table with bootstrap intervals over prompts, the held-out alignment metrics, example outputs, and
the adapters' per-epoch curves."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

import numpy as np

from harness import stats
from harness.claims import findings_for
from harness.kinds.alignment import claims as alignment_claims
from harness.kinds.alignment.reference import reference_nll
from harness.kinds.contract import Analysis, Column, Table
from registry.kinds.alignment import QUALITY_LEVELS, AlignmentSpec


CLAIM_CATALOGUE = alignment_claims.CATALOGUE


def depth_key(fraction: float) -> str:
    return f"depth{round(fraction * 100):03d}"


def direction_key(source: str, target: str) -> str:
    return f"{source}_to_{target}"


def level(spec: AlignmentSpec, record: dict, reference: float) -> str:
    """The report's qualitative scale from the automatic scores (this project's thresholds, spec.quality): the worse
    of the perplexity reading and the repetition reading, so repetition can only lower a level."""
    if record["nll"] is None:
        return "empty"
    if record["repetition"] >= spec.quality.loop_repetition:
        return "token loop"
    ratio = math.exp(record["nll"] - reference)
    by_perplexity = next((i for i, bound in enumerate(spec.quality.thresholds) if ratio <= bound), 4)
    # repetition above thresholds[k] caps the level at k + 1 (0 fluent, 1 partial sentences, ...)
    by_repetition = sum(record["repetition"] > bound for bound in spec.quality.repetition_thresholds)
    return QUALITY_LEVELS[max(by_perplexity, by_repetition)]


def headline_metrics(spec: AlignmentSpec) -> list[str]:
    src, tgt = spec.source_model, spec.target_model
    middle = min(spec.layers, key=lambda f: abs(f - 0.5))
    keys = [f"{direction_key(src, tgt)}.{m}.{depth_key(middle)}.{k}" for m in spec.maps
            for k in ("log_ppl_ratio", "cka_after", "cosine")]
    keys += [f"adapter{i}.{direction_key(src, tgt)}.best_val_loss" for i in range(len(spec.adapters))]
    return keys


def analyze(spec: AlignmentSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
    analysis = Analysis()
    if not records:
        analysis.notes.append("The run has no records.")
        return analysis
    reference = reference_nll(records)
    generations = [r for r in records if r["record"] == "generation"]
    fits = {(r["source"], r["target"], r["map"], r["layer_fraction"]): r for r in records if r["record"] == "fit"}

    baseline = Table("baselines", "Same-model baselines: each model's greedy continuation of the prompts",
                     [Column("model", align="l"), Column("mean NLL of own continuation (nats/token)", ".3f"),
                      Column("perplexity", ".2f"), Column("repetition", ".2f"), Column("distinct-2", ".2f"),
                      Column(f"output for {spec.prompts[0]!r}", align="l")])
    for model in spec.model_names():
        rows = [r for r in generations if r["condition"] == "baseline" and r["target"] == model]
        first = next(r for r in rows if r["prompt_index"] == 0)
        baseline.add(model, reference.get(model), math.exp(reference[model]) if model in reference else None,
                     float(np.mean([r["repetition"] for r in rows])),
                     float(np.mean([r["distinct_2"] for r in rows if r["distinct_2"] is not None] or [np.nan])),
                     _quote(first["text"]))
        analysis.set(f"baseline.{model}.nll", reference.get(model))

    grid = Table("injection", "Injection by layer, direction and map: quality levels of the prompts' generations, "
                 "perplexity ratio to the target's own continuations (log, mean over prompts, 95% bootstrap "
                 "interval), repetition, first-token KL to the native run, and the map's held-out fit",
                 [Column("direction", align="l"), Column("depth", ".2f"), Column("layers (src -> tgt)", align="l"),
                  Column("map", align="l"), Column("levels", align="l"), Column("log ppl ratio", ".2f"),
                  Column("95% CI", align="l"), Column("repetition", ".2f"), Column("KL first token", ".2f"),
                  Column("cosine", ".3f"), Column("centred cosine", ".3f"), Column("rel. MSE", ".3f"), Column("R²", ".3f"),
                  Column("CKA before", ".3f"), Column("CKA after", ".3f")])
    examples = Table("examples", f"Generations for {spec.prompts[0]!r}",
                     [Column("direction", align="l"), Column("depth", ".2f"), Column("map", align="l"),
                      Column("level", align="l"), Column("output", align="l")])
    groups = defaultdict(list)
    for r in generations:
        if r["condition"] == "injected":
            groups[(r["source"], r["target"], r["map"], r["layer_fraction"])].append(r)
    for (src, tgt, map_name, fraction), rows in sorted(groups.items(), key=lambda kv: (spec.directions().index(kv[0][:2]),
                                                                                       kv[0][3], spec.maps.index(kv[0][2]))):
        ref = reference[tgt]
        levels = [level(spec, r, ref) for r in rows]
        log_ratios = [r["nll"] - ref for r in rows if r["nll"] is not None]
        low, high = stats.bootstrap_mean_interval(log_ratios, seed=spec.seed) if log_ratios else (None, None)
        key = f"{direction_key(src, tgt)}.{map_name}.{depth_key(fraction)}"
        mean_ratio = float(np.mean(log_ratios)) if log_ratios else None
        analysis.set(f"{key}.log_ppl_ratio", mean_ratio)
        analysis.set(f"{key}.log_ppl_ratio.ci_low", low)
        analysis.set(f"{key}.log_ppl_ratio.ci_high", high)
        analysis.set(f"{key}.repetition", float(np.mean([r["repetition"] for r in rows])))
        analysis.set(f"{key}.kl_first", float(np.mean([r["kl_first"] for r in rows])))
        counts = Counter(levels)
        analysis.facts[f"{key}.level"] = counts.most_common(1)[0][0]
        fit = fits.get((src, tgt, map_name, fraction), {})
        for metric in ("cosine", "centred_cosine", "relative_mse", "r2", "cka_before", "cka_after"):
            analysis.set(f"{key}.{metric}", fit.get(metric))
        grid.add(f"{src} -> {tgt}", fraction, f"{rows[0]['source_layer']} -> {rows[0]['target_layer']}", map_name,
                 ", ".join(f"{n} {name}" for name, n in counts.most_common()), mean_ratio,
                 f"[{low:.2f}, {high:.2f}]" if low is not None and math.isfinite(low) else "—",
                 float(np.mean([r["repetition"] for r in rows])), float(np.mean([r["kl_first"] for r in rows])),
                 fit.get("cosine"), fit.get("centred_cosine"), fit.get("relative_mse"), fit.get("r2"),
                 fit.get("cka_before"), fit.get("cka_after"))
        first = next((r for r in rows if r["prompt_index"] == 0), None)
        if first is not None:
            examples.add(f"{src} -> {tgt}", fraction, map_name, level(spec, first, ref), _quote(first["text"]))
    analysis.tables += [baseline, grid, examples]
    adapter_runs = {}
    if curves:
        epochs = [_typed(c) for c in curves if c.get("event") == "epoch"]
        by_adapter = defaultdict(list)  # (adapter, direction) -> its epoch rows, in run order
        for c in epochs:
            by_adapter[(c["adapter"], c["direction"])].append(c)
        analysis.tables.append(_epochs(spec, epochs, by_adapter, curves, analysis))
        for (name, direction), rows in by_adapter.items():
            for row in rows:
                seed = int(row.get("seed", spec.seed))
                adapter_runs.setdefault(f"{name} ({row['type']}), {direction}, seed {seed}", {})[row["epoch"]] = row
        for (name, direction), rows in by_adapter.items():
            start = [c for c in rows if c["epoch"] == 0]
            if start:
                analysis.set(f"{name}.{direction}.start_val_loss", start[0]["val_loss"])
    shifts = [abs(r["cka_after"] - r["cka_before"]) for (_, _, m, _), r in fits.items() if m == "procrustes"]
    levels = {(direction_key(r["source"], r["target"]), r["map"], r["layer_fraction"], r["prompt_index"]):
              level(spec, r, reference[r["target"]]) for r in generations if r["condition"] == "injected"}
    for (direction, map_name, fraction, prompt), name in levels.items():  # per prompt: level as a 0-5 score
        analysis.outcomes.setdefault(f"{direction}.{map_name}.{depth_key(fraction)}.level_score", {0: {}})[0][
            str(prompt)] = float(alignment_claims.SCORES[name])
    analysis.findings = findings_for(spec, CLAIM_CATALOGUE, alignment_claims.ClaimData(
        levels, sorted(spec.layers), max(shifts) if shifts else None, adapter_runs))
    held = next(iter(fits.values()), {})
    analysis.notes += [
        "Layer L is the residual stream entering block L (0 = embedding output, n = the last block's output before "
        "the final norm); depth fraction f is layer floor(f x n + 0.5) of each model.",
        "Injection: the target runs on as many positions as the source's prompt has, with zero input embeddings; its "
        "block L receives the mapped source states in place of its own stream on that pass, then it decodes greedily. "
        "Below block L the prefix's cache comes from the zero inputs (the report does not say what its code did). "
        "Where the source uses BOS, its BOS state is injected too, through a map fitted on pairs that never include BOS.",
        f"No map: {'the shared leading dimensions copied (zero-padded or truncated)' if spec.unaligned_map == 'pad_truncate' else 'a seeded random semi-orthogonal map'}"
        " on raw states. Procrustes: centred, scaled by the root mean squared norm, W = U V^T from the SVD of X^T Y, "
        "mapped into the target's centre and scale.",
        f"Calibration: {spec.calibration.texts} texts of {spec.calibration.dataset}/{spec.calibration.split} cut to "
        f"{spec.calibration.max_chars} characters, tokens paired by {spec.calibration.pairing.replace('_', ' ')}; "
        f"{held.get('fit_pairs', '?')} pairs fitted, {held.get('heldout_pairs', '?')} held-out pairs (texts never fitted on) "
        "give cosine, relative MSE and CKA.",
        "Linear CKA is invariant to orthogonal maps and isotropic scaling, so Procrustes cannot change it where the map "
        "is square (CKA before = after); it can only move the non-invariant metrics (cosine, relative MSE) and the "
        "generations. Where the widths differ, a semi-orthogonal map into the wider space keeps CKA too.",
        f"Levels (this project's scale; the report judged by eye): a generation whose repetition rate (share of tokens "
        f"repeating an earlier bigram) is at least {spec.quality.loop_repetition:g} is a token loop. Otherwise its level "
        f"is the worse of two readings. Perplexity: r = exp(its NLL under the target reading the prompt natively - the "
        f"target's mean NLL of its own greedy continuations), r <= {spec.quality.thresholds[0]:g} fluent, "
        f"<= {spec.quality.thresholds[1]:g} partial sentences, <= {spec.quality.thresholds[2]:g} some coherent phrases, "
        f"<= {spec.quality.thresholds[3]:g} fragments, else garbage. Repetition: above "
        f"{spec.quality.repetition_thresholds[0]:g} at best partial sentences, above {spec.quality.repetition_thresholds[1]:g} "
        f"at best some coherent phrases, above {spec.quality.repetition_thresholds[2]:g} at best fragments. So a "
        "repetitive text, however likely each token is, is never fluent. Fluent: reads like the target's own "
        "continuation, no repetition; partial sentences: grammatical stretches, some repetition; some coherent "
        "phrases: a few well-formed phrases; fragments: word pieces or much repetition; garbage: unrelated tokens; "
        "token loop: one short phrase repeated. The reference is the target's own greedy text, the most likely "
        "continuation it can produce, so the scale is strict: any injected text reads as less plausible.",
        "Raw cosine and relative MSE reward a map for adding the target's mean; centred cosine and R² (1 - squared error "
        "relative to predicting the held-out targets' mean) do not. Intervals over five prompts come from a "
        "percentile bootstrap, which is too narrow with so few values: read them as rough.",
    ]
    return analysis


def _log_ratios(rows: list[dict], ref: float) -> dict[int, float]:
    return {r["prompt_index"]: r["nll"] - ref for r in rows if r["nll"] is not None}


def _quote(text: str) -> str:
    return repr(text.replace("|", "/"))[1:-1][:120]


def _epochs(spec: AlignmentSpec, epochs: list[dict], groups: dict, curves: list[dict], analysis: Analysis) -> Table:
    table = Table("adapter_epochs", "Adapters: per-epoch evaluation on held-out texts (validation loss = weighted LM "
                  "loss + InfoNCE term; InfoNCE shown minus its chance level ln(batch)), held-out CKA, cosine and "
                  "relative MSE of adapted vs target states (raw, not centred), and the prompts' injected log perplexity "
                  "ratio. Epoch 0 is the starting map. The best epoch is picked on the same held-out texts whose metrics "
                  "are shown, so its numbers lean favourable. With one adapter per layer the per-layer losses are "
                  "separate and AdamW is scale-invariant, so layer weights change only the validation loss",
                  [Column("adapter", align="l"), Column("direction", align="l"), Column("depth", ".2f"),
                   Column("epoch", "d"), Column("train loss", ".3f"), Column("val loss", ".3f"),
                   Column("val LM loss", ".3f"), Column("InfoNCE - ln B", ".3f"), Column("CKA", ".3f"),
                   Column("cosine", ".3f"), Column("rel. MSE", ".3f"), Column("log ppl ratio", ".2f"),
                   Column("early stop", align="l")])
    for c in epochs:
        table.add(f"{c['adapter']} ({c['type']})", c["direction"], c["layer_fraction"], c["epoch"], c.get("train_loss"),
                  c["val_loss"], c["val_lm_loss"], c.get("infonce_minus_chance"), c["cka"], c["cosine"],
                  c["relative_mse"], c.get("log_ppl_ratio"), "fired" if c["stopped"] else "")
    for (name, direction), rows in groups.items():
        best = min(rows, key=lambda c: c["val_loss"])
        key = f"{name}.{direction}"
        analysis.set(f"{key}.best_val_loss", best["val_loss"])
        analysis.set(f"{key}.best_epoch", best["epoch"])
        analysis.set(f"{key}.epochs_run", max(c["epoch"] for c in rows))
        analysis.set(f"{key}.early_stopped", float(any(c["stopped"] for c in rows)))
        analysis.set(f"{key}.trainable_parameters", rows[0]["trainable_parameters"])
        last = [c for c in rows if c["epoch"] == max(r["epoch"] for r in rows)]
        analysis.set(f"{key}.final_cka", float(np.mean([c["cka"] for c in last])))
        analysis.set(f"{key}.final_cosine", float(np.mean([c["cosine"] for c in last])))
        analysis.facts[f"{key}.type"] = best["type"]
        per_epoch = {c["epoch"]: c for c in rows if c["epoch"] > 0}  # one row per layer and epoch; 0 is the start
        if not per_epoch:
            continue
        analysis.set(f"{key}.seconds_per_epoch", float(np.mean([c["seconds"] for c in per_epoch.values()])))
        analysis.set(f"{key}.batches_per_second", sum(c["batches"] for c in per_epoch.values())
                     / max(1e-9, sum(c["seconds"] for c in per_epoch.values())))
        for c in rows:
            if c["epoch"] == 1:
                analysis.set(f"{key}.epoch1.{depth_key(c['layer_fraction'])}.cka", c["cka"])
        for c in rows:
            if c["epoch"] == best["epoch"]:  # per layer, at the epoch with the lowest validation loss
                for metric in ("cka", "cosine", "relative_mse", "log_ppl_ratio"):
                    analysis.set(f"{key}.{depth_key(c['layer_fraction'])}.{metric}", c.get(metric))
    _reported_batches(spec, curves, analysis)
    return table


def _typed(row: dict) -> dict:
    """A curves row as written by the run, whether it comes from memory or back from curves.csv (where numbers
    are floats and empty cells are dropped)."""
    out = dict(row)
    for key in ("epoch", "batch", "steps", "batches", "source_layer", "target_layer", "trainable_parameters"):
        if key in out:
            out[key] = int(out[key])
    out["stopped"] = bool(out.get("stopped"))
    return out


def _reported_batches(spec: AlignmentSpec, curves: list[dict], analysis: Analysis) -> None:
    """Training-log values at the batches the report logged, for the metrics the spec's `expected` names
    (`adapter<i>.<direction>.epoch<e>.batch<b>.<loss|lm_loss|infonce>`)."""
    batches = {(c["adapter"], c["direction"], c["epoch"], c["batch"]): c
               for c in map(_typed, curves) if c.get("event") == "batch"}
    for exp in spec.expected:
        found = re.fullmatch(r"(adapter\d+)\.(\w+?)\.epoch(\d+)\.batch(\d+)\.(loss|lm_loss|infonce)", exp.metric)
        if found:
            row = batches.get((found[1], found[2], int(found[3]), int(found[4])))
            if row is not None:
                analysis.set(exp.metric, row.get(found[5]))
