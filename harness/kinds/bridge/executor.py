"""Latent bridge (seed 002, phases 16-25), the run: train the bridge, evaluate it and every baseline on the same items.

`run` does the expensive work and writes one record per evaluation item holding every method's
generation (raw text and parsed prediction) and scored label; `analysis.analyze` recomputes
accuracies, Wilson intervals, invalid-response rates, per-class accuracy and McNemar tests from
those records.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from harness.context import RunContext, RunOutput
from harness.kinds.bridge.continuation import score_items
from harness.kinds.bridge.modules import LatentBridge, batch_diversity_loss, mean_offdiagonal_cosine
from harness.kinds.bridge.receiver import ReceiverPrompt, generate_texts
from harness.kinds.bridge.sender_states import pad_states, sender_states
from harness.kinds.bridge.task import TaskData, TaskItem, build_task
from harness.kinds.bridge.training import train
from harness.models import lm as L
from harness.sharding import Step, map_sharded, require_shards
from registry.kinds.bridge import CONTINUATION_SET, PASSKEY, SEEDED_METHODS, BridgeSpec

DISTRIBUTED = True  # under `accelerate launch`, every process trains on its shard and evaluates its items


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


def _evaluate(ctx: RunContext, rp: ReceiverPrompt, middles: list[torch.Tensor], batch_size: int, bar=None) -> list[dict]:
    """rp.evaluate over this process's shard of the items, gathered in item order on every process."""
    return map_sharded(lambda shard: rp.evaluate(shard, batch_size, bar), middles, ctx.processes)


def _accuracy(task: TaskData, items: list[TaskItem], results: list[dict]) -> float:
    key = "scored" if task.is_classification else "generation"
    return float(np.mean([task.correct(item, r[key]) for item, r in zip(items, results)]))


