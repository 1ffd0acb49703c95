"""Learned adapters between two models' states, trained through the target.

Each adapter works in the Procrustes fit's normalised coordinates, y = ((x - mu_x) / s_x) W' s_y + mu_y:
linear W' (no bias), affine W' and a bias, low-rank W' = W_procrustes (frozen) + B A. A training item is
a calibration text cut at `context_fraction` of its characters (at a space): the source's states of the
first part, adapted, are injected at the target's layer (zero inputs below it, as in generation), and
the target reads its own tokens of the rest, whose LM loss is the objective, plus the InfoNCE term
between mean-pooled adapted states and the target's own mean-pooled states of the first part.
Several layers (multi-layer alignment) train one adapter each under the weighted sum of their losses.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import nn

from harness.kinds.alignment import maps as M
from harness.kinds.alignment.states import encode, layer_states
from harness.models import check_finite
from harness.sharding import Step
from registry.kinds.alignment import Adapter


class StateAdapter(nn.Module):
    def __init__(self, config: Adapter, base: M.StateMap, seed: int):
        super().__init__()
        d_in, d_out = base.weight.shape
        start = base.weight.clone() if config.init == "procrustes" else M.random_semi_orthogonal(d_in, d_out, seed).weight
        self.register_buffer("mu_x", torch.as_tensor(base.mu_x, dtype=torch.float32).expand(d_in).clone())
        self.register_buffer("mu_y", torch.as_tensor(base.mu_y, dtype=torch.float32).expand(d_out).clone())
        self.s_x, self.s_y = float(base.s_x), float(base.s_y)
        self.type = config.type
        if config.type == "low_rank":
            self.register_buffer("base", start)
            generator = torch.Generator().manual_seed(seed)
            self.a = nn.Parameter(torch.randn(d_in, config.rank, generator=generator) / math.sqrt(d_in))
            self.b = nn.Parameter(torch.zeros(config.rank, d_out))  # starts at the base map
        else:
            self.weight = nn.Parameter(start)
            self.bias = nn.Parameter(torch.zeros(d_out)) if config.type == "affine" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mu_x) / self.s_x
        if self.type == "low_rank":
            out = z @ self.base + (z @ self.a) @ self.b
        else:
            out = z @ self.weight + (self.bias if self.bias is not None else 0)
        return out * self.s_y + self.mu_y

    def trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@dataclass
class Item:
    source_states: dict[int, torch.Tensor]  # layer -> (context positions, source width)
    source_content: list[int]  # positions of the source's context tokens, BOS excluded (pooled for InfoNCE)
    target_pooled: dict[int, torch.Tensor]  # layer -> (target width,) mean of the target's own context tokens, no BOS
    continuation: list[int]  # target token ids of the rest of the text


def split_text(text: str, fraction: float) -> tuple[str, str]:
    cut = int(len(text) * fraction)
    space = text.rfind(" ", 0, cut + 1)
    cut = space if space > 0 else cut
    return text[:cut], text[cut:]


def make_items(src, tgt, texts: list[str], src_layers: list[int], tgt_layers: list[int], fraction: float,
               add_bos: bool) -> list[Item]:
    items = []
    for text in texts:
        context, rest = split_text(text, fraction)
        continuation = tgt.tokenizer(rest, add_special_tokens=False)["input_ids"]
        if not context.strip() or not continuation:
            continue
        src_enc, tgt_enc = encode(src, context, add_bos), encode(tgt, context, add_bos)
        own = layer_states(tgt, tgt_enc.ids, tgt_layers)
        tgt_content = [i for i, end in enumerate(tgt_enc.ends) if end > 0]  # BOS states are outsized: not pooled
        items.append(Item(layer_states(src, src_enc.ids, src_layers), [i for i, end in enumerate(src_enc.ends) if end > 0],
                          {layer: s[tgt_content].mean(0) for layer, s in own.items()}, continuation))
    return items


def _inject_hook(adapted: torch.Tensor):
    def hook(module, args, kwargs):
        value = args[0] if args else kwargs["hidden_states"]
        new = torch.cat([adapted.to(value.device, value.dtype)[None], value[:, adapted.shape[0]:]], dim=1)
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}
    return hook


def lm_loss(tgt, layer: int, adapted: torch.Tensor, continuation: list[int]) -> torch.Tensor:
    """The target's mean cross-entropy on `continuation` after the injected prefix (teacher forcing)."""
    n = adapted.shape[0]
    ids = torch.tensor(continuation, device=tgt.device)
    embeds = torch.cat([torch.zeros(n, tgt.model.config.hidden_size, device=tgt.device, dtype=tgt.dtype),
                        tgt.model.get_input_embeddings()(ids)], dim=0)
    if layer == 0:
        embeds = torch.cat([adapted.to(tgt.device, tgt.dtype), embeds[n:]], dim=0)
        handle = None
    else:
        point = tgt.anatomy.layers[layer] if layer < tgt.anatomy.n_layers else tgt.anatomy.final_norm
        handle = point.register_forward_pre_hook(_inject_hook(adapted), with_kwargs=True)
    try:
        logits = tgt.model(inputs_embeds=embeds[None], position_ids=torch.arange(embeds.shape[0], device=tgt.device)[None],
                           use_cache=False, logits_to_keep=len(continuation) + 1).logits[0, :-1].float()
    finally:
        if handle is not None:
            handle.remove()
    check_finite(logits, tgt.name, "logits")
    return nn.functional.cross_entropy(logits, ids)


