"""Auxiliary losses of seed 002's GSM8K lineage (V1-V11), each as the report wrote it, added with a weight in the spec
(`training.losses`; the output heads are modules.OutputScaling):
  reconstruction_cosine  V1: 1 - cos(mean of the soft tokens, masked mean of the source states)
  info_nce               V2: mean-pooled, normalised soft tokens against each other, temperature 0.07
  anchor                 V3 (MSE: the scale-mismatch bug of section 15) or V3.1 (1 - cosine), to the masked mean of
                         the answer's (V3-V5, V7+) or the question's (V6) receiver embeddings
  reconstruction_head    V8: a linear head target -> source width on the raw resampler output, mean over tokens,
                         MSE to the masked mean of the source states
  bag_of_words           V9: a linear head over the sender's vocabulary on the max-pooled raw output, multi-hot BCE
  token_weights          V11: per-token LM-loss weights, the first N target tokens x W, normalised by the weight sum
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F


def masked_mean(states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, T, D] -> [B, D], over the positions where mask is 1."""
    if mask is None:
        return states.mean(1)
    weights = mask.to(states.dtype)[..., None]
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def reconstruction_cosine(soft_tokens: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
    """Dimensions pair by index; of widths that differ, the first min(widths) are compared (see the spec field)."""
    width = min(soft_tokens.shape[-1], source.shape[-1])
    soft, target = soft_tokens.mean(1)[..., :width], masked_mean(source, source_mask)[..., :width]
    return 1 - F.cosine_similarity(soft, target, dim=-1).mean()


def info_nce(soft_tokens: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Section 6's contrastive loss. Identical soft tokens for every item give exactly ln(batch)."""
    features = F.normalize(soft_tokens.mean(1), dim=-1)
    logits = features @ features.t() / temperature
    return F.cross_entropy(logits, torch.arange(len(features), device=features.device))


def anchor(soft_tokens: torch.Tensor, target_embeds: torch.Tensor, target_mask: torch.Tensor | None,
           distance: Literal["mse", "cosine"]) -> torch.Tensor:
    soft, target = soft_tokens.mean(1), masked_mean(target_embeds, target_mask)
    if distance == "mse":
        return F.mse_loss(soft, target)
    if distance == "cosine":
        return 1 - F.cosine_similarity(soft, target, dim=-1).mean()
    raise ValueError(f"anchor distance must be 'mse' or 'cosine', got {distance!r}")


class ReconstructionHead(nn.Module):
    def __init__(self, target_width: int, source_width: int):
        super().__init__()
        self.project = nn.Linear(target_width, source_width)

    def loss(self, raw: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
        return F.mse_loss(self.project(raw).mean(1), masked_mean(source, source_mask))


class BagOfWordsHead(nn.Module):
    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.classify = nn.Linear(width, vocab_size)

    def loss(self, raw: torch.Tensor, source_ids: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
        """BCE of the max-pooled raw output's logits against which sender tokens the question contains."""
        targets = torch.zeros(raw.shape[0], self.vocab_size, device=raw.device)
        ids = source_ids if source_mask is None else source_ids.masked_fill(~source_mask.bool(), -1)
        rows, cols = (ids >= 0).nonzero(as_tuple=True)
        targets[rows, ids[rows, cols]] = 1.0
        return F.binary_cross_entropy_with_logits(self.classify(raw.max(1).values), targets)


def token_weights(target_mask: torch.Tensor, first: int, weight: float) -> torch.Tensor:
    """V11's bottleneck weighting: the first `first` real target tokens of each row weigh `weight`, the rest 1;
    padding 0. The weighted loss is sum(loss x w) / sum(w)."""
    real = target_mask.to(torch.float32)
    position = real.cumsum(1) - 1  # 0 at each row's first real token
    return torch.where(position < first, torch.tensor(float(weight)), torch.tensor(1.0)) * real


def chance_info_nce(batch_size: int) -> float:
    """The InfoNCE of a bridge that sends the same tokens for every item: the sanity value a fresh bridge starts near."""
    return math.log(batch_size)
