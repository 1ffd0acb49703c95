"""Alignment, the analysis: quality levels of every generation from its scores, the layer x direction x
map table with bootstrap intervals over prompts, the held-out alignment metrics, example outputs, and
the adapters' per-epoch curves."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

import numpy as np

from harness import stats
from harness.kinds.alignment.inject import reference_nll
from harness.report.tables import Analysis, Column, Table
from registry.kinds.alignment import QUALITY_LEVELS, AlignmentSpec


def depth_key(fraction: float) -> str:
    return f"depth{round(fraction * 100):03d}"


def direction_key(source: str, target: str) -> str:
    return f"{source}_to_{target}"


def level(spec: AlignmentSpec, record: dict, reference: float) -> str:
    """The report's qualitative scale from the automatic scores (thresholds in spec.quality)."""
    if record["nll"] is None:
        return "empty"
    if record["repetition"] >= spec.quality.loop_repetition:
        return "token loop"
    ratio = math.exp(record["nll"] - reference)
    for name, bound in zip(QUALITY_LEVELS, spec.quality.thresholds):
        if ratio <= bound:
            return name
    return "garbage"


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
    analysis.tables += [baseline, grid, examples, _findings(spec, groups, reference, fits)]
    if curves:
        epochs = [_typed(c) for c in curves if c.get("event") == "epoch"]
        by_adapter = defaultdict(list)  # (adapter, direction) -> its epoch rows, in run order
        for c in epochs:
            by_adapter[(c["adapter"], c["direction"])].append(c)
        analysis.tables.append(_epochs(spec, epochs, by_adapter, curves, analysis))
        analysis.tables.append(_adapter_findings(by_adapter, analysis))
        for (name, direction), rows in by_adapter.items():
            start = [c for c in rows if c["epoch"] == 0]
            if start:
                analysis.set(f"{name}.{direction}.start_val_loss", start[0]["val_loss"])
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
        f"Levels: a generation whose repetition rate (share of tokens repeating an earlier bigram) is at least "
        f"{spec.quality.loop_repetition:g} is a token loop; otherwise r = exp(its NLL under the target reading the prompt "
        f"natively - the target's mean NLL of its own greedy continuations): r <= {spec.quality.thresholds[0]:g} fluent, "
        f"<= {spec.quality.thresholds[1]:g} partial sentences, <= {spec.quality.thresholds[2]:g} some coherent phrases, "
        f"<= {spec.quality.thresholds[3]:g} fragments, else garbage. These thresholds are this project's; the report "
        "judged by eye. The reference is the target's own greedy text, the most likely continuation it can produce, "
        "so the scale is strict: any injected text reads as less plausible.",
        "Raw cosine and relative MSE reward a map for adding the target's mean; centred cosine and R² (1 - squared error "
        "relative to predicting the held-out targets' mean) do not. Intervals over five prompts come from a "
        "percentile bootstrap, which is too narrow with so few values: read them as rough.",
    ]
    return analysis


FAILED = {"garbage", "fragments", "token loop", "empty"}


def _log_ratios(rows: list[dict], ref: float) -> dict[int, float]:
    return {r["prompt_index"]: r["nll"] - ref for r in rows if r["nll"] is not None}