def infonce(adapted_pooled: torch.Tensor, target_pooled: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of matching each text's pooled adapted state to its own pooled target state in the batch."""
    a = nn.functional.normalize(adapted_pooled, dim=-1)
    b = nn.functional.normalize(target_pooled, dim=-1)
    logits = a @ b.T / temperature
    return nn.functional.cross_entropy(logits, torch.arange(len(a), device=logits.device))


def batch_loss(adapters: dict[int, StateAdapter], pairs: list[tuple[int, int]], weights: list[float], items: list[Item],
               step: Step, tgt, config: Adapter) -> tuple[torch.Tensor, dict]:
    """Weighted sum over layers of mean LM loss + weight x InfoNCE over the batch `items`, of which this process
    computes its shard `step.local` (indices into `items`, possibly none); values are the whole batch's (see
    harness.sharding), and the loss has no gradient on a process whose shard is empty. Also the parts, for the log."""
    local = [items[i] for i in step.local]
    total, lm_parts, nce_parts, nce_raw = 0.0, [], [], []
    for (ls, lt), weight in zip(pairs, weights):
        adapter = adapters[ls]
        adapted = [adapter(item.source_states[ls]) for item in local]
        lm = step.mean_of([lm_loss(tgt, lt, a, item.continuation) for a, item in zip(adapted, local)], tgt.device)
        loss = lm
        if len(items) > 1 and config.infonce.weight > 0:
            targets = torch.stack([i.target_pooled[lt] for i in items])
            pooled = [a[i.source_content].mean(0) for a, i in zip(adapted, local)]
            nce = step.over_batch(torch.stack(pooled) if pooled else targets.new_zeros((0, targets.shape[1])),
                                  lambda rows: infonce(rows, targets, config.infonce.temperature))
            loss = loss + config.infonce.weight * nce
            nce_parts.append(float(nce.detach()) - math.log(len(items)))
            nce_raw.append(float(nce.detach()))
        total = total + weight * loss
        lm_parts.append(float(lm.detach()))
    return total, {"lm_loss": float(sum(w * v for w, v in zip(weights, lm_parts))),
                   "infonce": float(sum(nce_raw) / len(nce_raw)) if nce_raw else None,
                   "infonce_minus_chance": float(sum(nce_parts) / len(nce_parts)) if nce_parts else None}


class EarlyStop:
    """The report's rule: stop when the validation loss has not improved by min_delta for `patience` epochs."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad = float("inf"), 0

    def __call__(self, loss: float) -> bool:
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
            return False
        self.bad += 1
        return self.bad >= self.patience


def batches(items: list[Item], size: int, seed: str) -> list[list[Item]]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [[items[i] for i in order[k:k + size]] for k in range(0, len(order), size)]