def run(spec: BridgeSpec, ctx: RunContext) -> RunOutput:
    """Train and evaluate the seeded methods once per training seed; text baselines run once.

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
    eval_batch = spec.evaluation.batch_size
    layer = spec.bridge.sender_layer

    with ctx.phase("sender_states"):
        if not ctx.processes.is_main:
            ctx.processes.wait()  # the main process computes and caches them; the others read the cache
        bar = ctx.progress(total=len(task.train) + len(task.eval), desc="sender states", unit="item")
        train_states = sender_states(sender, [task.sender_text(i) for i in task.train], layer, ctx.cache_dir, progress=bar)
        eval_states = sender_states(sender, [task.sender_text(i) for i in task.eval], layer, ctx.cache_dir, progress=bar)
        bar.close()
        if ctx.processes.is_main:
            ctx.processes.wait()

    primed = ReceiverPrompt.build(receiver, task, task.task.primer)
    prompt_embeds = primed.text_middle(task.task.prompt)
    seeded = [m for m in methods if m in SEEDED_METHODS]
    bar = ctx.progress(total=len(task.eval) * (len(seeded) * len(seeds) + len([m for m in methods if m not in SEEDED_METHODS
                                                                              and m != "random"])),
                       desc="evaluating", unit="item")
    curves: list[dict] = []
    results: dict[int, dict[str, list[dict]]] = {}
    for seed in seeds:
        results[seed], log = _seeded_methods(spec, ctx, task, receiver, primed, prompt_embeds, train_states,
                                             eval_states, seed, bar)
        curves += log
    first = results[seeds[0]]
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
                first[method] = _evaluate(ctx, tp, [tp.text_middle(task.item_text(i.input)) for i in task.eval], eval_batch, bar)

    if "text_relay" in methods:
        with ctx.phase("evaluation.text_relay"):
            prompts = [task.task.relay_template.format(input=i.input) for i in task.eval]
            summaries = map_sharded(lambda shard: generate_texts(sender, shard, task.task.relay_max_tokens, eval_batch),
                                    prompts, ctx.processes)
            tp = text_prompt(receiver, False)
            first["text_relay"] = _evaluate(ctx, tp, [tp.text_middle(task.item_text(s)) for s in summaries], eval_batch, bar)
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
    scoring = spec.task.continuation
    items = ctx.items(spec.task.dataset, spec.task.eval_split)
    items = items[: scoring.items] if scoring.items else items
    require_shards(len(items), ctx.processes, "the number of continuation-scored items")
    pairs = [(item, item["choices"] if "choices" in item else task.verbalizers) for item in items]
    scores = {}
    for role, lm in (("receiver", receiver), ("sender", sender)):
        with ctx.phase(f"evaluation.continuation.{role}"):
            scores[role] = map_sharded(lambda part: score_items(lm, scoring, [p[0] for p in part], [p[1] for p in part]),
                                       pairs, ctx.processes)
    return [{"set": CONTINUATION_SET, "id": item["id"], "label": item["label"],
             **{role: scores[role][n] for role in scores}} for n, item in enumerate(items)]


def _seeded_methods(spec, ctx, task, receiver, primed, prompt_embeds, train_states, eval_states, seed, bar):
    """The bridge, noise soft tokens at its scale, and prompt tuning, trained and evaluated with one seed."""
    methods, device, eval_batch = spec.evaluation.methods, receiver.device, spec.evaluation.batch_size
    calibration = train_states[: spec.bridge.normalizer.calibration_items]
    stacked = torch.cat(calibration)
    rms = _receiver_rms(primed, [task.item_text(i.input) for i in task.train[: spec.bridge.normalizer.calibration_items]])
    torch.manual_seed(seed)
    bridge = LatentBridge(spec.bridge, stacked.shape[-1], receiver.model.config.hidden_size, stacked.mean(0),
                          stacked.std(0), rms).to(device)
    answers = [primed.answer_ids(task.answer_text(i)) for i in task.train]
    quick = task.eval[: spec.training.quick_eval_items]

    def bridge_loss(step: Step) -> dict:
        padded, mask = pad_states([train_states[i] for i in step.local], device)
        soft, aux = bridge(padded, mask)
        lm_loss = step.token_mean(primed.answer_token_losses([primed.soft_middle(s, prompt_embeds) for s in soft],
                                                             [answers[i] for i in step.local]))
        diversity = step.over_batch(soft, batch_diversity_loss)
        losses = {"lm": lm_loss, "diversity": diversity}
        total = lm_loss + spec.training.diversity_weight * diversity
        if "vq_loss" in aux:
            losses["vq"] = step.item_mean(aux["vq_loss"])
            total = total + spec.bridge.vq.weight * losses["vq"]
        return {"total": total, **losses}

    def bridge_quick_eval() -> float:
        soft = _soft_tokens(bridge, eval_states[: len(quick)], device)
        return _accuracy(task, quick, _evaluate(ctx, primed, [primed.soft_middle(s, prompt_embeds) for s in soft], eval_batch))

    with ctx.phase("training.bridge"):
        train_bar = ctx.progress(total=spec.training.steps, desc=f"training bridge (seed {seed})", unit="step")
        trained = train(bridge, bridge_loss, n_items=len(task.train), steps=spec.training.steps, spec=spec.training,
                        lr=spec.training.lr, seed=seed, checkpoint=ctx.state_dir / f"bridge.seed{seed}.pt",
                        label="bridge", quick_eval=bridge_quick_eval, progress=train_bar, processes=ctx.processes)
        train_bar.close()
    ctx.state_use[f"bridge.seed{seed}"] = trained.status
    curves = [{**row, "seed": seed} for row in trained.log]

    results: dict[str, list[dict]] = {}
    with ctx.phase("evaluation.bridge"):
        soft_eval = _soft_tokens(bridge, eval_states, device)
        results["bridge"] = _evaluate(ctx, primed, [primed.soft_middle(s, prompt_embeds) for s in soft_eval], eval_batch, bar)
        for r, soft in zip(results["bridge"], soft_eval):
            r["soft_token_rms"] = round(float(soft.pow(2).mean(-1).sqrt().mean()), 6)
            r["soft_token_similarity"] = round(_mean_pairwise_cosine(soft), 6)

    if "noise" in methods:
        with ctx.phase("evaluation.noise"):
            generator = torch.Generator().manual_seed(seed + 1)
            scale = float(bridge.output.scale.detach())
            noise = [torch.randn(s.shape, generator=generator) for s in soft_eval]
            noise = [n / n.pow(2).mean(-1, keepdim=True).sqrt() * scale for n in noise]
            results["noise"] = _evaluate(ctx, primed, [primed.soft_middle(n.to(device), prompt_embeds) for n in noise],
                                         eval_batch, bar)

    if "prompt_tuning" in methods:
        curves += [{**row, "seed": seed} for row in _prompt_tuning(spec, ctx, task, receiver, results, eval_batch, bar, seed)]
    return results, curves


def _prompt_tuning(spec, ctx, task, receiver, results, eval_batch, bar, seed: int) -> list[dict]:
    pt = spec.evaluation.prompt_tuning
    k = pt.soft_tokens or spec.bridge.soft_tokens * spec.bridge.recurrent_steps
    plain = ReceiverPrompt.build(receiver, task, "")
    rng = torch.Generator().manual_seed(seed + 2)
    vocab_ids = torch.randint(0, receiver.model.config.vocab_size, (k,), generator=rng)
    soft_prompt = SoftPrompt(L.embed(receiver, vocab_ids).detach().float()).to(receiver.device)
    middles = [plain.text_middle(task.item_text(i.input)) for i in task.train]
    answers = [plain.answer_ids(task.answer_text(i)) for i in task.train]

    def loss(step: Step) -> dict:
        batch = [torch.cat([soft_prompt.vectors, middles[i]]) for i in step.local]
        lm_loss = step.token_mean(plain.answer_token_losses(batch, [answers[i] for i in step.local]))
        return {"total": lm_loss, "lm": lm_loss}

    with ctx.phase("training.prompt_tuning"):
        sub = ctx.progress(total=pt.steps, desc=f"prompt tuning (seed {seed})", unit="step")
        trained = train(soft_prompt, loss, n_items=len(task.train), steps=pt.steps, spec=spec.training, lr=pt.lr,
                        seed=seed, checkpoint=ctx.state_dir / f"prompt_tuning.seed{seed}.pt", label="prompt_tuning",
                        progress=sub, processes=ctx.processes)
        sub.close()
    ctx.state_use[f"prompt_tuning.seed{seed}"] = trained.status
    with ctx.phase("evaluation.prompt_tuning"), torch.no_grad():
        eval_middles = [torch.cat([soft_prompt.vectors, plain.text_middle(task.item_text(i.input))]) for i in task.eval]
        results["prompt_tuning"] = _evaluate(ctx, plain, eval_middles, eval_batch, bar)
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
