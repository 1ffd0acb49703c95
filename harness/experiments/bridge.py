"""Latent bridge (seed 002, phases 16-25): train the bridge, evaluate it and every baseline on the same items.

`run` does the expensive work and writes one record per evaluation item holding every method's
generation (raw text and parsed prediction) and scored label; `analyze` recomputes accuracies,
Wilson intervals, invalid-response rates, per-class accuracy and McNemar tests from those
records; `summary` builds the tables that span several specs (master table, token ablation,
reasoning, McNemar, latency).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness import stats
from harness.bridge.modules import LatentBridge, batch_diversity_loss, mean_offdiagonal_cosine
from harness.bridge.receiver import ReceiverPrompt, generate_texts
from harness.bridge.sender_states import pad_states, sender_states
from harness.bridge.task import TaskData, TaskItem, build_task, judge
from harness.bridge.training import train
from harness.experiments.base import RunContext, RunOutput
from harness.models import lm as L
from harness.report.figures import pyplot, save_figure
from harness.report.tables import Analysis, Column, Table
from registry.kinds.bridge import PASSKEY, BridgeSpec

METHOD_NAMES = {
    "bridge": "Bridge", "sender_text": "Sender text (0-shot)", "receiver_text": "Receiver text (0-shot)",
    "sender_few_shot": "Sender text (few-shot)", "receiver_few_shot": "Receiver text (few-shot)",
    "text_relay": "Text relay", "noise": "Noise soft tokens", "prompt_tuning": "Prompt tuning (receiver only)",
    "random": "Random chance",
}
SCORINGS = {"generation": "generation", "scored": "scored"}
LATENCY_FILE = Path("benchmarks/results/latency.json")


# ================================================================== run
class SoftPrompt(nn.Module):
    """Receiver-only prompt tuning: K trainable vectors before the item text; no sender."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.vectors = nn.Parameter(init.clone())


def _receiver_rms(rp: ReceiverPrompt, texts: list[str]) -> float:
    """Mean per-token RMS of the receiver's input embeddings of real text (the soft tokens' target scale)."""
    with torch.no_grad():
        embeds = torch.cat([rp.text_middle(t) for t in texts])
    return float(embeds.float().pow(2).mean(-1).sqrt().mean())


def _soft_tokens(bridge: LatentBridge, states: list[torch.Tensor], device, batch_size: int = 32) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for start in range(0, len(states), batch_size):
            padded, mask = pad_states(states[start:start + batch_size], device)
            out.extend(bridge(padded, mask)[0])
    return out


def _accuracy(task: TaskData, items: list[TaskItem], results: list[dict]) -> float:
    key = "scored" if task.is_classification else "generation"
    return float(np.mean([task.correct(item, r[key]) for item, r in zip(items, results)]))


