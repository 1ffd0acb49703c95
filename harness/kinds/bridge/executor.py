"""Latent bridge (seed 002, phases 16-25), the run: train the bridge, evaluate it and every baseline on the same items.

`run` does the expensive work and writes one record per evaluation item holding every method's
generation (raw text and parsed prediction) and scored label; `analysis.analyze` recomputes
accuracies, Wilson intervals, invalid-response rates, per-class accuracy and McNemar tests from
those records.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from harness.context import RunContext, RunOutput
from harness.kinds.bridge import auxiliary as A
from harness.kinds.bridge.continuation import score_items
from harness.kinds.bridge.flow import EMA, DiTDenoiser, euler_sample, rectified_flow_loss
from harness.kinds.bridge.modules import LatentBridge, batch_diversity_loss, mean_offdiagonal_cosine
from harness.kinds.bridge.quantizers import FSQ, fsq_z_variance
from harness.kinds.bridge.receiver import ReceiverPrompt, generate_texts
from harness.kinds.bridge.sender_states import pad_states, sender_states
from harness.kinds.bridge.task import TaskData, TaskItem, build_task
from harness.kinds.bridge.training import train
from harness.models import check_finite
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


def _soft_tokens(bridge: LatentBridge, states: list[torch.Tensor], device, batch_size: int = 32,
                 codes: list | None = None) -> list[torch.Tensor]:
    """Soft tokens per item; with `codes` (a list), each item's quantizer codes are appended to it."""
    out = []
    with torch.no_grad():
        for start in range(0, len(states), batch_size):
            padded, mask = pad_states(states[start:start + batch_size], device)
            soft, aux = bridge(padded, mask)
            out.extend(soft)
            if codes is not None and bridge.vq is not None:
                codes.extend(_item_codes(bridge, aux))
    return out


def _item_codes(bridge: LatentBridge, aux: dict) -> list[list]:
    """Each item's codes: VQ codebook indices, or FSQ level vectors as short strings (FSQ has no code table)."""
    if isinstance(bridge.vq, FSQ):
        levels = torch.cat([q.levels for q in aux["quantized"]], dim=1)
        return [["".join(chr(48 + v) for v in token) for token in item] for item in levels.tolist()]
    return aux["codes"].tolist()


def _receiver_prompts(receiver, task: TaskData) -> tuple[ReceiverPrompt, ReceiverPrompt, torch.Tensor]:
    """The evaluation prompt, the training prompt (another primer only when the spec sets train_primer) and the
    embedded text after the soft tokens."""
    t = task.task
    if t.placement == "before_bos":  # <soft> [BOS] prompt: nothing is encoded before the soft tokens
        primed = ReceiverPrompt.build(receiver, task, "", bos=False)
        return primed, primed, primed.text_middle(t.prompt, bos=True)
    primed = ReceiverPrompt.build(receiver, task, t.primer)
    training = primed if t.train_primer is None else ReceiverPrompt.build(receiver, task, t.train_primer)
    return primed, training, primed.text_middle(t.prompt)


def _soft_token_stats(soft: torch.Tensor, prefix: str = "soft_token") -> dict:
    values = soft.float()
    return {f"{prefix}_min": round(float(values.min()), 6), f"{prefix}_max": round(float(values.max()), 6),
            f"{prefix}_mean": round(float(values.mean()), 6), f"{prefix}_std": round(float(values.std()), 6)}


def _target_ids(task: TaskData, rp: ReceiverPrompt, item: TaskItem) -> list[int]:
    ids = rp.answer_ids(task.answer_text(item))
    return ids[: task.task.target_max_tokens] if task.task.target_max_tokens else ids


def _evaluate(ctx: RunContext, rp: ReceiverPrompt, middles: list[torch.Tensor], batch_size: int, bar=None) -> list[dict]:
    """rp.evaluate over this process's shard of the items, gathered in item order on every process."""
    return map_sharded(lambda shard: rp.evaluate(shard, batch_size, bar), middles, ctx.processes)


def _accuracy(task: TaskData, items: list[TaskItem], results: list[dict]) -> float:
    key = "scored" if task.is_classification else "generation"
    return float(np.mean([task.correct(item, r[key]) for item, r in zip(items, results)]))


