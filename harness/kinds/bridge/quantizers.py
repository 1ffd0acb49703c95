"""Discrete bottlenecks for the bridge's soft tokens (seed 002, phase 15, sections 46-51).

VectorQuantizer: a learned codebook, L2 or cosine nearest code, straight-through gradients, codebook loss plus
0.25 x commitment loss, an optional LayerNorm before it, and an optional entropy bonus on code usage.
FSQ: project to len(levels) dimensions, bound with tanh, round each dimension to its levels (straight-through),
project back. Its two diversity terms are kept exactly as the report had them: the "unique-code" term is computed
from torch.unique and carries no gradient (section 51's bug), the variance term is differentiable (its fix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

EPS = 1e-8


@dataclass
class Quantized:
    """A quantizer's output: soft tokens [B, N, D] (straight-through), the auxiliary loss to add, the chosen
    codes [B, N] (FSQ: numbered within the batch), and usage statistics over the batch (no gradient). FSQ also
    gives each token's level indices [B, N, L] (codes comparable across batches) and its quantized values."""

    tokens: torch.Tensor
    loss: torch.Tensor
    codes: torch.Tensor
    perplexity: float
    codes_used: int
    diversity: float  # distinct codes / tokens in the batch
    levels: torch.Tensor | None = None
    values: torch.Tensor | None = None  # detached


def _usage(codes: torch.Tensor, size: int) -> tuple[torch.Tensor, float, int]:
    counts = torch.bincount(codes.reshape(-1), minlength=size).float()
    probs = counts / counts.sum()
    entropy = -(probs * torch.log(probs + EPS)).sum()
    return probs, float(torch.exp(entropy)), int((counts > 0).sum())


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int, distance: Literal["l2", "cosine"] = "l2",
                 init: Literal["scaled_normal", "uniform", "normal", "unit"] = "uniform", pre_norm: bool = False,
                 commitment: float = 0.25, entropy_weight: float = 0.0,
                 entropy_from: Literal["usage", "soft"] = "usage"):
        """init: 'scaled_normal' is N(0, 1/dim); 'uniform' is nn.Embedding's +-1/K as the report first had it (section 47, issue 3: the VQ loss
        exploded), 'normal' N(0, 1), 'unit' N(0, 1) rows scaled to norm 1 (its fix). entropy_from: 'usage' is the
        entropy of the batch's hard code histogram, as the report's `avg_probs` (no gradient reaches the encoder
        through it); 'soft' uses the softmax over negative distances, which does."""
        super().__init__()
        if distance not in ("l2", "cosine"):
            raise ValueError(f"distance must be 'l2' or 'cosine', got {distance!r}")
        if entropy_from not in ("usage", "soft"):
            raise ValueError(f"entropy_from must be 'usage' or 'soft', got {entropy_from!r}")
        self.codebook = nn.Embedding(codebook_size, dim)
        if init == "scaled_normal":
            nn.init.normal_(self.codebook.weight, std=1.0 / dim**0.5)
        elif init == "uniform":
            nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        elif init in ("normal", "unit"):
            nn.init.normal_(self.codebook.weight)
            if init == "unit":
                with torch.no_grad():
                    self.codebook.weight.copy_(F.normalize(self.codebook.weight, dim=1))
        else:
            raise ValueError(f"init must be 'scaled_normal', 'uniform', 'normal' or 'unit', got {init!r}")
        self.norm = nn.LayerNorm(dim) if pre_norm else None
        self.distance, self.commitment = distance, commitment
        self.entropy_weight, self.entropy_from = entropy_weight, entropy_from

    def forward(self, x: torch.Tensor) -> Quantized:
        if self.norm is not None:
            x = self.norm(x)
        flat = x.contiguous().view(-1, x.shape[-1])
        book = self.codebook.weight
        if self.distance == "cosine":
            distances = -F.normalize(flat, dim=1) @ F.normalize(book, dim=1).t()
        else:
            distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t() + book.pow(2).sum(1)[None]
        codes = distances.argmin(1)
        quantized = self.codebook(codes).view_as(x)
        loss = F.mse_loss(quantized, x.detach()) + self.commitment * F.mse_loss(quantized.detach(), x)
        probs, perplexity, used = _usage(codes, book.shape[0])
        if self.entropy_weight:
            if self.entropy_from == "soft":
                probs = torch.softmax(-distances, dim=1).mean(0)
            entropy = -(probs * torch.log(probs + EPS)).sum()
            loss = loss - self.entropy_weight * entropy / math.log(book.shape[0])
        tokens = x + (quantized - x).detach()
        return Quantized(tokens, loss, codes.view(x.shape[:-1]), perplexity, used,
                         codes.unique().numel() / codes.numel())


class FSQ(nn.Module):
    def __init__(self, levels: list[int], dim: int, unique_code_weight: float = 0.0, variance_weight: float = 0.0):
        """levels: values per projected dimension (8 x 8 in section 48, 32 x 5 in section 49). The two diversity
        terms: -log(distinct codes / tokens), computed as the report did (no gradient), and -log(variance of the
        quantized values), differentiable."""
        super().__init__()
        if not levels or min(levels) < 2:
            raise ValueError(f"every FSQ level count must be at least 2, got {levels}")
        self.register_buffer("levels", torch.tensor(levels), persistent=False)
        self.down = nn.Linear(dim, len(levels))
        self.up = nn.Linear(len(levels), dim)
        self.unique_code_weight, self.variance_weight = unique_code_weight, variance_weight

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounded z -> (values evenly spaced in [-1, 1], L per dimension, straight-through; level indices)."""
        bounded = torch.tanh(z)
        steps = (self.levels - 1).to(z.dtype)
        index = torch.round((bounded + 1) / 2 * steps)
        values = index / steps * 2 - 1
        return bounded + (values - bounded).detach(), index.long()

    def forward(self, x: torch.Tensor) -> Quantized:
        z_q, index = self.quantize(self.down(x))
        # codes are numbered within the batch (5^32 codes overflow any integer), by their distinct level vectors
        table, codes = torch.unique(index.reshape(-1, index.shape[-1]), dim=0, return_inverse=True)
        codes = codes.view(index.shape[:-1])
        distinct = table.shape[0] / codes.numel()
        loss = x.new_zeros(())
        if self.unique_code_weight:  # section 50's term: a constant built from a Python float, so no gradient
            loss = loss + self.unique_code_weight * -torch.log(torch.tensor(distinct + EPS, device=x.device))
        if self.variance_weight:  # section 51's fix
            loss = loss + self.variance_weight * -torch.log(z_q.var(dim=(0, 1)).mean() + EPS)
        _, perplexity, used = _usage(codes, table.shape[0])
        return Quantized(self.up(z_q), loss, codes, perplexity, used, distinct, index, z_q.detach())


def fsq_z_variance(values: torch.Tensor) -> float:
    """The report's "Z Variance" of FSQ: variance over batch and tokens of the quantized values, mean over dims."""
    return float(values.var(dim=(0, 1)).mean())
