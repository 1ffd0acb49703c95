"""Per-row sampling with per-row temperature, top-k and top-p, and per-row random streams.

Order as transformers' warpers: temperature, then top-k, then top-p over the renormalised top-k
distribution (a token is kept while the mass of the tokens ranked above it is below top_p; the
most likely token is always kept; top_p >= 1 keeps all k). Tokens are drawn by inverse CDF from
one uniform number per row and step, so a row's draw depends on its own stream only, not on
which other rows share the batch, and two conditions given the same stream are paired.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass
class Candidates:
    """Each row's candidate tokens (most likely first) and their sampling probabilities."""

    token_ids: torch.Tensor  # (B, K) long
    probs: torch.Tensor  # (B, K) float32, rows sum to 1, zeros for filtered tokens


def mask_nonfinite(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits with NaN/Inf set to -inf, rows that had any, rows left with no finite logit)."""
    finite = torch.isfinite(logits)
    affected = ~finite.all(dim=-1)
    dead = ~finite.any(dim=-1)
    clean = logits.masked_fill(~finite, float("-inf"))
    clean[dead] = 0.0  # keeps the arithmetic finite; the caller ends these rows
    return clean, affected, dead


def invalid_prob_rows(probs: torch.Tensor) -> torch.Tensor:
    """Rows whose probabilities contain NaN, Inf or a negative value."""
    return ~torch.isfinite(probs).all(dim=-1) | (probs < 0).any(dim=-1)


def filter_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                  top_p: torch.Tensor) -> Candidates:
    """Apply per-row temperature (B,), top-k (B,) and top-p (B,) to a (B, V) logits batch."""
    scaled = logits.float() / temperature.float().unsqueeze(-1)
    k_max = min(int(top_k.max()), scaled.shape[-1])
    values, token_ids = scaled.topk(k_max, dim=-1)
    rank = torch.arange(k_max, device=logits.device)
    values = values.masked_fill(rank.unsqueeze(0) >= top_k.unsqueeze(-1), float("-inf"))
    probs = torch.softmax(values, dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs
    keep = (mass_above < top_p.float().unsqueeze(-1)) | (top_p.unsqueeze(-1) >= 1.0)
    keep[:, 0] = True
    probs = probs.masked_fill(~keep, 0.0)
    return Candidates(token_ids, probs / probs.sum(dim=-1, keepdim=True))


def draw(candidates: Candidates, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row by inverse CDF: the first candidate whose cumulative mass exceeds u."""
    cdf = candidates.probs.cumsum(dim=-1)
    targets = (uniforms.to(cdf) * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, targets, right=True)
    # probabilities are sorted, so the zeros form a suffix; rounding must never land there
    index = torch.minimum(index, (candidates.probs > 0).sum(dim=-1, keepdim=True) - 1)
    return candidates.token_ids.gather(-1, index).squeeze(-1)


def stream_seed(*parts) -> int:
    """A 63-bit seed from any printable parts (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def uniform_stream(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform numbers in [0, 1) from a private generator (CPU, so every device agrees)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator, dtype=torch.float32)
