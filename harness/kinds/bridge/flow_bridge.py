"""The flow bridge (seed 002, phases 12-14): a DiT trained with rectified flow generates the receiver's input
embeddings from the sender's states. A part of the bridge kind, loaded when a spec sets `bridge.flow`."""

from __future__ import annotations

import torch
from torch import nn

from harness.kinds.bridge.flow import EMA, DiTDenoiser, euler_sample, rectified_flow_loss
from harness.kinds.bridge.sender_states import pad_states
from harness.kinds.bridge.setup import Setup, evaluate, mean_pairwise_cosine, soft_token_stats
from harness.kinds.bridge.task import TaskItem
from harness.kinds.bridge.training import train
from harness.models import check_finite
from harness.models import lm as L
from harness.sharding import Step


def seeded(setup: Setup, seed: int):
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
        results = {"bridge": evaluate(ctx, primed, [primed.soft_middle(g, prompt_embeds) for g in generated],
                                      eval_batch, bar)}
        eval_targets = _flow_targets(receiver, task.eval, flow.latents, flow.target)
        for r, g, t in zip(results["bridge"], generated, eval_targets):
            r.update(soft_token_stats(g))
            r.update(soft_token_stats(t, "target_embedding"))
            r["soft_token_rms"] = round(float(g.pow(2).mean(-1).sqrt().mean()), 6)
            r["soft_token_similarity"] = round(mean_pairwise_cosine(g), 6)
    return results, curves


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


class _FlowBridge(nn.Module):
    """The denoiser and its EMA copy (not trained: requires_grad is off), checkpointed together."""

    def __init__(self, denoiser: DiTDenoiser, ema_decay: float):
        super().__init__()
        self.denoiser = denoiser
        self.ema = EMA(denoiser, ema_decay)
        self.ema_model = self.ema.model  # registered, so the EMA weights are in the state dict

    def update_ema(self) -> None:
        self.ema.update(self.denoiser)