def run(spec: BridgeSpec, ctx: RunContext) -> RunOutput:
    task = build_task(spec, ctx)
    methods = spec.evaluation.methods
    sender = ctx.models.get(spec.sender)
    receiver = ctx.models.get(spec.receiver)
    device, eval_batch = receiver.device, spec.evaluation.batch_size
    layer = spec.bridge.sender_layer

    bar = ctx.progress(total=len(task.train) + len(task.eval), desc="sender states", unit="item")
    train_states = sender_states(sender, [task.sender_text(i) for i in task.train], layer, ctx.cache_dir, progress=bar)
    eval_states = sender_states(sender, [task.sender_text(i) for i in task.eval], layer, ctx.cache_dir, progress=bar)
    bar.close()

    primed = ReceiverPrompt.build(receiver, task, task.task.primer)
    prompt_embeds = primed.text_middle(task.task.prompt)
    calibration = train_states[: spec.bridge.normalizer.calibration_items]
    stacked = torch.cat(calibration)
    rms = _receiver_rms(primed, [task.item_text(i.input) for i in task.train[: spec.bridge.normalizer.calibration_items]])
    torch.manual_seed(spec.seed)
    bridge = LatentBridge(spec.bridge, stacked.shape[-1], receiver.model.config.hidden_size, stacked.mean(0),
                          stacked.std(0), rms).to(device)
    answers = [primed.answer_ids(task.answer_text(i)) for i in task.train]
    quick = task.eval[: spec.training.quick_eval_items]

    def bridge_loss(indices: list[int]) -> dict:
        padded, mask = pad_states([train_states[i] for i in indices], device)
        soft, aux = bridge(padded, mask)
        lm_loss = primed.answer_loss([primed.soft_middle(s, prompt_embeds) for s in soft], [answers[i] for i in indices])
        diversity = batch_diversity_loss(soft)
        losses = {"lm": lm_loss, "diversity": diversity}
        total = lm_loss + spec.training.diversity_weight * diversity
        if "vq_loss" in aux:
            losses["vq"] = aux["vq_loss"]
            total = total + spec.bridge.vq.weight * aux["vq_loss"]
        return {"total": total, **losses}

    def bridge_quick_eval() -> float:
        soft = _soft_tokens(bridge, eval_states[: len(quick)], device)
        return _accuracy(task, quick, primed.evaluate([primed.soft_middle(s, prompt_embeds) for s in soft], eval_batch))

    bar = ctx.progress(total=spec.training.steps, desc="training bridge", unit="step")
    trained = train(bridge, bridge_loss, n_items=len(task.train), steps=spec.training.steps, spec=spec.training,
                    lr=spec.training.lr, seed=spec.seed, checkpoint=ctx.state_dir / "bridge.pt", label="bridge",
                    quick_eval=bridge_quick_eval, progress=bar)
    bar.close()
    curves = list(trained.log)

    results: dict[str, list[dict]] = {}
    bar = ctx.progress(total=len(task.eval) * len([m for m in methods if m != "random"]), desc="evaluating", unit="item")
    soft_eval = _soft_tokens(bridge, eval_states, device)
    results["bridge"] = primed.evaluate([primed.soft_middle(s, prompt_embeds) for s in soft_eval], eval_batch, bar)
    for r, soft in zip(results["bridge"], soft_eval):
        r["soft_token_rms"] = round(float(soft.pow(2).mean(-1).sqrt().mean()), 6)
        r["soft_token_similarity"] = round(_mean_pairwise_cosine(soft), 6)

    if "noise" in methods:
        generator = torch.Generator().manual_seed(spec.seed + 1)
        scale = float(bridge.output.scale.detach())
        noise = [torch.randn(s.shape, generator=generator) for s in soft_eval]
        noise = [n / n.pow(2).mean(-1, keepdim=True).sqrt() * scale for n in noise]
        results["noise"] = primed.evaluate([primed.soft_middle(n.to(device), prompt_embeds) for n in noise], eval_batch, bar)

    text_prompts: dict[tuple[str, bool], ReceiverPrompt] = {}

    def text_prompt(lm, few_shot: bool) -> ReceiverPrompt:
        key = (lm.name, few_shot)
        if key not in text_prompts:
            prefix = task.instruction() + (task.few_shot_block() if few_shot else "")
            text_prompts[key] = ReceiverPrompt.build(lm, task, prefix)
        return text_prompts[key]

    for method, lm, few_shot in (("receiver_text", receiver, False), ("sender_text", sender, False),
                                 ("receiver_few_shot", receiver, True), ("sender_few_shot", sender, True)):
        if method in methods:
            tp = text_prompt(lm, few_shot)
            results[method] = tp.evaluate([tp.text_middle(task.item_text(i.input)) for i in task.eval], eval_batch, bar)

    if "text_relay" in methods:
        prompts = [task.task.relay_template.format(input=i.input) for i in task.eval]
        summaries = generate_texts(sender, prompts, task.task.relay_max_tokens, eval_batch)
        tp = text_prompt(receiver, False)
        results["text_relay"] = tp.evaluate([tp.text_middle(task.item_text(s)) for s in summaries], eval_batch, bar)
        for r, summary in zip(results["text_relay"], summaries):
            r["summary"] = summary

    if "prompt_tuning" in methods:
        curves += _prompt_tuning(spec, ctx, task, receiver, results, eval_batch, bar)

    if "random" in methods:
        results["random"] = _random_guesses(spec, task)
    bar.close()

    records = []
    for index, item in enumerate(task.eval):
        record = {"id": item.id, "input": item.input, "answer": item.answer, "label": item.label,
                  **{m: results[m][index] for m in methods}}
        records.append(record)
    return RunOutput(records=records, curves=curves)


