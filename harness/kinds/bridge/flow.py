"""A generative bridge: a Diffusion Transformer (DiT) trained with rectified flow (seed 002, phases 12-14).

The denoiser maps N noisy latents of the receiver's width, a timestep and the sender's states to a velocity.
Conditioning follows the report's three versions:
  mean_pool        (V12) the masked mean of the projected source, added to the timestep embedding; AdaLN only
  cross_attention  (V13) AdaLN on the timestep alone, and every block cross-attends to the full source sequence
  hybrid           (V14) attention pooling with a learnable query into the AdaLN condition, plus cross-attention
Rectified flow: x_t = t x1 + (1 - t) x0 with x0 ~ N(0, I), velocity target x1 - x0, MSE, t ~ U(0, 1); sampling
integrates dx/dt = v from t = 0 to 1 with Euler steps. Weights for sampling are an exponential moving average.
Not wired into a spec yet (seed 002's V12-V14 build on the GSM8K lineage's base spec).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import nn

from harness.kinds.bridge.auxiliary import masked_mean

Condition = Literal["mean_pool", "cross_attention", "hybrid"]
CONDITIONS: tuple[str, ...] = ("mean_pool", "cross_attention", "hybrid")


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] (scaled by 1000, as DiT does for its integer steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Self-attention and an MLP, each under AdaLN-Zero modulation from the condition vector; optionally a
    cross-attention to the source sequence between them."""

    def __init__(self, width: int, heads: int, cross_attention: bool, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross = nn.MultiheadAttention(width, heads, batch_first=True) if cross_attention else None
        self.norm_cross = nn.LayerNorm(width, eps=1e-6) if cross_attention else None
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.modulation[1].weight)  # adaLN-Zero: every block starts as the identity
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, source: torch.Tensor | None,
                source_pad: torch.Tensor | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).chunk(6, dim=-1)
        h = _modulate(self.norm1(x), shift1, scale1)
        x = x + gate1[:, None] * self.attn(h, h, h, need_weights=False)[0]
        if self.cross is not None:
            h = self.norm_cross(x)
            x = x + self.cross(h, source, source, key_padding_mask=source_pad, need_weights=False)[0]
        h = _modulate(self.norm2(x), shift2, scale2)
        return x + gate2[:, None] * self.mlp(h)


class DiTDenoiser(nn.Module):
    """v_theta(x_t, t, source): latents [B, N, target_width] -> velocity of the same shape."""

    def __init__(self, latents: int, target_width: int, source_width: int, width: int = 512, depth: int = 4,
                 heads: int = 8, condition: Condition = "mean_pool"):
        super().__init__()
        if condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.condition = condition
        self.latents = latents
        self.target_width = target_width
        self.input = nn.Linear(target_width, width)
        self.position = nn.Parameter(torch.randn(1, latents, width) * 0.02)
        self.source = nn.Linear(source_width, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        if condition == "mean_pool":
            self.pool = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        if condition == "hybrid":
            self.query = nn.Parameter(torch.randn(1, 1, width) * 0.02)
            self.pool_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.blocks = nn.ModuleList(DiTBlock(width, heads, cross_attention=condition != "mean_pool")
                                    for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.output = nn.Linear(width, target_width)
        for layer in (self.final_modulation[1], self.output):  # the velocity starts at zero
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, source: torch.Tensor,
                source_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x_t [B, N, target_width]; t [B] in [0, 1]; source [B, S, source_width]; source_mask [B, S], 1 = real."""
        dtype = self.input.weight.dtype
        src = self.source(source.to(dtype))
        mask = torch.ones(src.shape[:2], dtype=torch.bool, device=src.device) if source_mask is None \
            else source_mask.bool()
        cond = self.time(timestep_features(t, src.shape[-1]).to(dtype))
        if self.condition == "mean_pool":
            cond = cond + self.pool(masked_mean(src, mask))
        elif self.condition == "hybrid":
            pooled = self.pool_attention(self.query.expand(src.shape[0], -1, -1), src, src,
                                         key_padding_mask=~mask, need_weights=False)[0]
            cond = cond + pooled[:, 0]
        cross = src if self.condition != "mean_pool" else None
        h = self.input(x_t.to(dtype)) + self.position
        for block in self.blocks:
            h = block(h, cond, cross, ~mask)
        shift, scale = self.final_modulation(cond).chunk(2, dim=-1)
        return self.output(_modulate(self.final_norm(h), shift, scale))


def rectified_flow_loss(model: nn.Module, target: torch.Tensor, source: torch.Tensor,
                        source_mask: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between the predicted velocity at x_t = t x1 + (1 - t) x0 and x1 - x0, with t ~ U(0, 1), x0 ~ N(0, I)."""
    t = torch.rand(target.shape[0], generator=generator, device=target.device)
    noise = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
    x_t = t[:, None, None] * target + (1 - t[:, None, None]) * noise
    velocity = model(x_t, t, source, source_mask)
    return nn.functional.mse_loss(velocity.float(), (target - noise).float())


@torch.no_grad()
def euler_sample(model: nn.Module, source: torch.Tensor, source_mask: torch.Tensor | None = None, steps: int = 10,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Integrate dx/dt = v(x, t, source) from noise at t = 0 to t = 1 in `steps` Euler steps."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    batch = source.shape[0]
    x = torch.randn((batch, model.latents, model.target_width), generator=generator, device=source.device)
    for i in range(steps):
        t = torch.full((batch,), i / steps, device=source.device)
        x = x + model(x, t, source, source_mask).float() / steps
    return x


class EMA:
    """An exponential moving average of a model's parameters (the weights sampling uses)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for shadow, p in zip(self.model.parameters(), model.parameters()):
            shadow.lerp_(p.detach(), 1.0 - self.decay)
