"""Latent bridge, the analysis: accuracies with Wilson intervals, invalid rates, per-class accuracy,
McNemar tests, soft-token statistics and training summaries, all recomputed from records.jsonl."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np

from harness import stats
from harness.claims import findings_for
from harness.kinds.bridge import claims as bridge_claims
from harness.kinds.bridge import lineage
from harness.kinds.bridge.answers import judge
from harness.kinds.contract import Analysis, Column, Table
from harness.report.tables import merge_seeds, percent, reported_text
from registry.kinds.bridge import CONTINUATION_SET, PASSKEY, SEEDED_METHODS, BridgeSpec

METHOD_NAMES = {
    "bridge": "Bridge", "sender_text": "Sender text (0-shot)", "receiver_text": "Receiver text (0-shot)",
    "sender_few_shot": "Sender text (few-shot)", "receiver_few_shot": "Receiver text (few-shot)",
    "text_relay": "Text relay", "noise": "Noise soft tokens", "prompt_tuning": "Prompt tuning (receiver only)",
    "random": "Random chance",
}
SCORINGS = {"generation": "generation", "scored": "scored"}
CLAIM_CATALOGUE = bridge_claims.CATALOGUE  # the claims a bridge spec may list (for pages of specs not run yet)
SELECTION_SET = "selection"  # the `set` of a selection run's records (development items, never evaluation items)


def first_expected(spec) -> dict:
    """metric -> the first reported value listed for it (later entries are alternatives the report also gave)."""
    found: dict = {}
    for exp in spec.expected:
        found.setdefault(exp.metric, exp.value)
    return found


def rate_cell(metrics: dict, spec, key: str, interval: bool = False) -> str:
    """'reproduced [interval] (reported, §section)': a rate beside the spec's first `expected` value for `key` and
    where the report gives it (the seed's tables disagree between sections, so every reported cell names its own).
    With `interval`, an accuracy keeps its Wilson interval beside it (bridge.generation.accuracy ->
    bridge.generation.ci_low)."""
    got = metrics.get(key)
    text = percent(got) if got is not None else "—"
    ci = key.removesuffix(".accuracy")
    if interval and got is not None and f"{ci}.ci_low" in metrics:
        text += f" [{100 * metrics[ci + '.ci_low']:.1f}, {100 * metrics[ci + '.ci_high']:.1f}]"
    entry = next((e for e in spec.expected if e.metric == key), None)
    if entry is None or not isinstance(entry.value, float):
        return text
    return f"{text} ({percent(entry.value)}, §{entry.section})"


def _correct(spec: BridgeSpec, records: list[dict], method: str, scoring: str) -> list[bool] | None:
    if any(scoring not in r[method] for r in records):
        return None
    return [judge(spec.task.task_type, r, r[method][scoring]) for r in records]


def _with_ci(successes: int, n: int) -> str:
    low, high = stats.wilson_interval(successes, n)
    return f"{100 * successes / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def _set_accuracy(out: Analysis, key: str, hits: list[bool]) -> str:
    """Set `<key>.accuracy`, `.ci_low` and `.ci_high` (Wilson 95%) and return the table cell."""
    low, high = stats.wilson_interval(sum(hits), len(hits))
    out.set(f"{key}.accuracy", float(np.mean(hits)))
    out.set(f"{key}.ci_low", low)
    out.set(f"{key}.ci_high", high)
    return f"{100 * sum(hits) / len(hits):.1f}% [{100 * low:.1f}, {100 * high:.1f}]"


def headline_metrics(spec: BridgeSpec) -> list[str]:
    """Metrics every complete run must have: each method's generation accuracy (and scored accuracy
    where the task has labels to score); a selection run's chosen settings."""
    if spec.selection is not None:
        return ["selection.chosen.sender_layer", "selection.chosen.lr"] + (
            ["selection.chosen.prompt_tuning_lr"] if spec.selection.prompt_tuning_lrs else [])
    scored = spec.task.task_type in ("classification", "multiple_choice")
    return [f"{m}.{s}.accuracy" for m in spec.evaluation.methods
            for s in (("generation", "scored") if scored else ("generation",))]


