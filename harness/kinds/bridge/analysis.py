"""Latent bridge, the analysis: accuracies with Wilson intervals, invalid rates, per-class accuracy,
McNemar tests, soft-token statistics and training summaries, all recomputed from records.jsonl."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from harness import stats
from harness.kinds.bridge import lineage
from harness.kinds.bridge.answers import judge
from harness.report.tables import Analysis, Column, Table, percent, reported_text
from registry.errors import SpecError
from registry.kinds.bridge import CONTINUATION_SET, PASSKEY, SEEDED_METHODS, BridgeSpec

METHOD_NAMES = {
    "bridge": "Bridge", "sender_text": "Sender text (0-shot)", "receiver_text": "Receiver text (0-shot)",
    "sender_few_shot": "Sender text (few-shot)", "receiver_few_shot": "Receiver text (few-shot)",
    "text_relay": "Text relay", "noise": "Noise soft tokens", "prompt_tuning": "Prompt tuning (receiver only)",
    "random": "Random chance",
}
SCORINGS = {"generation": "generation", "scored": "scored"}


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
    where the task has labels to score)."""
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


def analyze(spec: BridgeSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
    """The first training seed's tables (the report's protocol: one run), then the spread across seeds,
    and, where the spec asks for it, zero-shot continuation scoring of both models."""
    scored = [r for r in records if r.get("set") == CONTINUATION_SET]
    records = [r for r in records if r.get("set") != CONTINUATION_SET]
    views = seed_views(records)
    first = next(iter(views))
    out = _analyze_view(spec, views[first], curves)
    out.set("n_items", len(views[first]))
    if len(views) > 1:
        out.tables.insert(1, _across_seeds(spec, views, out))
        out.notes.append(f"Trained methods ran with {len(views)} training seeds ({', '.join(map(str, views))}); the "
                         f"accuracy, McNemar and per-class tables show seed {first}, the 'Across seeds' table all of them.")
    if scored:
        out.tables.insert(1, _continuation_table(spec, scored, len(views[first]), out))
    return out


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


def _across_seeds(spec: BridgeSpec, views: dict, out: Analysis) -> Table:
    """Per-seed accuracy of each seeded method, the mean with a t interval across seeds, and McNemar per seed."""
    seeds = list(views)
    first = seeds[0]
    scorings = ["generation"] + (["scored"] if spec.task.task_type != PASSKEY else [])
    table = Table("seeds", f"Across training seeds ({len(seeds)} seeds, same {len(views[first])} items)", [
        Column("Method", align="l"), Column("Scoring", align="l"),
        *[Column(f"seed {s}", ".1%") for s in seeds], Column("Mean", ".1%"), Column("SD", ".1%"),
        Column("95% CI across seeds", align="l"), Column(f"Wilson 95% (seed {first})", align="l"),
        Column("McNemar p vs best text baseline, per seed", align="l")],
        caption="Seeded methods (bridge, noise soft tokens, prompt tuning) are retrained per seed; text baselines are "
                "deterministic and evaluated once. The across-seed interval is Student's t on the per-seed accuracies "
                "(the spread of training; clipped to [0, 1]), the Wilson interval is over items for one seed (the spread of sampling "
                "items). McNemar pairs the method with the best text baseline of the first seed on the same items.")
    text_methods = [m for m in views[first][0] if m in METHOD_NAMES and m not in SEEDED_METHODS and m != "random"]
    for method in (m for m in SEEDED_METHODS if m in views[first][0]):
        for scoring in scorings:
            per_seed = {s: _correct(spec, views[s], method, scoring) for s in seeds}
            if any(v is None for v in per_seed.values()):
                continue
            accs = [float(np.mean(per_seed[s])) for s in seeds]
            key = f"{method}.{scoring}.accuracy"
            for s, acc in zip(seeds, accs):
                out.set(f"{key}.seed_{s}", acc)
            mean, sd = float(np.mean(accs)), float(np.std(accs, ddof=1))
            low, high = (min(max(v, 0.0), 1.0) for v in stats.mean_interval(accs))
            out.set(f"{key}.seed_mean", mean)
            out.set(f"{key}.seed_sd", sd)
            out.set(f"{key}.seed_ci_low", low)
            out.set(f"{key}.seed_ci_high", high)
            baselines = {m: _correct(spec, views[first], m, scoring) for m in text_methods}
            baselines = {m: v for m, v in baselines.items() if v is not None}
            tests = ""
            if baselines:
                best = max(baselines, key=lambda m: np.mean(baselines[m]))
                pvalues = []
                for s in seeds:
                    test = stats.mcnemar_test(per_seed[s], baselines[best])
                    out.set(f"mcnemar.seed_{s}.{method}.{best}.{scoring}.pvalue", test.pvalue)
                    pvalues.append(f"{test.pvalue:.2g}")
                tests = f"vs {METHOD_NAMES[best]}: " + " / ".join(pvalues)
            hits = per_seed[first]
            table.add(METHOD_NAMES[method], scoring, *accs, mean, sd,
                      f"[{100 * low:.1f}, {100 * high:.1f}]" if low == low else None,
                      _with_ci(sum(hits), len(hits)), tests)
    return table


def _analyze_view(spec: BridgeSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
    out = Analysis()
    methods = [m for m in spec.evaluation.methods if records and m in records[0]]
    n = len(records)
    expected = first_expected(spec)
    passkey = spec.task.task_type == PASSKEY
    correct: dict[tuple[str, str], list[bool]] = {}

    accuracy = Table("accuracy", f"Accuracy on the same {n} evaluation items (95% Wilson intervals)", [
        Column("Method", align="l"), Column("Generation", align="r"), Column("Invalid", ".1%"),
        *([Column("Digit accuracy", ".1%")] if passkey else [Column("Scored (argmax log-likelihood)", align="r")]),
        Column("Reported", align="r")],
        caption="Generation: greedy output parsed to an answer (invalid = no answer found). Scored: the label whose "
                "verbalizer (plus terminator) has the highest log-likelihood. Reported: the seed report's number.")
    for method in methods:
        gen = _correct(spec, records, method, "generation")
        correct[(method, "generation")] = gen
        out.per_item[method] = {r["id"]: hit for r, hit in zip(records, gen)}
        invalid = float(np.mean([r[method]["generation"] is None for r in records]))
        gen_cell = _set_accuracy(out, f"{method}.generation", gen)
        if method != "random":
            out.set(f"{method}.generation.invalid_rate", invalid)
        cells = [METHOD_NAMES[method], gen_cell, invalid if method != "random" else None]
        if passkey:
            digits = float(np.mean([_digit_accuracy(r, method) for r in records]))
            out.set(f"{method}.generation.digit_accuracy", digits)
            for position, value in enumerate(_digit_accuracy_by_position(records, method), 1):
                out.set(f"{method}.generation.digit_accuracy.position_{position}", value)
            cells.append(digits)
        else:
            scored = _correct(spec, records, method, "scored")
            if scored is not None:
                correct[(method, "scored")] = scored
            cells.append(_set_accuracy(out, f"{method}.scored", scored) if scored is not None else None)
        reported = expected.get(f"{method}.generation.accuracy")
        cells.append(percent(reported) if isinstance(reported, float) else None)
        accuracy.add(*cells)
    if not passkey and spec.task.task_type != "generation":
        out.set("chance.accuracy", 1 / len(spec.task.label_names()))
    out.tables.append(accuracy)
    mcnemar = _mcnemar_table(correct, methods, out)
    if mcnemar.rows:  # a bridge-only spec (the GSM8K lineage) has no baseline to pair with
        out.tables.append(mcnemar)
    if spec.task.task_type == "generation":
        diversity = _prediction_diversity(records, methods, out)
    findings = _findings_table(spec, methods, out)
    if findings.rows:
        out.tables.append(findings)
    if spec.task.task_type == "generation":
        out.tables.append(diversity)
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


# The report's comparative claims. A spec lists those the report makes about its task under `expected` as
# `claims.<id>` (value "yes", with the section and the report's numbers in the note); the page tests each one.
CLAIMS = {
    "bridge_above_text_relay": ("The bridge beats the text relay", ["text_relay"], "above"),
    "bridge_above_both_texts": ("Super-additive: the bridge beats both models' own zero-shot text",
                                ["sender_text", "receiver_text"], "above"),
    "bridge_above_few_shot": ("The bridge beats 5-shot prompting of either model", ["sender_few_shot", "receiver_few_shot"],
                              "above"),
    "bridge_above_prompt_tuning": ("The bridge beats prompt tuning on the receiver", ["prompt_tuning"], "above"),
    "bridge_below_better_text": ("The bridge falls below the better model's own zero-shot text",
                                 ["sender_text", "receiver_text"], "below"),
    "answers_collapse": ("The bridge's answers collapse to a few numbers whatever the question", [], "collapse"),
}
COLLAPSE_FRACTION = 0.1  # "collapsed": fewer distinct answers than this fraction of the gold answers' distinct values
# A claim about how the bridge compares with the models' own reading of the text (every claim but the relay's, whose
# point is that the relay falls to chance) needs baselines that can do the task as prompted: each compared method
# (for 'falls below', the better one) must score at least this and at least chance.
TASK_FLOOR = 0.1


def _findings_table(spec, methods: list[str], out: Analysis) -> Table:
    """The report's claims about this task (the spec's `claims.*` entries), each with this run's statistic and a
    verdict; the verdict is also set as the fact `claims.<id>`, beside the report's "yes"."""
    table = Table("findings", "The report's claims against this run (generation accuracy). Rules: 'beats' is reproduced "
                  "in kind when the bridge is more accurate than every method the claim names with McNemar's "
                  "Holm-adjusted p < 0.05; 'falls below' when it is less accurate than the better of the two with "
                  "p < 0.05; 'collapse' when the bridge gives fewer distinct answers than "
                  f"{COLLAPSE_FRACTION:.0%} of the gold answers' distinct values; not reproduced otherwise. Not testable "
                  f"at this scale when a compared text, few-shot or prompt-tuning baseline (for 'falls below', the "
                  f"better text) scores under {TASK_FLOOR:.0%} or under chance: the model cannot do the task as "
                  "prompted (the relay is exempt: its falling to chance is the report's point)",
                  [Column("claim", align="l"), Column("this run", align="l"), Column("verdict", align="l")])
    m = out.metrics
    bridge = m.get("bridge.generation.accuracy")

    def compared(method: str) -> str:
        return f"{METHOD_NAMES[method]} {percent(m[f'{method}.generation.accuracy'])} (p {m[f'mcnemar.{method}.generation.pvalue_holm']:.2g})"

    for exp in spec.expected:
        if not exp.metric.startswith("claims."):
            continue
        claim_id = exp.metric.removeprefix("claims.")
        if claim_id not in CLAIMS:
            raise SpecError(f"unknown claim {claim_id!r} (known: {', '.join(CLAIMS)})", spec.name, "expected")
        text, others, direction = CLAIMS[claim_id]
        label = f"{text} (§{exp.section})"
        if direction == "collapse":
            distinct, gold = m.get("bridge.distinct_answers"), m.get("gold.distinct_answers")
            if distinct is None or gold is None:
                continue
            held = distinct < COLLAPSE_FRACTION * gold
            shown = (f"bridge {distinct:.0f} distinct answers (the most common on {m['bridge.top_answer_share']:.0%} of "
                     f"items) for {gold:.0f} distinct gold answers")
        else:
            present = [o for o in others if o in methods and f"mcnemar.{o}.generation.pvalue_holm" in m]
            if bridge is None or len(present) != len(others):
                continue
            if direction == "above":
                held = all(bridge > m[f"{o}.generation.accuracy"] and m[f"mcnemar.{o}.generation.pvalue_holm"] < 0.05
                           for o in present)
                shown = f"bridge {percent(bridge)} vs " + ", ".join(compared(o) for o in present)
            else:
                better = max(present, key=lambda o: m[f"{o}.generation.accuracy"])
                held = bridge < m[f"{better}.generation.accuracy"] and m[f"mcnemar.{better}.generation.pvalue_holm"] < 0.05
                shown = f"bridge {percent(bridge)} vs the better, " + compared(better)
        verdict = "reproduced in kind" if held else "not reproduced"
        floor = max(TASK_FLOOR, m.get("chance.accuracy", 0))
        baselines = [better] if direction == "below" else [o for o in others if o != "text_relay"]
        if any(m[f"{o}.generation.accuracy"] < floor for o in baselines):
            verdict = "not testable at this scale"
        out.facts[exp.metric] = verdict
        table.add(label, shown, verdict)
    texts = [o for o in ("sender_text", "receiver_text") if f"mcnemar.{o}.generation.pvalue_holm" in m]
    if bridge is not None and len(texts) == 2:  # §86's "bridge vs best model", as a number the report gives
        better = max(texts, key=lambda o: m[f"{o}.generation.accuracy"])
        out.facts["super_additivity.better_text"] = better
        out.set("super_additivity.margin", bridge - m[f"{better}.generation.accuracy"])
        out.set("super_additivity.pvalue_holm", m[f"mcnemar.{better}.generation.pvalue_holm"])
    return table


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


def _mcnemar_table(correct: dict, methods: list[str], out: Analysis) -> Table:
    table = Table("mcnemar", "Bridge vs each baseline: McNemar's test on paired predictions", [
        Column("Baseline", align="l"), Column("Scoring", align="l"), Column("Bridge", ".1%"), Column("Baseline ", ".1%"),
        Column("Bridge only right (b)", "d"), Column("Baseline only right (c)", "d"), Column("Test", align="l"),
        Column("p", ".3g"), Column("p (Holm)", ".3g")],
        caption="Exact binomial test when b + c < 25, otherwise chi-square with continuity correction. Holm "
                "adjustment across all comparisons in this table.")
    rows, pvalues = [], []
    for scoring in SCORINGS:
        bridge = correct.get(("bridge", scoring))
        if bridge is None:
            continue
        for method in methods:
            other = correct.get((method, scoring))
            if method == "bridge" or other is None:
                continue
            test = stats.mcnemar_test(bridge, other)
            rows.append((method, scoring, float(np.mean(bridge)), float(np.mean(other)), test))
            pvalues.append(test.pvalue)
    for (method, scoring, acc_b, acc_o, test), adjusted in zip(rows, stats.adjust_pvalues(pvalues)):
        key = f"mcnemar.{method}.{scoring}"
        out.set(f"{key}.pvalue", test.pvalue)
        out.set(f"{key}.pvalue_holm", adjusted)
        out.set(f"{key}.b", test.b)
        out.set(f"{key}.c", test.c)
        table.add(METHOD_NAMES[method], scoring, acc_b, acc_o, test.b, test.c, test.method, test.pvalue, adjusted)
    return table


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