def _prompt_tuning(spec, ctx, task, receiver, results, eval_batch, bar) -> list[dict]:
    pt = spec.evaluation.prompt_tuning
    k = pt.soft_tokens or spec.bridge.soft_tokens * spec.bridge.recurrent_steps
    plain = ReceiverPrompt.build(receiver, task, "")
    rng = torch.Generator().manual_seed(spec.seed + 2)
    vocab_ids = torch.randint(0, receiver.model.config.vocab_size, (k,), generator=rng)
    soft_prompt = SoftPrompt(L.embed(receiver, vocab_ids).detach().float()).to(receiver.device)
    middles = [plain.text_middle(task.item_text(i.input)) for i in task.train]
    answers = [plain.answer_ids(task.answer_text(i)) for i in task.train]

    def loss(indices: list[int]) -> dict:
        batch = [torch.cat([soft_prompt.vectors, middles[i]]) for i in indices]
        lm_loss = plain.answer_loss(batch, [answers[i] for i in indices])
        return {"total": lm_loss, "lm": lm_loss}

    sub = ctx.progress(total=pt.steps, desc="prompt tuning", unit="step")
    trained = train(soft_prompt, loss, n_items=len(task.train), steps=pt.steps, spec=spec.training, lr=pt.lr,
                    seed=spec.seed, checkpoint=ctx.state_dir / "prompt_tuning.pt", label="prompt_tuning", progress=sub)
    sub.close()
    with torch.no_grad():
        eval_middles = [torch.cat([soft_prompt.vectors, plain.text_middle(task.item_text(i.input))]) for i in task.eval]
    results["prompt_tuning"] = plain.evaluate(eval_middles, eval_batch, bar)
    return trained.log


def _random_guesses(spec: BridgeSpec, task: TaskData) -> list[dict]:
    rng = random.Random(f"random:{spec.seed}")
    out = []
    for item in task.eval:
        if task.is_classification:
            guess = rng.randrange(len(task.verbalizers))
            out.append({"generated": task.verbalizers[guess], "generation": guess, "scored": guess})
        elif task.task.task_type == PASSKEY:
            guess = "".join(rng.choice("0123456789") for _ in item.answer)
            out.append({"generated": guess, "generation": guess})
        else:
            out.append({"generated": "", "generation": None})  # no chance level for open-ended numbers
    return out


def _mean_pairwise_cosine(soft: torch.Tensor) -> float:
    """Mean cosine between one item's soft tokens (NaN for a single token)."""
    return float(mean_offdiagonal_cosine(soft.float())) if soft.shape[0] >= 2 else float("nan")


# ================================================================== analysis
def first_expected(spec) -> dict:
    """metric -> the first reported value listed for it (later entries are alternatives the report also gave)."""
    found: dict = {}
    for exp in spec.expected:
        found.setdefault(exp.metric, exp.value)
    return found


def _correct(spec: BridgeSpec, records: list[dict], method: str, scoring: str) -> list[bool] | None:
    if any(scoring not in r[method] for r in records):
        return None
    return [judge(spec.task.task_type, r, r[method][scoring]) for r in records]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


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