def _findings(spec: AlignmentSpec, groups: dict, reference: dict, fits: dict) -> Table:
    """The report's section-1 findings, each with this run's statistic and a verdict by a stated rule."""
    table = Table("findings", "The report's findings (section 1) against this run, per direction. Rules: 'fails' is "
                  "reproduced when at least 80% of the no-map generations are garbage, fragments, loops or empty; "
                  "'middle layers do best' when the lowest mean log ppl ratio is at a depth strictly between 0.25 "
                  "and 1 and its 95% bootstrap interval lies below those of the shallowest and deepest layers (not "
                  "reproduced when an end layer's interval lies below every middle one's); 'token loop' when most "
                  "last-layer generations loop; 'Procrustes fails' is not reproduced when Procrustes lowers the log "
                  "ratio at some depth (paired over prompts, the 95% bootstrap interval of the difference below 0)",
                  [Column("finding", align="l"), Column("direction", align="l"), Column("this run", align="l"),
                   Column("verdict", align="l")])
    for src, tgt in spec.directions():
        ref = reference[tgt]
        rows = {(m, f): groups.get((src, tgt, m, f), []) for m in spec.maps for f in spec.layers}
        direction = f"{src} -> {tgt}"
        if "none" in spec.maps:
            none = [r for f in spec.layers for r in rows[("none", f)]]
            failed = sum(level(spec, r, ref) in FAILED for r in none)
            share = failed / len(none) if none else float("nan")
            table.add("Without a map, injection fails at every layer (garbage, fragments or loops)", direction,
                      f"{failed}/{len(none)} generations at garbage, fragments, token loop or empty",
                      "reproduced in kind" if share >= 0.8 else "not reproduced")
            means = {f: float(np.mean(list(_log_ratios(rows[("none", f)], ref).values()))) for f in spec.layers
                     if _log_ratios(rows[("none", f)], ref)}
            if len(means) >= 3:
                best = min(means, key=means.get)
                cis = {f: stats.bootstrap_mean_interval(list(_log_ratios(rows[("none", f)], ref).values()), seed=spec.seed)
                       for f in means}
                ends = [min(means), max(means)]
                middles = [f for f in means if 0.25 < f < 1.0]
                verdict = ("not testable at this scale (no depth strictly between 0.25 and 1)" if not middles else
                           "reproduced in kind" if best in middles and all(cis[best][1] < cis[e][0] for e in ends) else
                           "not reproduced" if best in ends and all(cis[best][1] < cis[f][0] for f in middles) else
                           "not testable at this scale (intervals over the prompts overlap)")
                table.add("Without a map, middle layers (16-24 of 32) do best", direction,
                          f"lowest mean log ppl ratio at depth {best:g} ({means[best]:.2f}, CI "
                          f"[{cis[best][0]:.2f}, {cis[best][1]:.2f}])", verdict)
            last = rows[("none", max(spec.layers))]
            if max(spec.layers) == 1.0 and last:
                loops = sum(level(spec, r, ref) == "token loop" for r in last)
                table.add("Injecting the last layer collapses into a token loop", direction,
                          f"{loops}/{len(last)} token loops at depth 1", "reproduced in kind" if loops * 2 > len(last)
                          else "not reproduced")
        if {"none", "procrustes"} <= set(spec.maps):
            better, worse, tested = [], [], 0
            for f in spec.layers:
                a, b = _log_ratios(rows[("none", f)], ref), _log_ratios(rows[("procrustes", f)], ref)
                diffs = [b[i] - a[i] for i in a if i in b]
                if len(diffs) >= 2:
                    tested += 1
                    low, high = stats.bootstrap_mean_interval(diffs, seed=spec.seed)
                    (better if high < 0 else worse if low > 0 else []).append(f)
            table.add("Procrustes does not rescue injection ('Procrustes fails')", direction,
                      f"Procrustes lowers the log ppl ratio at depths {better or 'none'} and raises it at "
                      f"{worse or 'none'} (paired over prompts, 95% bootstrap)",
                      "not reproduced" if better else "reproduced in kind" if tested else
                      "not testable at this scale (fewer than two prompts per depth)")
            shifts = [abs(r["cka_after"] - r["cka_before"]) for (s_, t_, m, _), r in fits.items()
                      if (s_, t_, m) == (src, tgt, "procrustes")]
            narrowing = max(shifts, default=0.0) > 1e-6  # only a map from a wider source (a projection) moves it
            table.add("CKA would show Procrustes' effect (the report's plan)", direction,
                      f"largest |CKA after - before| over the Procrustes rows: {max(shifts, default=float('nan')):.4f}",
                      "design consequence (linear CKA is invariant to orthogonal maps" +
                      ("; a map from a wider source also projects, which moves CKA a little)" if narrowing
                       else ")"))
    return table


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


def _adapter_findings(groups: dict, analysis: Analysis) -> Table:
    """The report's section-2 readings of its training log, against each adapter's per-epoch validation."""
    table = Table("adapter_findings", "The report's adapter findings (section 2 and 'Critical question') against this "
                  "run. Rules: 'stable contrastive loss' is reproduced when the last epoch's validation InfoNCE is within "
                  "0.05 of ln(batch), i.e. at chance; 'epoch 1 does most, then a plateau' when the validation loss falls "
                  "in epoch 1 and epoch 2 takes off less than a quarter of that; 'converges by epoch 5-7' when the "
                  "lowest validation loss falls in epochs 5-7 and early stopping then fires (epoch 0 is the starting "
                  "map, before any update)",
                  [Column("finding", align="l"), Column("adapter, direction", align="l"), Column("this run", align="l"),
                   Column("verdict", align="l")])
    for (name, direction), rows in groups.items():
        by_epoch = {c["epoch"]: c for c in rows}
        label = f"{name} ({rows[0]['type']}), {direction}"
        last = by_epoch[max(by_epoch)]
        nce = last.get("infonce_minus_chance")
        if nce is not None:
            table.add("Contrastive loss 'stable at ~2.98' = ln 20: chance", label,
                      f"InfoNCE - ln B at epoch {last['epoch']}: {nce:+.3f}",
                      "reproduced in kind (the term stays at chance)" if abs(nce) < 0.05 else
                      "not reproduced (the term leaves chance)")
        if {0, 1, 2} <= set(by_epoch):
            drop1 = by_epoch[0]["val_loss"] - by_epoch[1]["val_loss"]
            drop2 = by_epoch[1]["val_loss"] - by_epoch[2]["val_loss"]
            analysis.set(f"{name}.{direction}.val_drop_epoch1", drop1)
            analysis.set(f"{name}.{direction}.val_drop_epoch2", drop2)
            table.add("Epoch 1 does most of the work, epoch 2 plateaus (-28% then <1%)", label,
                      f"validation loss {by_epoch[0]['val_loss']:.3f} -> {by_epoch[1]['val_loss']:.3f} -> "
                      f"{by_epoch[2]['val_loss']:.3f}",
                      "reproduced in kind" if drop1 > 0 and drop2 < 0.25 * drop1 else "not reproduced")
        fired = [c["epoch"] for c in rows if c["stopped"]]
        best = min(by_epoch.values(), key=lambda c: c["val_loss"])["epoch"]
        table.add("Converges by epoch 5-7 (early stopping would save 40-50%)", label,
                  f"lowest validation loss at epoch {best}" + (f"; early stopping fired after epoch {fired[0]}" if fired
                                                              else f"; no early stop in {max(by_epoch)} epochs"),
                  "not reproduced (no epoch beat the starting map)" if best == 0 else
                  "reproduced in kind" if fired and 5 <= best <= 7 else
                  "not testable at this scale (fewer epochs than the claim needs)" if max(by_epoch) < 7 else
                  "not reproduced")
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
