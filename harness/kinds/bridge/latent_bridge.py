"""The latent bridge (seed 002): train the sender-to-receiver bridge with one seed, evaluate it, and the noise
baseline at its output scale. A part of the bridge kind, loaded when a spec trains a bridge without a flow."""

from __future__ import annotations

import torch

from harness.kinds.bridge import auxiliary as A
from harness.kinds.bridge.modules import LatentBridge, batch_diversity_loss
from harness.kinds.bridge.quantizers import FSQ, fsq_z_variance
from harness.kinds.bridge.receiver import ReceiverPrompt
from harness.kinds.bridge.sender_states import pad_states
from harness.kinds.bridge.setup import Setup, accuracy, evaluate, mean_pairwise_cosine, soft_token_stats
from harness.kinds.bridge.task import TaskData, TaskItem
from harness.kinds.bridge.training import train
from harness.models import lm as L
from harness.sharding import Step


def seeded(setup: Setup, seed: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """The bridge, and noise soft tokens at its output scale, trained and evaluated with one seed."""
    spec, methods = setup.spec, setup.spec.evaluation.methods
    bridge, trained = train_bridge(setup, seed, f"bridge.seed{seed}", quick_eval=True)
    curves = [{**row, "seed": seed} for row in trained.log]
    results: dict[str, list[dict]] = {}
    with setup.ctx.phase("evaluation.bridge"):
        results["bridge"], soft_eval = evaluate_bridge(setup, bridge, trained)
    if "noise" in methods:
        with setup.ctx.phase("evaluation.noise"):
            generator = torch.Generator().manual_seed(seed + 1)
            scale = float(bridge.output.scale.detach())
            noise = [torch.randn(s.shape, generator=generator) for s in soft_eval]
            noise = [n / n.pow(2).mean(-1, keepdim=True).sqrt() * scale for n in noise]
            results["noise"] = evaluate(setup.ctx, setup.primed, [setup.primed.soft_middle(n.to(setup.receiver.device),
                                                                                          setup.prompt_embeds)
                                                                   for n in noise], spec.evaluation.batch_size, setup.bar)
    return results, curves


def train_bridge(setup: Setup, seed: int, state_name: str, quick_eval: bool):
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
        return accuracy(task, quick, evaluate(ctx, setup.primed, [setup.primed.soft_middle(s, prompt_embeds) for s in soft],
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


def evaluate_bridge(setup: Setup, bridge: LatentBridge, trained) -> tuple[list[dict], list[torch.Tensor]]:
    """The trained bridge on the evaluation items of `setup` (generation and scored label), with what it sends."""
    spec = setup.spec
    codes: list | None = [] if spec.training.diagnostics and bridge.vq is not None else None
    soft_eval = _soft_tokens(bridge, setup.eval_states, setup.receiver.device, codes=codes)
    results = evaluate(setup.ctx, setup.primed, [setup.primed.soft_middle(s, setup.prompt_embeds) for s in soft_eval],
                       spec.evaluation.batch_size, setup.bar)
    for n, (r, soft) in enumerate(zip(results, soft_eval)):
        r["soft_token_rms"] = round(float(soft.pow(2).mean(-1).sqrt().mean()), 6)
        r["soft_token_similarity"] = round(mean_pairwise_cosine(soft), 6)
        if spec.training.diagnostics:
            r.update(soft_token_stats(soft))
            if codes is not None:
                r["codes"] = codes[n]
    if trained.nonfinite_at is not None:
        for r in results:
            r["training_stopped_at_step"] = trained.nonfinite_at
    return results, soft_eval


def _receiver_rms(rp: ReceiverPrompt, texts: list[str]) -> float:
    """Mean per-token RMS of the receiver's input embeddings of real text (the soft tokens' target scale)."""
    with torch.no_grad():
        embeds = torch.cat([rp.text_middle(t) for t in texts])
    return float(embeds.float().pow(2).mean(-1).sqrt().mean())


def _receiver_colour(rp: ReceiverPrompt, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the receiver's input embeddings of real text (normalizer.recolour)."""
    with torch.no_grad():
        embeds = torch.cat([rp.text_middle(t) for t in texts]).float()
    return embeds.mean(0).cpu(), embeds.std(0).cpu()


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


def _target_ids(task: TaskData, rp: ReceiverPrompt, item: TaskItem) -> list[int]:
    ids = rp.answer_ids(task.answer_text(item))
    return ids[: task.task.target_max_tokens] if task.task.target_max_tokens else ids


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
