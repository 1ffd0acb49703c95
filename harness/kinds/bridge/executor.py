"""Latent bridge (seed 002, phases 16-25), the run: train the bridge, evaluate it and every baseline on the same items.

`run` does the expensive work and writes one record per evaluation item holding every method's
generation (raw text and parsed prediction) and scored label; `analysis.analyze` recomputes
accuracies, Wilson intervals, invalid-response rates, per-class accuracy and McNemar tests from
those records. The trained methods are parts loaded only when the spec uses them
(`BridgeSpec.code_parts`): `latent_bridge` (the bridge and the noise baseline at its scale),
`flow_bridge` (phases 12-14), `prompt_tuning` and `continuation` (zero-shot choice scoring); the text
baselines, the text relay and chance are here.
"""

from __future__ import annotations

import random
from dataclasses import replace

from harness.context import RunContext
from harness.kinds import load_part
from harness.kinds.bridge.receiver import ReceiverPrompt, generate_texts
from harness.kinds.bridge.setup import Setup, evaluate, receiver_prompts, states_at_layer
from harness.kinds.bridge.task import TaskData, build_task
from harness.kinds.contract import RunOutput
from harness.models import lm as L
from harness.sharding import map_sharded, require_shards
from registry.kinds.bridge import CONTINUATION_SET, PASSKEY, SEEDED_METHODS, BridgeSpec



def run(spec: BridgeSpec, ctx: RunContext) -> RunOutput:
    """Train and evaluate the seeded methods once per training seed; text baselines run once. A spec with
    `selection` instead trains one bridge per setting and scores it on the development items (`_select`).

    Records: one row per (training seed, evaluation item). The rows of the first seed also hold
    every deterministic method (text baselines, text relay, chance); the other seeds' rows hold
    only the seeded methods (SEEDED_METHODS), so nothing deterministic is stored twice.
    """
    require_shards(spec.training.batch_size, ctx.processes, "training.batch_size")
    task = build_task(spec, ctx)
    require_shards(len(task.eval), ctx.processes, "the number of evaluation items")
    methods = spec.evaluation.methods
    seeds = spec.training_seeds()
    with ctx.phase("load_models"):
        sender = ctx.models.get(spec.sender)
        receiver = ctx.models.get(spec.receiver)
    primed, trained_with, prompt_embeds = receiver_prompts(receiver, task)
    if spec.selection is not None:
        return _select(Setup(spec, ctx, task, sender, receiver, primed, trained_with, prompt_embeds, [], [], []))
    with ctx.phase("sender_states"):
        states = states_at_layer(sender, spec.bridge.sender_layer, ctx,
                                 {part: [task.sender_text(i) for i in getattr(task, part)]
                                  for part in ("train", "dev", "eval")})
    seeded = [m for m in methods if m in SEEDED_METHODS]
    bar = ctx.progress(total=len(task.eval) * (len(seeded) * len(seeds) + len([m for m in methods if m not in SEEDED_METHODS
                                                                              and m != "random"])),
                       desc="evaluating", unit="item")
    setup = Setup(spec, ctx, task, sender, receiver, primed, trained_with, prompt_embeds, states["train"], states["dev"],
                  states["eval"], bar)
    curves: list[dict] = []
    results: dict[int, dict[str, list[dict]]] = {}
    for seed in seeds:
        results[seed], log = _seeded_methods(setup, seed)
        curves += log
    first = results[seeds[0]]
    eval_batch = spec.evaluation.batch_size
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
            with ctx.phase(f"evaluation.{method}"):
                tp = text_prompt(lm, few_shot)
                first[method] = evaluate(ctx, tp, [tp.text_middle(task.item_text(i.input)) for i in task.eval], eval_batch,
                                         bar)

    if "text_relay" in methods:
        with ctx.phase("evaluation.text_relay"):
            prompts = [task.task.relay_template.format(input=i.input) for i in task.eval]
            summaries = map_sharded(lambda shard: generate_texts(sender, shard, task.task.relay_max_tokens, eval_batch),
                                    prompts, ctx.processes)
            tp = text_prompt(receiver, False)
            first["text_relay"] = evaluate(ctx, tp, [tp.text_middle(task.item_text(s)) for s in summaries], eval_batch, bar)
            for r, summary in zip(first["text_relay"], summaries):
                r["summary"] = summary
                r["summary_tokens"] = len(L.tokenize(sender, summary))

    if "random" in methods:
        first["random"] = _random_guesses(spec, task)
    bar.close()
    continuation = _continuation_scores(spec, ctx, task, receiver, sender) if spec.task.continuation else []

    records = []
    for seed in seeds:
        for index, item in enumerate(task.eval):
            records.append({"seed": seed, "id": item.id, "input": item.input, "answer": item.answer, "label": item.label,
                            **{m: results[seed][m][index] for m in methods if m in results[seed]}})
    return RunOutput(records=records + continuation, curves=curves)