def seed_views(records: list[dict]) -> dict:
    """Training seed -> that seed's rows as a one-seed run writes them: the deterministic methods
    (stored once, in the first seed's rows) merged into every other seed's rows by item id.
    Records written before seeds were an axis have no `seed` and form one view."""
    seeds = list(dict.fromkeys(r.get("seed") for r in records))
    if len(seeds) <= 1:
        return {seeds[0] if seeds else None: records}
    first = [r for r in records if r.get("seed") == seeds[0]]
    by_id = {r["id"]: r for r in first}
    views = {seeds[0]: first}
    for seed in seeds[1:]:
        views[seed] = [{**by_id[r["id"]], **r} for r in records if r.get("seed") == seed]
    return views


def selection_results(spec: BridgeSpec, records: list[dict]) -> list[dict]:
    """Every setting a selection run tried, in grid order: {method, setting, hits (per development item), ...}."""
    grouped: dict[str, dict] = {}
    for r in records:
        if r.get("set") != SELECTION_SET:
            continue
        setting = r["setting"]
        key = json.dumps(setting, sort_keys=True)
        entry = grouped.setdefault(key, {"setting": setting, "method": setting["method"], "hits": {}, "items": 0})
        entry["items"] += 1
        for scoring in SCORINGS:
            if scoring in r["result"]:
                entry["hits"].setdefault(scoring, []).append(judge(spec.task.task_type, r, r["result"][scoring]))
    return list(grouped.values())


def chosen_settings(spec: BridgeSpec, records: list[dict]) -> dict:
    """The winners of a selection run: the bridge's (sender layer, lr) and prompt tuning's lr with the best
    development accuracy under `selection.scoring`; a tie goes to the earlier grid entry."""
    scoring = spec.selection.scoring
    best: dict[str, tuple[float, dict]] = {}
    for entry in selection_results(spec, records):
        accuracy = float(np.mean(entry["hits"][scoring]))
        if entry["method"] not in best or accuracy > best[entry["method"]][0]:
            best[entry["method"]] = (accuracy, entry["setting"])
    chosen = {}
    if "bridge" in best:
        chosen.update(sender_layer=best["bridge"][1]["sender_layer"], lr=best["bridge"][1]["lr"])
    if "prompt_tuning" in best:
        chosen["prompt_tuning_lr"] = best["prompt_tuning"][1]["lr"]
    return chosen


def _analyze_selection(spec: BridgeSpec, records: list[dict]) -> Analysis:
    out = Analysis()
    entries = selection_results(spec, records)
    chosen = chosen_settings(spec, records)
    n = entries[0]["items"] if entries else 0
    table = Table("selection", f"Selection on {n} development items (carved from the training split; the evaluation "
                  f"items are never read): accuracy of every setting, 95% Wilson intervals", [
        Column("Method", align="l"), Column("Sender layer", align="r"), Column("Learning rate", align="r"),
        Column("Scored", align="r"), Column("Generation", align="r"), Column("Chosen", align="l")],
        caption=f"One training seed ({spec.training_seeds()[0]}) per setting, {spec.training.steps} steps at batch "
                f"{spec.training.batch_size}. The best {spec.selection.scoring} accuracy wins; a tie goes to the "
                "earlier setting in the grid. Differences inside the intervals are noise: the choice is a "
                "pre-declared rule applied to development items, not a claim that the winner is better.")
    for entry in entries:
        setting, method = entry["setting"], entry["method"]
        cells = []
        for scoring in ("scored", "generation"):
            hits = entry["hits"].get(scoring)
            cells.append(_with_ci(sum(hits), len(hits)) if hits else None)
            if hits:
                layer = f".layer{setting['sender_layer']}" if "sender_layer" in setting else ""
                out.set(f"selection.{method}{layer}.lr{setting['lr']:g}.{scoring}.accuracy", float(np.mean(hits)))
        won = (method == "bridge" and setting.get("sender_layer") == chosen.get("sender_layer")
               and setting["lr"] == chosen.get("lr")) or (method == "prompt_tuning"
                                                          and setting["lr"] == chosen.get("prompt_tuning_lr"))
        table.add(METHOD_NAMES[method], setting.get("sender_layer"), f"{setting['lr']:g}", *cells, "yes" if won else "")
    out.tables.append(table)
    for key, value in chosen.items():
        out.set(f"selection.chosen.{key}", float(value))
    out.set("n_items", n)
    out.notes.append("This project's selection run: the chosen values are what every local bridge spec uses "
                     "(specs/base/bridge.yaml); no report gives them.")
    return out


