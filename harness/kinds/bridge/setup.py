"""What every bridge method shares within one run: the setup (task, models, prompts, sender states), sharded
evaluation, and the per-item statistics of what a method sends.

The trained methods live in their own modules (`latent_bridge`, `flow_bridge`, `prompt_tuning`), loaded by the
executor only when the spec uses them (`BridgeSpec.code_parts`), so a run stage depends on the methods it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.context import RunContext
from harness.kinds.bridge.modules import mean_offdiagonal_cosine
from harness.kinds.bridge.receiver import ReceiverPrompt
from harness.kinds.bridge.sender_states import sender_states
from harness.kinds.bridge.task import TaskData, TaskItem
from harness.sharding import map_sharded
from registry.kinds.bridge import BridgeSpec


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


def receiver_prompts(receiver, task: TaskData) -> tuple[ReceiverPrompt, ReceiverPrompt, torch.Tensor]:
    """The evaluation prompt, the training prompt (another primer only when the spec sets train_primer) and the
    embedded text after the soft tokens."""
    t = task.task
    if t.placement == "before_bos":  # <soft> [BOS] prompt: nothing is encoded before the soft tokens
        primed = ReceiverPrompt.build(receiver, task, "", bos=False)
        return primed, primed, primed.text_middle(t.prompt, bos=True)
    primed = ReceiverPrompt.build(receiver, task, t.primer)
    training = primed if t.train_primer is None else ReceiverPrompt.build(receiver, task, t.train_primer)
    return primed, training, primed.text_middle(t.prompt)


def states_at_layer(sender, layer: int, ctx: RunContext, texts: dict[str, list[str]]) -> dict[str, list]:
    """Sender states of each named list of texts at `layer` (computed once by the main process and cached)."""
    if not ctx.processes.is_main:
        ctx.processes.wait()  # the main process computes and caches them; the others read the cache
    bar = ctx.progress(total=sum(len(t) for t in texts.values()), desc=f"sender states (layer {layer})", unit="item")
    out = {name: sender_states(sender, items, layer, ctx.cache_dir, progress=bar) for name, items in texts.items()}
    bar.close()
    if ctx.processes.is_main:
        ctx.processes.wait()
    return out


def evaluate(ctx: RunContext, rp: ReceiverPrompt, middles: list[torch.Tensor], batch_size: int, bar=None) -> list[dict]:
    """rp.evaluate over this process's shard of the items, gathered in item order on every process."""
    return map_sharded(lambda shard: rp.evaluate(shard, batch_size, bar), middles, ctx.processes)


def accuracy(task: TaskData, items: list[TaskItem], results: list[dict]) -> float:
    key = "scored" if task.is_classification else "generation"
    return float(np.mean([task.correct(item, r[key]) for item, r in zip(items, results)]))


def soft_token_stats(soft: torch.Tensor, prefix: str = "soft_token") -> dict:
    values = soft.float()
    return {f"{prefix}_min": round(float(values.min()), 6), f"{prefix}_max": round(float(values.max()), 6),
            f"{prefix}_mean": round(float(values.mean()), 6), f"{prefix}_std": round(float(values.std()), 6)}


def mean_pairwise_cosine(soft: torch.Tensor) -> float:
    """Mean cosine between one item's soft tokens (NaN for a single token)."""
    return float(mean_offdiagonal_cosine(soft.float())) if soft.shape[0] >= 2 else float("nan")