def analyze(spec: BridgeSpec, records: list[dict], curves: list[dict] | None = None) -> Analysis:
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
        cells.append(_pct(reported) if isinstance(reported, float) else None)
        accuracy.add(*cells)
    if not passkey and spec.task.task_type != "generation":
        out.set("chance.accuracy", 1 / len(spec.task.label_names()))
    out.tables.append(accuracy)
    out.tables.append(_mcnemar_table(correct, methods, out))
    if spec.task.task_type in ("classification", "multiple_choice"):
        per_class = _per_class(spec, records, methods, out)
        if per_class is not None:
            out.tables.append(per_class)
    out.tables.append(_soft_token_table(records, out, expected))
    if curves:
        out.tables.append(_training_table(curves, out))
    return out


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
        Column("Quantity", align="l"), Column("Mean", ".4f"), Column("Min", ".4f"), Column("Max", ".4f"),
        Column("Reported", align="l")],
        caption="Token RMS: root-mean-square of each soft token; similarity: mean pairwise cosine between an item's "
                "soft tokens (seed 002, section 71 reports 0.0311-0.0314 and 0.883 for TREC).")
    if rms:
        out.set("bridge.soft_token_rms", float(np.mean(rms)))
        table.add("Soft-token RMS", float(np.mean(rms)), min(rms), max(rms), _fmt(expected.get("bridge.soft_token_rms")))
    sim = [s for s in sim if s == s]
    if sim:
        out.set("bridge.soft_token_similarity", float(np.mean(sim)))
        table.add("Within-item token similarity", float(np.mean(sim)), min(sim), max(sim),
                  _fmt(expected.get("bridge.soft_token_similarity")))
    return table


def _fmt(value) -> str | None:
    return None if value is None else f"{value:g}"