def _continuation_scores(spec: BridgeSpec, ctx: RunContext, task: TaskData, receiver, sender) -> list[dict]:
    """Both models zero-shot on eval_split by choice log-likelihood (lm-eval protocol): one record per item,
    marked `"set": "continuation"` (they are not the evaluation items the methods share)."""
    scoring, continuation = spec.task.continuation, load_part(spec, "continuation")
    items = ctx.items(spec.task.dataset, spec.task.eval_split)
    items = items[: scoring.items] if scoring.items else items
    require_shards(len(items), ctx.processes, "the number of continuation-scored items")
    pairs = [(item, item["choices"] if "choices" in item else task.verbalizers) for item in items]
    scores = {}
    for role, lm in (("receiver", receiver), ("sender", sender)):
        with ctx.phase(f"evaluation.continuation.{role}"):
            scores[role] = map_sharded(lambda part: continuation.score_items(lm, scoring, [p[0] for p in part],
                                                                             [p[1] for p in part]),
                                       pairs, ctx.processes)
    return [{"set": CONTINUATION_SET, "id": item["id"], "label": item["label"],
             **{role: scores[role][n] for role in scores}} for n, item in enumerate(items)]


def _seeded_methods(setup: Setup, seed: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """The bridge (latent or flow), noise soft tokens at its scale, and prompt tuning, trained and evaluated with
    one seed."""
    spec = setup.spec
    if spec.bridge.flow is not None:
        return load_part(spec, "flow_bridge").seeded(setup, seed)
    results, curves = load_part(spec, "latent_bridge").seeded(setup, seed)
    if "prompt_tuning" in spec.evaluation.methods:
        results["prompt_tuning"], log = load_part(spec, "prompt_tuning").train_and_evaluate(
            setup, seed, spec.evaluation.prompt_tuning.lr, f"prompt_tuning.seed{seed}")
        curves += [{**row, "seed": seed} for row in log]
    return results, curves


def _select(setup: Setup) -> RunOutput:
    """A selection run: every (sender layer, learning rate) of `spec.selection` trains one bridge with the first
    training seed and is scored on the development items; then every prompt-tuning learning rate. One record per
    (setting, development item); the evaluation items are never read."""
    spec, ctx, task = setup.spec, setup.ctx, setup.task
    latent = load_part(spec, "latent_bridge")
    selection, seed = spec.selection, spec.training_seeds()[0]
    dev_task = replace(task, eval=task.dev)
    records, curves = [], []

    def add(setting: dict, results: list[dict], log: list[dict]) -> None:
        for item, result in zip(task.dev, results):
            records.append({"set": "selection", "setting": setting, "seed": seed, "id": item.id, "input": item.input,
                            "answer": item.answer, "label": item.label, "result": result})
        curves.extend({**row, **{f"setting.{k}": v for k, v in setting.items()}, "seed": seed} for row in log)

    for layer in selection.sender_layers:
        with ctx.phase("sender_states"):
            states = states_at_layer(setup.sender, layer, ctx, {part: [task.sender_text(i) for i in getattr(task, part)]
                                                                 for part in ("train", "dev")})
        for lr in selection.lrs:
            variant = spec.model_copy(update={"bridge": spec.bridge.model_copy(update={"sender_layer": layer}),
                                              "training": spec.training.model_copy(update={"lr": lr})})
            config = replace(setup, spec=variant, task=dev_task, train_states=states["train"], dev_states=states["dev"],
                             eval_states=states["dev"])
            bridge, trained = latent.train_bridge(config, seed, f"selection.bridge.layer{layer}.lr{lr:g}",
                                                  quick_eval=False)
            with ctx.phase("evaluation.bridge"):
                results, _ = latent.evaluate_bridge(config, bridge, trained)
            add({"method": "bridge", "sender_layer": layer, "lr": lr}, results, trained.log)
    for lr in selection.prompt_tuning_lrs:
        results, log = load_part(spec, "prompt_tuning").train_and_evaluate(replace(setup, task=dev_task), seed, lr,
                                                                            f"selection.prompt_tuning.lr{lr:g}")
        add({"method": "prompt_tuning", "lr": lr}, results, log)
    return RunOutput(records=records, curves=curves)


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