@dataclass
class Setup:
    """What every training seed (and every selection setting) shares: the task, both models, the receiver's
    evaluation and training prompts, and the sender states of the training, development and evaluation items."""

    spec: BridgeSpec
    ctx: RunContext
    task: TaskData
    sender: object
    receiver: object
    primed: ReceiverPrompt
    trained_with: ReceiverPrompt
    prompt_embeds: torch.Tensor
    train_states: list
    dev_states: list
    eval_states: list
    bar: object = None


def _states(sender, layer: int, ctx: RunContext, texts: dict[str, list[str]]) -> dict[str, list]:
    """Sender states of each named list of texts at `layer` (computed once by the main process and cached)."""
    if not ctx.processes.is_main:
        ctx.processes.wait()  # the main process computes and caches them; the others read the cache
    bar = ctx.progress(total=sum(len(t) for t in texts.values()), desc=f"sender states (layer {layer})", unit="item")
    out = {name: sender_states(sender, items, layer, ctx.cache_dir, progress=bar) for name, items in texts.items()}
    bar.close()
    if ctx.processes.is_main:
        ctx.processes.wait()
    return out


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
    primed, trained_with, prompt_embeds = _receiver_prompts(receiver, task)
    if spec.selection is not None:
        return _select(Setup(spec, ctx, task, sender, receiver, primed, trained_with, prompt_embeds, [], [], []))
    with ctx.phase("sender_states"):
        states = _states(sender, spec.bridge.sender_layer, ctx,
                         {part: [task.sender_text(i) for i in getattr(task, part)] for part in ("train", "dev", "eval")})
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