def analyze(spec: BridgeSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
    """Every training seed together: each seed's tables as a one-seed run gives them, merged (the all-seed mean is
    the headline, every seed's value beside it), the accuracy of every method over all seeds, the paired tests of
    the bridge against each baseline clustered by item over the seeds, and the claims engine's findings on the
    report's claims; where the spec asks for it, zero-shot continuation scoring of both models."""
    if spec.selection is not None:
        return _analyze_selection(spec, records)
    scored = [r for r in records if r.get("set") == CONTINUATION_SET]
    records = [r for r in records if r.get("set") != CONTINUATION_SET]
    views = seed_views(records)
    seeds = list(views)
    by_seed = {s: [r for r in (curves or []) if r.get("seed") in (s, None) or len(seeds) == 1] for s in seeds}
    per_seed = {s: _analyze_view(spec, views[s], by_seed[s]) for s in seeds}
    out = merge_seeds(per_seed, rebuilt=("accuracy",))
    out.outcomes = _merge_outcomes(per_seed)
    out.tables.insert(0, _accuracy_table(spec, views, out))
    paired = _paired_table(spec, out)
    if paired.rows:  # a bridge-only spec (the GSM8K lineage) has no baseline to pair with
        out.tables.insert(1, paired)
    out.set("n_items", len(views[seeds[0]]))
    _digit_intervals(out)
    if len(seeds) > 1:
        out.notes.insert(0, f"Trained methods ran with {len(seeds)} training seeds ({', '.join(map(str, seeds))}) on the "
                            "same items; every number leads with all seeds together (seeded methods: the mean over "
                            "seeds), each seed's value beside it. Text baselines, the relay and chance are "
                            "deterministic and ran once.")
    if scored:
        out.tables.insert(1, _continuation_table(spec, scored, len(views[seeds[0]]), out))
    out.findings = findings_for(spec, bridge_claims.CATALOGUE, bridge_claims.ClaimData(spec, out))
    return out


def _digit_intervals(out: Analysis) -> None:
    """A passkey method's digit accuracy interval over all seeds: t over the seeds' means, or over items for one
    seed (digits of one item are not independent, so the item is the unit)."""
    for name, by_seed in out.outcomes.items():
        if name.endswith(".digits"):
            means = [float(np.mean(list(v.values()))) for v in by_seed.values()]
            low, high = stats.mean_interval(means if len(means) > 1 else list(next(iter(by_seed.values())).values()))
            if np.isnan(low):
                continue
            key = f"{name.split('.')[0]}.generation.digit_accuracy"
            out.set(f"{key}_ci_low", min(max(low, 0.0), 1.0))
            out.set(f"{key}_ci_high", min(max(high, 0.0), 1.0))


def _merge_outcomes(per_seed: dict) -> dict:
    """name -> seed -> item -> outcome over every seed's view; a deterministic method's outcomes are kept once,
    under the first seed (every view holds the same copy)."""
    seeds = list(per_seed)
    merged: dict[str, dict] = {}
    for seed, analysis in per_seed.items():
        for name, by_item in analysis.outcomes.items():
            method = name.split(".")[0]
            if method in SEEDED_METHODS or method == "bridge" or seed == seeds[0]:
                merged.setdefault(name, {})[seed] = by_item
    return merged


def _accuracy_table(spec: BridgeSpec, views: dict, out: Analysis) -> Table:
    """Every method's accuracy over all seeds. Deterministic methods: a 95% Wilson interval over the items. Seeded
    methods with several seeds: the mean over seeds with a Student t interval across them (the spread of training),
    every seed's accuracy and its Wilson interval beside it."""
    seeds = list(views)
    first = views[seeds[0]]
    methods = [m for m in spec.evaluation.methods if first and m in first[0]]
    passkey = spec.task.task_type == PASSKEY
    n = len(first)
    expected = first_expected(spec)
    table = Table("accuracy", f"Accuracy on the same {n} evaluation items, every training seed together", [
        Column("Method", align="l"), Column("Seeds", "d"), Column("Generation", align="r"), Column("Invalid", ".1%"),
        *([Column("Digit accuracy", ".1%")] if passkey else [Column("Scored (argmax log-likelihood)", align="r")]),
        Column("Per seed (generation, Wilson 95%)", align="l"), Column("Reported", align="r")],
        caption="Generation: greedy output parsed to an answer (invalid = no answer found). Scored: the label whose "
                "verbalizer (plus terminator) has the highest log-likelihood. A method trained with several seeds "
                "shows the mean over seeds with a 95% t interval across seeds (clipped to [0, 1]); a deterministic "
                "one, or one seed, a 95% Wilson interval over the items. Reported: the seed report's number.")
    for method in methods:
        own = [s for s in seeds if method in views[s][0]] if method in SEEDED_METHODS else seeds[:1]
        cells = []
        for scoring in ("generation",) + (() if passkey else ("scored",)):
            hits = {s: _correct(spec, views[s], method, scoring) for s in own}
            if any(h is None for h in hits.values()):
                cells.append(None)
                continue
            cells.append(_all_seed_cell(out, f"{method}.{scoring}", hits))
        invalid = float(np.mean([r[method]["generation"] is None for s in own for r in views[s]]))
        per_seed = " / ".join(f"{s}: {_with_ci(sum(h), len(h))}" for s in own
                              for h in [_correct(spec, views[s], method, "generation")]) if len(own) > 1 else None
        digits = out.metrics.get(f"{method}.generation.digit_accuracy") if passkey else None
        reported = expected.get(f"{method}.generation.accuracy")
        table.add(METHOD_NAMES[method], len(own), cells[0], invalid if method != "random" else None,
                  digits if passkey else cells[1], per_seed, percent(reported) if isinstance(reported, float) else None)
    return table


def _all_seed_cell(out: Analysis, key: str, hits: dict) -> str:
    """Set `<key>.accuracy` (mean over seeds) and its interval (t across seeds, or Wilson for one seed)."""
    accs = [float(np.mean(h)) for h in hits.values()]
    mean = float(np.mean(accs))
    if len(accs) > 1:
        low, high = (min(max(v, 0.0), 1.0) for v in stats.mean_interval(accs))
        text = f"{100 * mean:.1f}% [{100 * low:.1f}, {100 * high:.1f}] (t over {len(accs)} seeds)"
    else:
        (only,) = hits.values()
        low, high = stats.wilson_interval(sum(only), len(only))
        text = _with_ci(sum(only), len(only))
    out.set(f"{key}.accuracy", mean)
    out.set(f"{key}.ci_low", low)
    out.set(f"{key}.ci_high", high)
    return text


def _paired_table(spec: BridgeSpec, out: Analysis) -> Table:
    """The bridge against each baseline on the same items: the paired test over all seeds (clustered by item) and
    McNemar per seed. Descriptive: the verdicts on the report's claims are in the findings table."""
    table = Table("paired", "Bridge vs each baseline on the same items: paired tests over every seed", [
        Column("Baseline", align="l"), Column("Scoring", align="l"), Column("Bridge", ".1%"), Column("Baseline ", ".1%"),
        Column("Δ (pts)", "+.1f"), Column("p, all seeds", ".3g"), Column("Test", align="l"),
        Column("McNemar p per seed (b/c)", align="l")],
        caption="All seeds: each item is one unit, its difference the bridge's outcome averaged over its seeds minus "
                "the baseline's (McNemar's exact test for a single seed of both, else the sign-flip test). Per seed: "
                "McNemar on that seed's paired predictions, b = items only the bridge got right, c = only the "
                "baseline. Unadjusted: this table describes; each claim is tested on its own in the findings.")
    bridge_rows = {k: v for k, v in out.outcomes.items() if k.startswith("bridge.") and k.count(".") == 1}
    for scoring in SCORINGS:
        bridge = bridge_rows.get(f"bridge.{scoring}")
        if not bridge:
            continue
        for name, other in out.outcomes.items():
            method, _, rest = name.partition(".")
            if rest != scoring or method in ("bridge", "random"):
                continue
            items = sorted(set.intersection(*[set(v) for v in (*bridge.values(), *other.values())]))
            d = [np.mean([bridge[s][i] for s in bridge]) - np.mean([other[s][i] for s in other]) for i in items]
            single = len(bridge) == 1 and len(other) == 1
            test = stats.paired_difference_test(d, binary_single=single)
            key = f"paired.{method}.{scoring}"
            out.set(f"{key}.pvalue", test.pvalue)
            out.set(f"{key}.difference", test.mean_difference)
            per_seed = []
            for seed in bridge:
                theirs = other.get(seed, next(iter(other.values())))
                m = stats.mcnemar_test([bool(bridge[seed][i]) for i in items], [bool(theirs[i]) for i in items])
                out.set(f"{key}.seed_{seed}.pvalue", m.pvalue)
                per_seed.append(f"{seed}: {m.pvalue:.2g} ({m.b}/{m.c})")
            a = float(np.mean([np.mean([bridge[s][i] for s in bridge]) for i in items]))
            b = float(np.mean([np.mean([other[s][i] for s in other]) for i in items]))
            table.add(METHOD_NAMES[method], scoring, a, b, 100 * test.mean_difference, test.pvalue, test.method,
                      "; ".join(per_seed))
    texts = [m for m in ("sender_text", "receiver_text") if f"paired.{m}.generation.pvalue" in out.metrics]
    if len(texts) == 2 and "bridge.generation.accuracy" in out.metrics:  # §86's "bridge vs best model", all seeds
        better = max(texts, key=lambda m: out.metrics[f"{m}.generation.accuracy"])
        out.facts["super_additivity.better_text"] = better
        out.set("super_additivity.margin", out.metrics["bridge.generation.accuracy"]
                - out.metrics[f"{better}.generation.accuracy"])
        out.set("super_additivity.pvalue", out.metrics[f"paired.{better}.generation.pvalue"])
    return table


def _continuation_table(spec: BridgeSpec, rows: list[dict], n_eval: int, out: Analysis) -> Table:
    """acc and acc_norm of each model (lm-eval's multiple-choice protocol), beside the bridge's scored accuracy."""
    scoring = spec.task.continuation
    models = {"sender": spec.sender, "receiver": spec.receiver}
    table = Table("continuation", f"Zero-shot continuation scoring (the lm-evaluation-harness protocol) on "
                                  f"{len(rows)} items of {spec.task.eval_split}", [
        Column("Model", align="l"), Column("acc (summed log-likelihood)", align="r"),
        Column("acc_norm (per character)", align="r"), Column("Items", "d")],
        caption=f"Each choice is scored as a continuation of {scoring.context_template!r} after "
                f"{scoring.target_delimiter!r}: acc takes the choice with the highest summed log-likelihood, acc_norm "
                "the highest log-likelihood per character of the choice (lm-eval's metrics; per byte for ASCII text). "
                "These are the numbers published for models on this task. 95% Wilson intervals. The bridge row is "
                f"its scored accuracy on the {n_eval} evaluation items every method above shares, with the task's "
                "own prompt: compare rates, not items.")
    for role in ("sender", "receiver"):
        cells = []
        for metric in ("acc", "acc_norm"):
            cells.append(_set_accuracy(out, f"continuation.{role}.{metric}", [r[role][metric] == r["label"] for r in rows]))
        table.add(f"{role.capitalize()} ({models[role]}), zero-shot", *cells, len(rows))
    bridge = out.metrics.get("bridge.scored.accuracy")
    if bridge is not None:
        table.add("Bridge (scored, this page's items)", _with_ci(round(bridge * n_eval), n_eval), None, n_eval)
    return table


def _analyze_view(spec: BridgeSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
    out = Analysis()
    methods = [m for m in spec.evaluation.methods if records and m in records[0]]
    n = len(records)
    expected = first_expected(spec)
    passkey = spec.task.task_type == PASSKEY

    accuracy = Table("accuracy", f"Accuracy on the same {n} evaluation items (95% Wilson intervals)", [
        Column("Method", align="l"), Column("Generation", align="r"), Column("Invalid", ".1%"),
        *([Column("Digit accuracy", ".1%")] if passkey else [Column("Scored (argmax log-likelihood)", align="r")]),
        Column("Reported", align="r")],
        caption="Generation: greedy output parsed to an answer (invalid = no answer found). Scored: the label whose "
                "verbalizer (plus terminator) has the highest log-likelihood. Reported: the seed report's number.")
    for method in methods:
        gen = _correct(spec, records, method, "generation")
        out.outcomes[f"{method}.generation"] = {r["id"]: float(hit) for r, hit in zip(records, gen)}
        out.outcomes[f"{method}.valid"] = {r["id"]: r[method]["generation"] is not None for r in records}
        invalid = float(np.mean([r[method]["generation"] is None for r in records]))
        gen_cell = _set_accuracy(out, f"{method}.generation", gen)
        if method != "random":
            out.set(f"{method}.generation.invalid_rate", invalid)
        cells = [METHOD_NAMES[method], gen_cell, invalid if method != "random" else None]
        if passkey:
            per_item = [_digit_accuracy(r, method) for r in records]
            out.outcomes[f"{method}.digits"] = {r["id"]: d for r, d in zip(records, per_item)}
            digits = float(np.mean(per_item))
            out.set(f"{method}.generation.digit_accuracy", digits)
            for position, value in enumerate(_digit_accuracy_by_position(records, method), 1):
                out.set(f"{method}.generation.digit_accuracy.position_{position}", value)
            cells.append(digits)
        else:
            scored = _correct(spec, records, method, "scored")
            if scored is not None:
                out.outcomes[f"{method}.scored"] = {r["id"]: float(hit) for r, hit in zip(records, scored)}
            cells.append(_set_accuracy(out, f"{method}.scored", scored) if scored is not None else None)
        reported = expected.get(f"{method}.generation.accuracy")
        cells.append(percent(reported) if isinstance(reported, float) else None)
        accuracy.add(*cells)
    if not passkey and spec.task.task_type != "generation":
        out.set("chance.accuracy", 1 / len(spec.task.label_names()))
    out.tables.append(accuracy)
    if spec.task.task_type == "generation":
        out.tables.append(_prediction_diversity(records, methods, out))
        if spec.task.number_from == "final":
            out.tables.append(lineage.solution_quality(spec.task.task_type, records, methods, out, METHOD_NAMES))
    bottleneck = lineage.bottleneck(records, out)
    if bottleneck is not None:
        out.tables.append(bottleneck)
    if curves and (spec.training.diagnostics or spec.bridge.flow is not None):
        curve_table = lineage.curve_points(curves, out, expected, spec.training.batch_size)
        if curve_table is not None:
            out.tables.append(curve_table)
    if spec.task.number_from == "final":
        lineage.finding_facts(records, out, expected)
    if spec.task.task_type in ("classification", "multiple_choice"):
        per_class = _per_class(spec, records, methods, out)
        if per_class is not None:
            out.tables.append(per_class)
    out.tables.append(_soft_token_table(records, out, expected))
    if curves:
        out.tables.append(_training_table(curves, out, expected))
    return out


def _prediction_diversity(records: list[dict], methods: list[str], out: Analysis) -> Table:
    """Open answers (GSM8K): how many distinct answers each method gives, against the gold answers' count, and the
    most common ones. Section 60 saw the bridge's predictions collapse to a few round numbers."""
    table = Table("prediction_diversity", "Distinct answers per method (open-answer task)", [
        Column("Method", align="l"), Column("Distinct answers", "d"), Column("Most common (items)", align="l"),
        Column("Share of the most common", ".1%")],
        caption="Parsed generations; no answer found counts as invalid and is left out. The gold row is the "
                "evaluation items' answers.")
    rows = [("gold", [r["answer"] for r in records])] + [
        (m, [r[m]["generation"] for r in records if r[m]["generation"] is not None]) for m in methods if m != "random"]
    for method, answers in rows:
        counts = Counter(answers).most_common()
        if not counts:
            continue
        common = ", ".join(f"{a} ({c})" for a, c in counts[:5])
        out.set(f"{method}.distinct_answers", len(counts))
        out.set(f"{method}.top_answer_share", counts[0][1] / len(records))
        out.facts[f"{method}.prediction_collapse"] = (f"{len(counts)} distinct answers on {len(records)} items; "
                                                      f"most common: {common}")
        table.add("Gold answers" if method == "gold" else METHOD_NAMES[method], len(counts), common,
                  counts[0][1] / len(records))
    return table


def _digit_accuracy_by_position(records: list[dict], method: str) -> list[float]:
    width = len(records[0]["answer"])
    guesses = [(r[method]["generation"] or "").ljust(width)[:width] for r in records]
    return [float(np.mean([g[i] == r["answer"][i] for g, r in zip(guesses, records)])) for i in range(width)]


def _digit_accuracy(record: dict, method: str) -> float:
    guess = (record[method]["generation"] or "").ljust(len(record["answer"]))[: len(record["answer"])]
    return sum(a == b for a, b in zip(record["answer"], guess)) / len(record["answer"])


def _per_class(spec: BridgeSpec, records: list[dict], methods: list[str], out: Analysis) -> Table | None:
    """Per-class generation accuracy with Wilson intervals; metrics for every class, a table up to 12."""
    labels = spec.task.label_names()
    shown = [m for m in ("bridge", "receiver_text", "sender_text", "text_relay") if m in methods]
    table = Table("per_class", "Per-class accuracy (generation, 95% Wilson intervals)", [
        Column("Class", align="l"), Column("Items", "d"), *[Column(METHOD_NAMES[m], align="r") for m in shown]])
    for index, name in enumerate(labels):
        rows = [r for r in records if r["label"] == index]
        if not rows:
            continue
        key = spec.task.verbalizer(name).replace(" ", "_")
        cells = []
        for method in shown:
            hits = sum(r[method]["generation"] == index for r in rows)
            out.set(f"{method}.class.{key}.accuracy", hits / len(rows))
            cells.append(_with_ci(hits, len(rows)))
        table.add(spec.task.verbalizer(name), len(rows), *cells)
    return table if len(labels) <= 12 else None


def _soft_token_table(records: list[dict], out: Analysis, expected: dict) -> Table:
    rms = [r["bridge"]["soft_token_rms"] for r in records if "soft_token_rms" in r.get("bridge", {})]
    sim = [r["bridge"]["soft_token_similarity"] for r in records if "soft_token_similarity" in r.get("bridge", {})]
    table = Table("soft_tokens", "What the bridge sends", [
        Column("Quantity", align="l"), Column("Mean", ".4g"), Column("Min", ".4g"), Column("Max", ".4g"),
        Column("Reported", align="l")],
        caption="Token RMS: root-mean-square of each soft token; similarity: mean pairwise cosine between an item's "
                "soft tokens (seed 002, section 71 reports 0.0311-0.0314 and 0.883 for TREC). Summary tokens: the "
                "text relay's message in the sender's tokens, against the bridge's soft tokens (section 90: ~51 "
                "against 8).")
    if rms:
        out.set("bridge.soft_token_rms", float(np.mean(rms)))
        table.add("Soft-token RMS", float(np.mean(rms)), min(rms), max(rms), reported_text(expected.get("bridge.soft_token_rms")))
    sim = [s for s in sim if s == s]
    if sim:
        out.set("bridge.soft_token_similarity", float(np.mean(sim)))
        table.add("Within-item token similarity", float(np.mean(sim)), min(sim), max(sim),
                  reported_text(expected.get("bridge.soft_token_similarity")))
    summary = [r["text_relay"]["summary_tokens"] for r in records if "summary_tokens" in r.get("text_relay", {})]
    if summary:
        out.set("text_relay.summary_tokens", float(np.mean(summary)))
        table.add("Text relay: summary tokens", float(np.mean(summary)), min(summary), max(summary),
                  reported_text(expected.get("text_relay.summary_tokens")))
    return table


def _training_table(curves: list[dict], out: Analysis, reported: dict) -> Table:
    """Per training run: initial and final losses, the last quick evaluation, and the report's trajectory.

    Metrics: `training.<run>.initial_lm_loss` (step 1), `.final_lm_loss` (mean of the last 10% of steps),
    and at every quick-evaluation step N `.quick_eval_accuracy.step_N`, `.lm_loss.step_N`,
    `.diversity_loss.step_N` (the points the report gives its trajectories at, where the run has them)."""
    table = Table("training", "Training", [
        Column("Run", align="l"), Column("Steps", "d"), Column("Initial LM loss", ".3f"), Column("Final LM loss", ".3f"),
        Column("Final diversity loss", ".3f"), Column("Last quick-eval accuracy", ".1%"),
        Column("Reported trajectory (paper profile)", align="l")],
        caption="Initial: step 1; final: mean over the last 10% of steps; diversity loss = mean off-diagonal cosine "
                "of the batch's flattened soft tokens (weight in the spec). Reported: the report's points for the "
                "bridge (its own steps and batch size, one H100), shown in the training figure where the run reaches "
                "those steps.")
    by_run = defaultdict(list)
    for row in curves:
        by_run[(row["run"], row.get("seed"))].append(row)
    first_seed = {}
    for run_name, seed in by_run:
        first_seed.setdefault(run_name, seed)
    for (run_name, seed), rows in by_run.items():
        tail = rows[-max(1, len(rows) // 10):]
        main = "lm_loss" if "lm_loss" in rows[0] else "total_loss"  # the flow bridge has no LM loss
        lm_loss = float(np.mean([r[main] for r in tail]))
        diversity = float(np.mean([r["diversity_loss"] for r in tail])) if "diversity_loss" in tail[0] else None
        quick = [r for r in rows if "quick_eval_accuracy" in r]
        key = f"training.{run_name}" if seed == first_seed[run_name] else f"training.{run_name}.seed_{seed:g}"
        out.set(f"{key}.initial_{main}", rows[0][main])
        out.set(f"{key}.final_{main}", lm_loss)
        out.set(f"{key}.steps_run", rows[-1]["step"])  # the budget the run actually trained (claims compare them)
        if diversity is not None:
            out.set(f"{key}.final_diversity_loss", diversity)
        for r in quick:
            step = int(r["step"])
            out.set(f"{key}.quick_eval_accuracy.step_{step}", r["quick_eval_accuracy"])
            out.set(f"{key}.{main}.step_{step}", r[main])
            if "diversity_loss" in r:
                out.set(f"{key}.diversity_loss.step_{step}", r["diversity_loss"])
        label = run_name if seed is None else f"{run_name} (seed {seed:g})"
        trajectory = _reported_trajectory(reported, run_name) if seed == first_seed[run_name] else None
        table.add(label, int(rows[-1]["step"]), rows[0][main], lm_loss, diversity,
                  quick[-1]["quick_eval_accuracy"] if quick else None, trajectory)
    return table


def reported_points(reported: dict, run_name: str, column: str) -> list[tuple[int, float]]:
    """(step, value) pairs the report gives for a training curve (`training.<run>.<column>.step_N`)."""
    prefix = f"training.{run_name}.{column}.step_"
    return sorted((int(k[len(prefix):]), v) for k, v in reported.items()
                  if k.startswith(prefix) and isinstance(v, float))


def _reported_trajectory(reported: dict, run_name: str) -> str | None:
    parts = []
    start, end = reported.get(f"training.{run_name}.initial_lm_loss"), reported.get(f"training.{run_name}.final_lm_loss")
    if start is not None or end is not None:
        parts.append(f"LM loss {reported_text(start) or '?'} -> {reported_text(end) or '?'}")
    for column, label, fmt in (("lm_loss", "LM loss", reported_text), ("diversity_loss", "diversity", reported_text),
                               ("quick_eval_accuracy", "accuracy", percent)):
        points = reported_points(reported, run_name, column)
        if points:
            parts.append(f"{label} " + ", ".join(f"{fmt(v)} at {step}" for step, v in points))
    seconds = reported.get(f"training.{run_name}.seconds")
    if seconds is not None:
        parts.append(f"{seconds / 60:.1f} min")
    return "; ".join(parts) or None
