"""Metrics of seed 002's GSM8K lineage (phases 1-15), from the records and curves a bridge run writes.

Used by the analysis when a generation task parses the final answer GSM8K-style (`task.number_from: final`):
  solution quality  accuracy, the report's "partial" and "failed" (entities.is_partial), entity transfer per
                    class (entities.transferred), output diversity (distinct outputs / items); Wilson intervals
  bottleneck        quantizer perplexity, codes used and code diversity over every evaluation token; soft-token
                    (or generated-embedding) min / max / mean / std beside the receiver's target embeddings'
  curves            every `training.bridge.<column>.step_N` a spec lists under `expected` is read from the curve
                    at step N when the run got there; the first value and the mean of the last 10% of steps of
                    each loss and diagnostic column (`initial_<column>`, `final_<column>`)
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from harness import stats
from harness.kinds.bridge.answers import judge
from harness.kinds.bridge.entities import ENTITY_CLASSES, is_partial, output_diversity, transfer_totals
from harness.kinds.contract import Analysis, Column, Table
from harness.report.tables import percent, reported_text

CURVE_STATS = ("scale", "z_variance", "soft_token_std", "tanh_saturation", "vq_perplexity", "codes_used",
               "code_diversity", "unweighted_lm_loss", "bottleneck_loss")
TRANSFER_CLASSES = (*ENTITY_CLASSES, "overall")
COLLAPSED_PERPLEXITY = 2.0  # a batch's code perplexity at or below this: (in effect) at most two codes in use
# the training curves the lineage page draws for every version that has them
SERIES = ("lm_loss", "flow_loss", "anchor_loss", "info_nce_loss", "diversity_loss", "scale", "z_variance",
          "vq_perplexity", "code_diversity")


def _rate(out: Analysis, key: str, hits: int, n: int) -> str:
    low, high = stats.wilson_interval(hits, n)
    out.set(key, hits / n)
    out.set(f"{key}.ci_low", low)
    out.set(f"{key}.ci_high", high)
    return f"{100 * hits / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}] ({hits}/{n})"


def solution_quality(task_type: str, records: list[dict], methods: list[str], out: Analysis,
                     names: dict[str, str]) -> Table:
    """Per method: partial, failed, entity transfer per class, output diversity (the report's lineage columns)."""
    table = Table("solution_quality", "Solution quality: partial, failed, entity transfer, diversity (95% Wilson intervals)", [
        Column("Method", align="l"), Column("Partial", align="l"), Column("Failed", align="l"),
        *[Column(f"Entity transfer: {c.replace('_', ' ')}", align="l") for c in TRANSFER_CLASSES],
        Column("Output diversity", align="l")],
        caption="Partial: a wrong answer whose output still reads as a GSM8K solution (a number and an arithmetic "
                "expression or the '####' marker; the report never defines it). Failed: neither correct nor partial. "
                "Entity transfer: the question's numbers, capitalised names and content words found in the output "
                "(matched/total; overall = numbers + names, as the report's V12/V13 totals). Output diversity: "
                "distinct outputs / items.")
    for method in methods:
        if method == "random" or "generated" not in records[0].get(method, {}):
            continue
        outputs = [r[method]["generated"] for r in records]
        right = [judge(task_type, r, r[method]["generation"]) for r in records]
        n = len(records)
        partial = sum(is_partial(o, c) for o, c in zip(outputs, right))
        failed = n - partial - sum(right)
        totals = transfer_totals([(r["input"], o) for r, o in zip(records, outputs)])
        if method == "bridge":  # per item, for the claims decided over items and seeds
            ids = [r["id"] for r in records]
            out.outcomes["bridge.partial"] = {i: float(is_partial(o, c)) for i, o, c in zip(ids, outputs, right)}
            seen: set[str] = set()
            first_seen = {}
            for i, o in zip(ids, outputs):  # an item whose output no earlier item gave: their mean is distinct / n
                first_seen[i] = float(o.strip() not in seen)
                seen.add(o.strip())
            out.outcomes["bridge.unique_output"] = first_seen
            per_item = {}
            for r, o in zip(records, outputs):
                hit, total = transfer_totals([(r["input"], o)])["overall"]
                if total:
                    per_item[r["id"]] = hit / total
            out.outcomes["bridge.entity_transfer"] = per_item
        cells = [_rate(out, f"{method}.partial_rate", partial, n), _rate(out, f"{method}.failed_rate", failed, n)]
        for cls in TRANSFER_CLASSES:
            matched, total = totals[cls]
            cells.append(_rate(out, f"{method}.entity_transfer.{cls}", matched, total) if total else None)
        distinct = round(output_diversity(outputs) * n)
        cells.append(_rate(out, f"{method}.output_diversity", distinct, n))
        table.add(names[method], *cells)
    return table


def _perplexity(codes: list) -> tuple[float, int]:
    counts = np.array(list(Counter(codes).values()), dtype=float)
    probs = counts / counts.sum()
    return float(math.exp(-(probs * np.log(probs)).sum())), len(counts)


def bottleneck(records: list[dict], out: Analysis) -> Table | None:
    """What the bridge's output looks like over the evaluation items: code usage and value statistics."""
    rows = [r["bridge"] for r in records if "bridge" in r]
    table = Table("bottleneck", "The bridge's output on the evaluation items", [
        Column("Quantity", align="l"), Column("Value", ".4g"), Column("Note", align="l")],
        caption="Codes: VQ codebook entries, or FSQ level vectors. Perplexity: exp(entropy) of code usage over every "
                "evaluation token. Soft tokens: statistics over every value the receiver read; target embeddings: "
                "the receiver's own embeddings of what the flow bridge was trained to generate.")
    codes = [c for r in rows for c in r.get("codes", [])]
    if codes:
        perplexity, used = _perplexity(codes)
        out.set("bridge.vq.perplexity", perplexity)
        out.set("bridge.vq.codes_used", used)
        out.set("bridge.vq.code_diversity", used / len(codes))
        table.add("Code perplexity", perplexity, f"{len(codes)} tokens")
        table.add("Codes used", used, None)
        table.add("Distinct codes / tokens", used / len(codes), "FSQ's 'diversity' in the report")
    for prefix, label in (("soft_token", "Soft tokens"), ("target_embedding", "Target embeddings")):
        if f"{prefix}_min" not in (rows[0] if rows else {}):
            continue
        low, high = min(r[f"{prefix}_min"] for r in rows), max(r[f"{prefix}_max"] for r in rows)
        mean, std = float(np.mean([r[f"{prefix}_mean"] for r in rows])), float(np.mean([r[f"{prefix}_std"] for r in rows]))
        for name, value in (("min", low), ("max", high), ("mean", mean), ("std", std)):
            out.set(f"bridge.{prefix}.{name}", value)
            table.add(f"{label}: {name}", value, "std: mean over items" if name == "std" else None)
    stopped = {r.get("training_stopped_at_step") for r in rows} - {None}
    if stopped:
        out.set("training.bridge.nonfinite_loss_at_step", float(min(stopped)))
        table.add("Training stopped: NaN/Inf loss at step", float(min(stopped)), "training.on_nonfinite_loss: stop")
    return table if table.rows else None


def curve_points(curves: list[dict], out: Analysis, reported: dict, batch_size: int) -> Table | None:
    """Set the curve values a spec's reported numbers name, and first/last values of the loss and diagnostic
    columns; returns the table of the latter beside the report's first/final values."""
    rows = [r for r in curves if r.get("run") == "bridge"]
    if not rows:
        return None
    first_seed = rows[0].get("seed")
    rows = [r for r in rows if r.get("seed") == first_seed]
    by_step = {int(r["step"]): r for r in rows}
    for key in reported:
        if not key.startswith("training.bridge.") or ".step_" not in key:
            continue
        column, step = key[len("training.bridge."):].rsplit(".step_", 1)
        if step.isdigit() and int(step) in by_step and column in by_step[int(step)]:
            value = by_step[int(step)][column]
            if isinstance(value, (int, float)) and value == value:
                out.set(key, float(value))
    table = Table("curves", "Training curves: the first step and the last 10% of steps", [
        Column("Curve", align="l"), Column("Step 1", ".4g"), Column("Last 10%", ".4g"),
        Column("Reported first", align="l"), Column("Reported final", align="l"), Column("Note", align="l")],
        caption="Reported values are the report's first and final values where it gives them (its own steps; "
                "the local runs are shorter). InfoNCE's chance value ln(batch) is what a bridge that sends the "
                "same tokens for every item scores.")
    columns = [c for c in dict.fromkeys(c for r in rows for c in r) if c not in ("run", "step", "seed", "lr", "grad_norm",
                                                                             "quick_eval_accuracy")]
    for column in columns:
        values = [r[column] for r in rows if isinstance(r.get(column), (int, float)) and r[column] == r[column]]
        if not values or not (column in CURVE_STATS or column.endswith("_loss")):
            continue
        first, final = float(values[0]), float(np.mean(values[-max(1, len(values) // 10):]))
        out.set(f"training.bridge.initial_{column}", first)
        out.set(f"training.bridge.final_{column}", final)
        note = f"ln(batch {batch_size}) = {math.log(batch_size):.4g}" if column == "info_nce_loss" else None
        table.add(column, first, final, reported_text(reported.get(f"training.bridge.initial_{column}")),
                  reported_text(reported.get(f"training.bridge.final_{column}")), note)
    for column in SERIES:
        points = [(int(r["step"]), float(r[column])) for r in rows if isinstance(r.get(column), (int, float))]
        if points:
            out.series[column] = points
    if "info_nce_loss" in rows[0]:
        out.set("training.bridge.info_nce_chance", math.log(batch_size))
    collapsed = [int(r["step"]) for r in rows if isinstance(r.get("vq_perplexity"), (int, float))
                 and r["vq_perplexity"] <= COLLAPSED_PERPLEXITY]
    if collapsed:  # the first step whose batch used (in effect) at most two codes
        out.set("training.bridge.code_collapse_step", float(collapsed[0]))
    return table if table.rows else None


# What this run measured for each qualitative finding the report states (`bridge.finding.<name>` under expected):
# the measurements that bear on it, shown beside the report's words. Unlisted findings get output diversity and
# entity transfer.
FINDING_MEASURES = {
    "posterior_collapse": ("diversity", "common", "transfer"), "mode_collapse": ("diversity", "common", "transfer"),
    "identical_outputs": ("diversity", "common"), "identical_garbage": ("diversity", "common", "loops"),
    "template_hallucination": ("common", "transfer"), "semantic_drift": ("loops", "transfer"),
    "degenerate_loops": ("loops",), "garbage_outputs": ("diversity", "loops", "transfer"),
    "diverse_garbage": ("diversity", "transfer"), "catastrophic_output": ("loops", "diversity"),
    "meta_commentary": ("meta",), "entity_scrambling": ("transfer",), "codebook_collapse": ("codes",),
    "vq_loss_explosion": ("nonfinite",), "tanh_saturation": ("saturation",), "no_gradient": ("codes",),
    "anchor_bug": ("anchor",), "transmitted_information": ("transfer", "diversity"), "no_results": (),
}
LOOP = re.compile(r"(\S+(?:\s+\S+){0,2}?)(?:\s*\1){3,}")
META_WORDS = re.compile(r"\b(vector|thought)s?\b", re.IGNORECASE)


def finding_facts(records: list[dict], out: Analysis, reported: dict) -> None:
    """Measured facts beside each `bridge.finding.*` the spec lists, and the loop and meta-commentary rates
    (`bridge.loop_rate`, `bridge.meta_commentary_rate`) the lineage page's verdicts compare across versions."""
    rows = [r for r in records if "generated" in r.get("bridge", {})]
    outputs = [r["bridge"]["generated"] for r in rows]
    if not outputs:
        return
    n = len(outputs)
    common, count = Counter(o.strip() for o in outputs).most_common(1)[0]
    out.outcomes["bridge.loop"] = {r["id"]: float(bool(LOOP.search(o))) for r, o in zip(rows, outputs)}
    out.outcomes["bridge.meta_commentary"] = {r["id"]: float(bool(META_WORDS.search(o))) for r, o in zip(rows, outputs)}
    loops = int(sum(out.outcomes["bridge.loop"].values()))
    meta = int(sum(out.outcomes["bridge.meta_commentary"].values()))
    out.set("bridge.loop_rate", loops / n)
    out.set("bridge.meta_commentary_rate", meta / n)
    measures = {
        "diversity": f"{len({o.strip() for o in outputs})}/{n} distinct outputs",
        "common": f"the most common output ({count}/{n} items): {common[:80]!r}",
        "loops": f"{loops}/{n} outputs repeat a 1-3 word phrase 4+ times",
        "meta": f"{meta}/{n} outputs mention 'vector' or 'thought'",
    }
    if "bridge.entity_transfer.overall" in out.metrics:
        measures["transfer"] = f"entity transfer {percent(out.metrics['bridge.entity_transfer.overall'])} (numbers + names)"
    if "bridge.vq.perplexity" in out.metrics:
        measures["codes"] = (f"code perplexity {out.metrics['bridge.vq.perplexity']:.3g}, "
                             f"{int(out.metrics['bridge.vq.codes_used'])} codes used on the evaluation items")
    if "training.bridge.nonfinite_loss_at_step" in out.metrics:
        measures["nonfinite"] = f"training loss NaN/Inf at step {int(out.metrics['training.bridge.nonfinite_loss_at_step'])}"
    else:
        measures["nonfinite"] = "no NaN/Inf training loss"
    if "training.bridge.initial_anchor_loss" in out.metrics:
        measures["anchor"] = (f"anchor loss {out.metrics['training.bridge.initial_anchor_loss']:.3g} at step 1, "
                              f"{out.metrics['training.bridge.final_anchor_loss']:.3g} over the last 10% of steps")
    if "training.bridge.final_tanh_saturation" in out.metrics:
        measures["saturation"] = (f"{percent(out.metrics['training.bridge.final_tanh_saturation'])} of outputs saturated "
                                  f"(|x| > 3) over the last 10% of steps; z variance "
                                  f"{out.metrics.get('training.bridge.final_z_variance', float('nan')):.3g}")
    for key in reported:
        if key.startswith("bridge.finding."):
            wanted = FINDING_MEASURES.get(key.removeprefix("bridge.finding."), ("diversity", "transfer"))
            found = [measures[m] for m in wanted if m in measures]
            if found:
                out.facts[key] = "; ".join(found)