def _seeded_methods(setup: Setup, seed: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """The bridge, noise soft tokens at its scale, and prompt tuning, trained and evaluated with one seed."""
    spec, methods = setup.spec, setup.spec.evaluation.methods
    if spec.bridge.flow is not None:
        return _flow_bridge(setup, seed)
    bridge, trained = _train_bridge(setup, seed, f"bridge.seed{seed}", quick_eval=True)
    curves = [{**row, "seed": seed} for row in trained.log]
    results: dict[str, list[dict]] = {}
    with setup.ctx.phase("evaluation.bridge"):
        results["bridge"], soft_eval = _evaluate_bridge(setup, bridge, trained)
    if "noise" in methods:
        with setup.ctx.phase("evaluation.noise"):
            generator = torch.Generator().manual_seed(seed + 1)
            scale = float(bridge.output.scale.detach())
            noise = [torch.randn(s.shape, generator=generator) for s in soft_eval]
            noise = [n / n.pow(2).mean(-1, keepdim=True).sqrt() * scale for n in noise]
            results["noise"] = _evaluate(setup.ctx, setup.primed, [setup.primed.soft_middle(n.to(setup.receiver.device),
                                                                                           setup.prompt_embeds)
                                                                    for n in noise], spec.evaluation.batch_size, setup.bar)
    if "prompt_tuning" in methods:
        results["prompt_tuning"], log = _prompt_tuning(setup, seed, spec.evaluation.prompt_tuning.lr,
                                                       f"prompt_tuning.seed{seed}")
        curves += [{**row, "seed": seed} for row in log]
    return results, curves


def _train_bridge(setup: Setup, seed: int, state_name: str, quick_eval: bool):
    """Build and train the bridge with one seed (checkpointed as `state_name` in the state folder); quick
    evaluation during training scores development items only."""
    spec, ctx, task, device = setup.spec, setup.ctx, setup.task, setup.receiver.device
    calibration = setup.train_states[: spec.bridge.normalizer.calibration_items]
    stacked = torch.cat(calibration)
    calibration_texts = [task.item_text(i.input) for i in task.train[: spec.bridge.normalizer.calibration_items]]
    rms = _receiver_rms(setup.primed, calibration_texts)
    colour = _receiver_colour(setup.primed, calibration_texts) if spec.bridge.normalizer.recolour else None
    torch.manual_seed(seed)
    bridge = LatentBridge(spec.bridge, stacked.shape[-1], setup.receiver.model.config.hidden_size, stacked.mean(0),
                          stacked.std(0), rms, colour).to(device)
    trained_with, prompt_embeds, train_states = setup.trained_with, setup.prompt_embeds, setup.train_states
    answers = [_target_ids(task, trained_with, i) for i in task.train]
    extra = _auxiliary_losses(spec, task, setup.sender, setup.receiver, trained_with, bridge, answers, device)
    quick = task.dev[: spec.training.quick_eval_items]
    weights = spec.training.token_weights

    def bridge_loss(step: Step) -> dict:
        padded, mask = pad_states([train_states[i] for i in step.local], device)
        soft, aux = bridge(padded, mask)
        batch_answers = [answers[i] for i in step.local]
        token_losses = trained_with.answer_token_losses([trained_with.soft_middle(s, prompt_embeds) for s in soft],
                                                        batch_answers)
        stats = {}
        if weights is not None:
            w = torch.cat([A.token_weights(torch.ones(1, len(a)), weights.first, weights.weight)[0] for a in batch_answers])
            w = w.to(token_losses.device)
            lm_loss = step.token_mean(token_losses * w) / step.token_mean(w).detach()
            first = w > 1 if weights.weight > 1 else w < 1
            stats["unweighted_lm_loss"] = float(step.token_mean(token_losses.detach()))
            stats["bottleneck_loss"] = float(token_losses.detach()[first].mean()) if first.any() else float("nan")
        else:
            lm_loss = step.token_mean(token_losses)
        diversity = step.over_batch(soft, batch_diversity_loss)
        losses = {"lm": lm_loss, "diversity": diversity}
        total = lm_loss + spec.training.diversity_weight * diversity
        if "vq_loss" in aux:
            losses["vq"] = step.item_mean(aux["vq_loss"])
            total = total + (spec.bridge.vq.weight if spec.bridge.vq else 1.0) * losses["vq"]
        for name, (weight, fn) in extra.items():
            losses[name] = fn(step, soft, aux, padded, mask)
            total = total + weight * losses[name]
        if spec.training.diagnostics:
            stats.update(_diagnostics(bridge, soft, aux))
        return {"total": total, **losses, **({"stats": stats} if stats else {})}

    def bridge_quick_eval() -> float:
        soft = _soft_tokens(bridge, setup.dev_states[: len(quick)], device)
        return _accuracy(task, quick, _evaluate(ctx, setup.primed, [setup.primed.soft_middle(s, prompt_embeds) for s in soft],
                                                spec.evaluation.batch_size))

    with ctx.phase("training.bridge"):
        train_bar = ctx.progress(total=spec.training.steps, desc=f"training bridge ({state_name})", unit="step")
        trained = train(bridge, bridge_loss, n_items=len(task.train), steps=spec.training.steps, spec=spec.training,
                        lr=spec.training.lr, seed=seed, checkpoint=ctx.state_dir / f"{state_name}.pt", label="bridge",
                        quick_eval=bridge_quick_eval if quick_eval else None, progress=train_bar,
                        processes=ctx.processes)
        train_bar.close()
    ctx.state_use[state_name] = trained.status
    return bridge, trained


def _evaluate_bridge(setup: Setup, bridge: LatentBridge, trained) -> tuple[list[dict], list[torch.Tensor]]:
    """The trained bridge on the evaluation items of `setup` (generation and scored label), with what it sends."""
    spec = setup.spec
    codes: list | None = [] if spec.training.diagnostics and bridge.vq is not None else None
    soft_eval = _soft_tokens(bridge, setup.eval_states, setup.receiver.device, codes=codes)
    results = _evaluate(setup.ctx, setup.primed, [setup.primed.soft_middle(s, setup.prompt_embeds) for s in soft_eval],
                        spec.evaluation.batch_size, setup.bar)
    for n, (r, soft) in enumerate(zip(results, soft_eval)):
        r["soft_token_rms"] = round(float(soft.pow(2).mean(-1).sqrt().mean()), 6)
        r["soft_token_similarity"] = round(_mean_pairwise_cosine(soft), 6)
        if spec.training.diagnostics:
            r.update(_soft_token_stats(soft))
            if codes is not None:
                r["codes"] = codes[n]
    if trained.nonfinite_at is not None:
        for r in results:
            r["training_stopped_at_step"] = trained.nonfinite_at
    return results, soft_eval


def _prompt_tuning(setup: Setup, seed: int, lr: float, state_name: str) -> tuple[list[dict], list[dict]]:
    """Receiver-only prompt tuning with the bridge's budget (steps x batch) unless the spec sets its own steps;
    returns its results on `setup`'s evaluation items and its training log."""
    spec, ctx, task, receiver = setup.spec, setup.ctx, setup.task, setup.receiver
    pt = spec.evaluation.prompt_tuning
    steps = spec.prompt_tuning_steps()
    k = pt.soft_tokens or spec.bridge.soft_tokens * spec.bridge.recurrent_steps
    plain = ReceiverPrompt.build(receiver, task, "")
    rng = torch.Generator().manual_seed(seed + 2)
    vocab_ids = torch.randint(0, receiver.model.config.vocab_size, (k,), generator=rng)
    soft_prompt = SoftPrompt(L.embed(receiver, vocab_ids).detach().float()).to(receiver.device)
    middles = [plain.text_middle(task.item_text(i.input)) for i in task.train]
    answers = [plain.answer_ids(task.answer_text(i)) for i in task.train]

    def loss(step: Step) -> dict:
        batch = [plain.soft_middle(soft_prompt.vectors, middles[i]) for i in step.local]
        lm_loss = step.token_mean(plain.answer_token_losses(batch, [answers[i] for i in step.local]))
        return {"total": lm_loss, "lm": lm_loss}

    with ctx.phase("training.prompt_tuning"):
        sub = ctx.progress(total=steps, desc=f"prompt tuning ({state_name})", unit="step")
        trained = train(soft_prompt, loss, n_items=len(task.train), steps=steps, spec=spec.training, lr=lr,
                        seed=seed, checkpoint=ctx.state_dir / f"{state_name}.pt", label="prompt_tuning",
                        progress=sub, processes=ctx.processes)
        sub.close()
    ctx.state_use[state_name] = trained.status
    with ctx.phase("evaluation.prompt_tuning"), torch.no_grad():
        eval_middles = [plain.soft_middle(soft_prompt.vectors, plain.text_middle(task.item_text(i.input)))
                        for i in task.eval]
        results = _evaluate(ctx, plain, eval_middles, spec.evaluation.batch_size, setup.bar)
    return results, trained.log


def _select(setup: Setup) -> RunOutput:
    """A selection run: every (sender layer, learning rate) of `spec.selection` trains one bridge with the first
    training seed and is scored on the development items; then every prompt-tuning learning rate. One record per
    (setting, development item); the evaluation items are never read."""
    spec, ctx, task = setup.spec, setup.ctx, setup.task
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
            states = _states(setup.sender, layer, ctx, {part: [task.sender_text(i) for i in getattr(task, part)]
                                                        for part in ("train", "dev")})
        for lr in selection.lrs:
            variant = spec.model_copy(update={"bridge": spec.bridge.model_copy(update={"sender_layer": layer}),
                                              "training": spec.training.model_copy(update={"lr": lr})})
            config = replace(setup, spec=variant, task=dev_task, train_states=states["train"], dev_states=states["dev"],
                             eval_states=states["dev"])
            bridge, trained = _train_bridge(config, seed, f"selection.bridge.layer{layer}.lr{lr:g}", quick_eval=False)
            with ctx.phase("evaluation.bridge"):
                results, _ = _evaluate_bridge(config, bridge, trained)
            add({"method": "bridge", "sender_layer": layer, "lr": lr}, results, trained.log)
    for lr in selection.prompt_tuning_lrs:
        results, log = _prompt_tuning(replace(setup, task=dev_task), seed, lr, f"selection.prompt_tuning.lr{lr:g}")
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


def _mean_pairwise_cosine(soft: torch.Tensor) -> float:
    """Mean cosine between one item's soft tokens (NaN for a single token)."""
    return float(mean_offdiagonal_cosine(soft.float())) if soft.shape[0] >= 2 else float("nan")


def _receiver_colour(rp: ReceiverPrompt, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the receiver's input embeddings of real text (normalizer.recolour)."""
    with torch.no_grad():
        embeds = torch.cat([rp.text_middle(t) for t in texts]).float()
    return embeds.mean(0).cpu(), embeds.std(0).cpu()


def _auxiliary_losses(spec, task, sender, receiver, rp, bridge, answers, device) -> dict:
    """name -> (weight, loss(step, soft, aux, source, source_mask)) for every auxiliary loss the spec turns on;
    heads the losses train are attached to the bridge (so they are checkpointed and optimised with it)."""
    losses, cfg = {}, spec.training.losses
    if cfg.reconstruction_cosine:
        losses["reconstruction"] = (cfg.reconstruction_cosine, lambda step, soft, aux, src, mask:
                                    step.item_mean(A.reconstruction_cosine(soft, src, mask)))
    if cfg.info_nce is not None:
        temperature = cfg.info_nce.temperature
        losses["info_nce"] = (cfg.info_nce.weight, lambda step, soft, aux, src, mask:
                              step.over_batch(soft, lambda rows: A.info_nce(rows, temperature)))
    if cfg.anchor is not None:
        anchor = cfg.anchor
        with torch.no_grad():
            if anchor.target == "question":
                targets = [rp.text_middle(f"Question: {i.input}\nAnswer:").float() for i in task.train]
            else:
                targets = [L.embed(receiver, torch.tensor(a, dtype=torch.long)).float() for a in answers]

        def anchor_loss(step, soft, aux, src, mask):
            target, target_mask = pad_states([targets[i] for i in step.local], device)
            return step.item_mean(A.anchor(soft.float(), target, target_mask, anchor.distance))
        losses["anchor"] = (anchor.weight, anchor_loss)
    if cfg.reconstruction_head:
        bridge.reconstruction_head = A.ReconstructionHead(receiver.model.config.hidden_size,
                                                          bridge.normalizer.mean.shape[-1]).to(device)
        losses["reconstruction_head"] = (cfg.reconstruction_head, lambda step, soft, aux, src, mask:
                                         step.item_mean(bridge.reconstruction_head.loss(aux["raw"], src, mask)))
    if cfg.bag_of_words:
        special = set(sender.tokenizer.all_special_ids)
        token_ids = [[t for t in L.tokenize(sender, task.sender_text(i)) if t not in special] for i in task.train]
        bridge.bag_of_words = A.BagOfWordsHead(receiver.model.config.hidden_size, len(sender.tokenizer)).to(device)

        def bow_loss(step, soft, aux, src, mask):
            ids = [torch.tensor(token_ids[i] or [0], dtype=torch.long) for i in step.local]
            width = max(len(x) for x in ids)
            padded = torch.full((len(ids), width), -1, dtype=torch.long)
            for row, x in enumerate(ids):
                padded[row, : len(x)] = x
            return step.item_mean(bridge.bag_of_words.loss(aux["raw"], padded.to(device), padded.to(device) >= 0))
        losses["bow"] = (cfg.bag_of_words, bow_loss)
    return losses


def _diagnostics(bridge: LatentBridge, soft: torch.Tensor, aux: dict) -> dict:
    """Per-step curves of seed 002's lineage: output scale, variance of the resampler's (FSQ: quantized) output,
    the share of saturated tanh outputs, the quantizer's code usage in the batch."""
    with torch.no_grad():
        raw = aux["raw"].float()
        if isinstance(bridge.vq, FSQ):
            z_variance = fsq_z_variance(torch.cat([q.values for q in aux["quantized"]], dim=1))
        else:
            z_variance = float(raw.var(dim=(0, 1)).mean()) if raw.shape[0] * raw.shape[1] > 1 else float("nan")
        out = {"scale": float(bridge.output.scale), "z_variance": z_variance,
               "soft_token_std": float(soft.detach().float().std())}
        if bridge.output.mode in ("tanh", "layernorm_tanh"):  # share of outputs where tanh is flat (|tanh| > 0.995)
            bounded = bridge.output.norm(aux["raw"]) if bridge.output.norm is not None else aux["raw"]
            out["tanh_saturation"] = float((bounded.detach().abs() > 3.0).float().mean())
        for q in aux.get("quantized", [])[:1]:
            out.update({"vq_perplexity": q.perplexity, "codes_used": q.codes_used, "code_diversity": q.diversity})
    return out


def _flow_targets(receiver, items: list[TaskItem], latents: int, target: str) -> list[torch.Tensor]:
    """The receiver embeddings the flow learns to generate: '{answer}<eos>' or the question, cut or padded with the
    EOS embedding to `latents` rows."""
    eos = receiver.tokenizer.eos_token_id
    out = []
    with torch.no_grad():
        for item in items:
            ids = L.tokenize(receiver, item.answer if target == "answer" else item.input) + [eos]
            ids = (ids + [eos] * latents)[:latents]
            out.append(L.embed(receiver, torch.tensor(ids, dtype=torch.long)).float())
    return out


def _flow_bridge(setup: Setup, seed: int):
    """Seed 002's phases 12-14: a DiT trained with rectified flow generates the receiver embeddings; Euler sampling
    with EMA weights; the generated embeddings take the soft tokens' place."""
    spec, ctx, task, receiver, primed, prompt_embeds = (setup.spec, setup.ctx, setup.task, setup.receiver, setup.primed,
                                                         setup.prompt_embeds)
    train_states, eval_states, bar = setup.train_states, setup.eval_states, setup.bar
    flow, device, eval_batch = spec.bridge.flow, receiver.device, spec.evaluation.batch_size
    width = receiver.model.config.hidden_size
    targets = _flow_targets(receiver, task.train, flow.latents, flow.target)
    torch.manual_seed(seed)
    model = _FlowBridge(DiTDenoiser(flow.latents, width, train_states[0].shape[-1], flow.width, flow.depth, flow.heads,
                                    flow.condition), flow.ema_decay).to(device)

    def flow_loss(step: Step) -> dict:
        padded, mask = pad_states([train_states[i] for i in step.local], device)
        target = torch.stack([targets[i] for i in step.local]).to(device)
        # noise and t depend on (seed, the step's items) only, so a resumed run draws what an uninterrupted one did
        generator = torch.Generator(device=device).manual_seed(hash((seed, *step.all)) % 2**31)
        loss = step.item_mean(rectified_flow_loss(model.denoiser, target, padded, mask, generator))
        return {"total": loss, "flow": loss}

    with ctx.phase("training.bridge"):
        train_bar = ctx.progress(total=spec.training.steps, desc=f"training flow bridge (seed {seed})", unit="step")
        trained = train(model, flow_loss, n_items=len(task.train), steps=spec.training.steps, spec=spec.training,
                        lr=spec.training.lr, seed=seed, checkpoint=ctx.state_dir / f"bridge.seed{seed}.pt",
                        label="bridge", progress=train_bar, processes=ctx.processes, after_step=model.update_ema)
        train_bar.close()
    ctx.state_use[f"bridge.seed{seed}"] = trained.status
    curves = [{**row, "seed": seed} for row in trained.log]
    with ctx.phase("evaluation.bridge"):
        generator = torch.Generator(device=device).manual_seed(seed + 3)
        generated = []
        for start in range(0, len(eval_states), eval_batch):
            padded, mask = pad_states(eval_states[start:start + eval_batch], device)
            generated.extend(euler_sample(model.ema.model, padded, mask, flow.euler_steps, generator))
        check_finite(torch.stack(generated), receiver.name, "flow bridge output")
        results = {"bridge": _evaluate(ctx, primed, [primed.soft_middle(g, prompt_embeds) for g in generated],
                                       eval_batch, bar)}
        eval_targets = _flow_targets(receiver, task.eval, flow.latents, flow.target)
        for r, g, t in zip(results["bridge"], generated, eval_targets):
            r.update(_soft_token_stats(g))
            r.update(_soft_token_stats(t, "target_embedding"))
            r["soft_token_rms"] = round(float(g.pow(2).mean(-1).sqrt().mean()), 6)
            r["soft_token_similarity"] = round(_mean_pairwise_cosine(g), 6)
    return results, curves


class _FlowBridge(nn.Module):
    """The denoiser and its EMA copy (not trained: requires_grad is off), checkpointed together."""

    def __init__(self, denoiser: DiTDenoiser, ema_decay: float):
        super().__init__()
        self.denoiser = denoiser
        self.ema = EMA(denoiser, ema_decay)
        self.ema_model = self.ema.model  # registered, so the EMA weights are in the state dict

    def update_ema(self) -> None:
        self.ema.update(self.denoiser)