def _training_table(curves: list[dict], out: Analysis) -> Table:
    table = Table("training", "Training", [
        Column("Run", align="l"), Column("Steps", "d"), Column("Final LM loss", ".3f"),
        Column("Final diversity loss", ".3f"), Column("Last quick-eval accuracy", ".1%")],
        caption="Losses averaged over the last 10% of steps; diversity loss = mean off-diagonal cosine of the "
                "batch's flattened soft tokens (weight in the spec).")
    by_run = defaultdict(list)
    for row in curves:
        by_run[row["run"]].append(row)
    for run_name, rows in by_run.items():
        tail = rows[-max(1, len(rows) // 10):]
        lm_loss = float(np.mean([r["lm_loss"] for r in tail]))
        diversity = float(np.mean([r["diversity_loss"] for r in tail])) if "diversity_loss" in tail[0] else None
        quick = [r["quick_eval_accuracy"] for r in rows if "quick_eval_accuracy" in r]
        out.set(f"training.{run_name}.final_lm_loss", lm_loss)
        if diversity is not None:
            out.set(f"training.{run_name}.final_diversity_loss", diversity)
        table.add(run_name, int(rows[-1]["step"]), lm_loss, diversity, quick[-1] if quick else None)
    return table


# ================================================================== figures
def figures(spec: BridgeSpec, records: list[dict], curves: list[dict], out_dir: Path) -> list[Path]:
    plt = pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    bridge_rows = [r for r in curves if r.get("run") == "bridge"]
    if bridge_rows:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        steps = [r["step"] for r in bridge_rows]
        ax1.plot(steps, [r["lm_loss"] for r in bridge_rows], label="LM loss (answer tokens)", lw=1)
        ax1.plot(steps, [r["diversity_loss"] for r in bridge_rows], label="batch diversity loss", lw=1)
        if any("vq_loss" in r for r in bridge_rows):
            ax1.plot(steps, [r.get("vq_loss", np.nan) for r in bridge_rows], label="VQ loss", lw=1)
        ax1.set_xlabel("step")
        ax1.set_yscale("log")
        ax1.legend(fontsize=8)
        ax1.set_title("Bridge training losses")
        quick = [(r["step"], r["quick_eval_accuracy"]) for r in bridge_rows if "quick_eval_accuracy" in r]
        if quick:
            ax2.plot(*zip(*quick), marker="o")
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("step")
        ax2.set_ylabel("accuracy")
        ax2.set_title(f"Quick evaluation ({spec.training.quick_eval_items} items)")
        paths.append(save_figure(fig, out_dir / "training.png", dpi=120))

    analysis = analyze(spec, records, curves)
    methods = [m for m in spec.evaluation.methods if f"{m}.generation.accuracy" in analysis.metrics]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(len(methods))
    for offset, scoring in ((-0.2, "generation"), (0.2, "scored")):
        acc = [analysis.metrics.get(f"{m}.{scoring}.accuracy", np.nan) for m in methods]
        low = [analysis.metrics.get(f"{m}.{scoring}.ci_low", np.nan) for m in methods]
        high = [analysis.metrics.get(f"{m}.{scoring}.ci_high", np.nan) for m in methods]
        err = np.array([np.subtract(acc, low), np.subtract(high, acc)])
        ax.bar(x + offset, acc, width=0.4, yerr=err, capsize=3, label=scoring)
    ax.set_xticks(x, [METHOD_NAMES[m] for m in methods], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"{spec.name}: accuracy with 95% Wilson intervals")
    paths.append(save_figure(fig, out_dir / "accuracy.png", dpi=120))
    return paths


# ================================================================== across specs
def _cell(metrics: dict, expected: dict, key: str) -> str:
    got, reported = metrics.get(key), expected.get(key)
    text = _pct(got) if got is not None else "—"
    return f"{text} ({_pct(reported)})" if isinstance(reported, float) else text


def summary(entries, figure_dir: Path) -> tuple[list[Table], list[str], list[Path]]:
    """Tables and figures across every bridge spec: master, token ablation, reasoning, McNemar, latency.

    `entries` are report entries with .spec, .analysis (None if not run) and .run. Cells read
    "reproduced (reported)"; the reported value is the spec's first `expected` for that metric.
    """
    notes = ["Cells read 'reproduced (reported)'. Reproduced values come from each spec's latest run under the "
             "profile named in its page; reported values from the seed report (paper profile: Llama-3.1-8B -> "
             "Mistral-7B). Generation accuracy is the report's protocol; scored accuracy is shown beside it."]
    tables = []
    master = Table("master", "Master table (seed 002, section 85): bridge vs text, same items", [
        Column("Task", align="l"), Column("Classes", "d"), Column("Profile", align="l"), Column("N", "d"),
        Column("Bridge", align="l"), Column("Bridge (scored)", align="l"), Column("Text relay", align="l"),
        Column("Δ bridge − relay (pp)", "+.1f"), Column("Sender text", align="l"), Column("Receiver text", align="l")])
    for e in entries:
        if "master" not in e.spec.tags:
            continue
        m = e.analysis.metrics if e.analysis else {}
        x = first_expected(e.spec)
        delta = (100 * (m["bridge.generation.accuracy"] - m["text_relay.generation.accuracy"])
                 if "text_relay.generation.accuracy" in m and "bridge.generation.accuracy" in m else None)
        master.add(e.spec.task.dataset, len(e.spec.task.label_names()), e.run["profile"] if e.run else "not run",
                   e.run["n_records"] if e.run else None, _cell(m, x, "bridge.generation.accuracy"),
                   _cell(m, x, "bridge.scored.accuracy"), _cell(m, x, "text_relay.generation.accuracy"), delta,
                   _cell(m, x, "sender_text.generation.accuracy"), _cell(m, x, "receiver_text.generation.accuracy"))
    tables.append(master)

    ablation = Table("token_ablation", "Token ablation (seed 002, section 64)", [
        Column("Task", align="l"), Column("Soft tokens", "d"), Column("Profile", align="l"),
        Column("Bridge", align="l"), Column("Bridge (scored)", align="l"), Column("Digit accuracy", align="l")],
        caption="Passkey rows give exact-match accuracy under Bridge and per-digit accuracy beside it.")
    rows = [e for e in entries if "token_ablation" in e.spec.tags]
    for e in sorted(rows, key=lambda e: (e.spec.task.dataset, e.spec.bridge.soft_tokens)):
        m = e.analysis.metrics if e.analysis else {}
        x = first_expected(e.spec)
        ablation.add(e.spec.task.dataset, e.spec.bridge.soft_tokens, e.run["profile"] if e.run else "not run",
                     _cell(m, x, "bridge.generation.accuracy"), _cell(m, x, "bridge.scored.accuracy"),
                     _cell(m, x, "bridge.generation.digit_accuracy") if e.spec.task.dataset == PASSKEY else None)
    tables.append(ablation)

    reasoning = [e for e in entries if "reasoning" in e.spec.tags]
    if reasoning:
        methods = ["random", "sender_text", "receiver_text", "text_relay", "bridge"]
        table = Table("reasoning", "Reasoning tasks (seed 002, section 94, 'Table 9')", [
            Column("Method", align="l"), *[Column(e.spec.task.dataset, align="l") for e in reasoning]],
            caption="BoolQ and CommonsenseQA are not in the offline mirror: their specs run in the paper profile only.")
        for method in methods:
            table.add(METHOD_NAMES[method], *[_cell(e.analysis.metrics if e.analysis else {}, first_expected(e.spec),
                                                    f"{method}.generation.accuracy") for e in reasoning])
        tables.append(table)

    tests = Table("mcnemar_all", "McNemar: bridge vs each text baseline, every spec", [
        Column("Spec", align="l"), Column("Baseline", align="l"), Column("Scoring", align="l"),
        Column("b", "d"), Column("c", "d"), Column("p", ".3g"), Column("p (Holm, within spec)", ".3g")],
        caption="b: items only the bridge got right; c: items only the baseline got right. The report ran no paired test.")
    for e in entries:
        if not e.analysis:
            continue
        for method in ("text_relay", "sender_text", "receiver_text"):
            for scoring in SCORINGS:
                key = f"mcnemar.{method}.{scoring}"
                if f"{key}.pvalue" in e.analysis.metrics:
                    m = e.analysis.metrics
                    tests.add(e.spec.name, METHOD_NAMES[method], scoring, int(m[f"{key}.b"]), int(m[f"{key}.c"]),
                              m[f"{key}.pvalue"], m[f"{key}.pvalue_holm"])
    tables.append(tests)
    latency = latency_table()
    if latency is not None:
        tables.append(latency)
    else:
        notes.append(f"No latency measurement yet: run `python benchmarks/latency.py` (writes {LATENCY_FILE}).")
    figures = [path for path in [_ablation_figure(rows, figure_dir)] if path is not None]
    return tables, notes, figures


def _ablation_figure(entries, figure_dir: Path) -> Path | None:
    """Accuracy against soft-token count, one line per task, reported values as hollow markers."""
    runs = [e for e in entries if e.analysis]
    if not runs:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for dataset in sorted({e.spec.task.dataset for e in entries}):
        group = sorted((e for e in entries if e.spec.task.dataset == dataset), key=lambda e: e.spec.bridge.soft_tokens)
        key = "bridge.generation.digit_accuracy" if dataset == PASSKEY else "bridge.scored.accuracy"
        label = f"{dataset} ({'digit accuracy' if dataset == PASSKEY else 'scored accuracy'})"
        done = [e for e in group if e.analysis and key in e.analysis.metrics]
        if done:
            line, = ax.plot([e.spec.bridge.soft_tokens for e in done], [e.analysis.metrics[key] for e in done],
                            marker="o", label=label)
            reported_key = key if dataset == PASSKEY else "bridge.generation.accuracy"
            reported = [(e.spec.bridge.soft_tokens, first_expected(e.spec).get(reported_key)) for e in group]
            reported = [(k, v) for k, v in reported if isinstance(v, float)]
            if reported:
                ax.plot(*zip(*reported), ls="--", marker="o", mfc="none", color=line.get_color(),
                        label=f"{dataset}, reported")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("soft tokens")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("Accuracy vs soft tokens (seed 002, section 64)")
    figure_dir.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, figure_dir / "accuracy_vs_soft_tokens.png", dpi=120)


def latency_table() -> Table | None:
    """The latency benchmark's latest result beside the report's section 90 numbers."""
    if not LATENCY_FILE.is_file():
        return None
    data = json.loads(LATENCY_FILE.read_text())
    table = Table("latency", f"Latency per item (seed 002, section 90), {data['device']}, {data['profile']} profile", [
        Column("Method", align="l"), Column("Component", align="l"), Column("Median ms", ".1f"), Column("p90 ms", ".1f"),
        Column("Reported ms", ".1f")],
        caption=f"{data['trials']} timed trials after {data['warmup']} warm-up, batch 1, {data['notes']}")
    for row in data["rows"]:
        table.add(row["method"], row["component"], row["median_ms"], row["p90_ms"], row.get("reported_ms"))
    return table
