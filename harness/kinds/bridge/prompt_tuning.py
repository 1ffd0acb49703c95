"""Receiver-only prompt tuning: K trainable vectors before the item text, no sender, trained with the bridge's
budget. A part of the bridge kind, loaded when a spec evaluates `prompt_tuning` (or selects its learning rate)."""

from __future__ import annotations

import torch
from torch import nn

from harness.kinds.bridge.receiver import ReceiverPrompt
from harness.kinds.bridge.setup import Setup, evaluate
from harness.kinds.bridge.training import train
from harness.models import lm as L
from harness.sharding import Step


class SoftPrompt(nn.Module):
    """Receiver-only prompt tuning: K trainable vectors before the item text; no sender."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.vectors = nn.Parameter(init.clone())


def train_and_evaluate(setup: Setup, seed: int, lr: float, state_name: str) -> tuple[list[dict], list[dict]]:
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
        results = evaluate(ctx, plain, eval_middles, spec.evaluation.batch_size, setup.bar)
    return results, trained.log
