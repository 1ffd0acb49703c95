"""StatisticalNormalizer -> PerceiverResampler -> output scaling (-> VQ): sender states to soft tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from registry.kinds.bridge import BridgeArchSpec


class StatisticalNormalizer(nn.Module):
    """Affine whitening of sender states with statistics measured on calibration items.

    (x - mean) / std per dimension; with `learnable`, mean and log-std are trained with the
    bridge. The re-colouring to the receiver's embedding scale happens at the bridge output.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, learnable: bool):
        super().__init__()
        log_std = std.clamp_min(1e-6).log()
        if learnable:
            self.mean, self.log_std = nn.Parameter(mean.clone()), nn.Parameter(log_std)
        else:
            self.register_buffer("mean", mean.clone())
            self.register_buffer("log_std", log_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * torch.exp(-self.log_std)


class PerceiverBlock(nn.Module):
    """Latents cross-attend to the (masked) source, then self-attend, then an FFN; pre-norm residuals."""

    def __init__(self, dim: int, heads: int, ffn_mult: int):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))

    def forward(self, latents: torch.Tensor, context: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(context)
        latents = latents + self.cross(self.norm_q(latents), kv, kv, key_padding_mask=pad_mask, need_weights=False)[0]
        x = self.norm_self(latents)
        latents = latents + self.self_attn(x, x, x, need_weights=False)[0]
        return latents + self.ffn(self.norm_ffn(latents))


class PerceiverResampler(nn.Module):
    """K learned queries read a variable-length source sequence into K vectors of the receiver's width."""

    def __init__(self, in_dim: int, out_dim: int, n_queries: int, dim: int, depth: int, heads: int, ffn_mult: int,
                 steps: int = 1):
        super().__init__()
        self.proj_in = nn.Linear(in_dim, dim)
        self.queries = nn.Parameter(torch.randn(steps, n_queries, dim) * 0.02)
        self.blocks = nn.ModuleList(PerceiverBlock(dim, heads, ffn_mult) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim)
        self.proj_out = nn.Linear(dim, out_dim)
        # recurrent steps read the soft tokens already produced, mapped back to the latent width
        self.proj_back = nn.Linear(out_dim, dim) if steps > 1 else None

    def step(self, index: int, context: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        latents = self.queries[index].expand(context.shape[0], -1, -1)
        for block in self.blocks:
            latents = block(latents, context, pad_mask)
        return self.proj_out(self.norm_out(latents))


class OutputScaling(nn.Module):
    """Brings soft tokens to the receiver's embedding scale (rms: x / rms(x) * s; tanh: tanh(x) * s)."""

    def __init__(self, mode: str, scale: float, learnable: bool):
        super().__init__()
        self.mode = mode
        value = torch.tensor(float(scale))
        self.scale = nn.Parameter(value) if learnable else nn.Buffer(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "rms":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-8) * self.scale
        if self.mode == "tanh":
            return torch.tanh(x) * self.scale
        return x


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation with a straight-through gradient (codebook + commitment loss)."""

    def __init__(self, codebook_size: int, dim: int, commitment: float):
        super().__init__()
        self.codebook = nn.Embedding(codebook_size, dim)
        nn.init.normal_(self.codebook.weight, std=1.0 / dim**0.5)
        self.commitment = commitment

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        distances = (flat.pow(2).sum(-1, keepdim=True) - 2 * flat @ self.codebook.weight.T
                     + self.codebook.weight.pow(2).sum(-1)[None])
        codes = distances.argmin(-1)
        quantized = self.codebook(codes).view_as(x)
        loss = F.mse_loss(quantized, x.detach()) + self.commitment * F.mse_loss(x, quantized.detach())
        return x + (quantized - x).detach(), loss, codes.view(x.shape[:-1])


class LatentBridge(nn.Module):
    """Sender states (B, T, d_s) with a padding mask -> soft tokens (B, steps x K, d_r)."""

    def __init__(self, spec: BridgeArchSpec, sender_dim: int, receiver_dim: int, mean: torch.Tensor,
                 std: torch.Tensor, receiver_rms: float):
        super().__init__()
        self.normalizer = StatisticalNormalizer(mean, std, spec.normalizer.learnable)
        r = spec.resampler
        self.resampler = PerceiverResampler(sender_dim, receiver_dim, spec.soft_tokens, r.dim, r.depth, r.heads,
                                            r.ffn_mult, spec.recurrent_steps)
        self.steps = spec.recurrent_steps
        self.vq = VectorQuantizer(spec.vq.codebook_size, receiver_dim, spec.vq.commitment) if spec.vq else None
        scale = receiver_rms if spec.output.scale_init == "receiver_rms" else float(spec.output.scale_init)
        self.output = OutputScaling(spec.output.scaling, scale, spec.output.learnable_scale)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """mask: True at real tokens. Returns soft tokens and auxiliary outputs (vq_loss, codes)."""
        context = self.resampler.proj_in(self.normalizer(states))
        pad_mask = ~mask
        produced, vq_losses, codes = [], [], []
        for step in range(self.steps):
            if produced:
                back = self.resampler.proj_back(torch.cat(produced, dim=1))
                ctx = torch.cat([context, back], dim=1)
                pads = torch.cat([pad_mask, pad_mask.new_zeros(back.shape[:2])], dim=1)
            else:
                ctx, pads = context, pad_mask
            raw = self.resampler.step(step, ctx, pads)
            if self.vq is not None:  # quantise the raw latents; the scale is applied after
                raw, loss, step_codes = self.vq(raw)
                vq_losses.append(loss), codes.append(step_codes)
            produced.append(self.output(raw))
        aux: dict = {}
        if vq_losses:
            aux["vq_loss"] = torch.stack(vq_losses).mean()
            aux["codes"] = torch.cat(codes, dim=1)
        return torch.cat(produced, dim=1), aux


def mean_offdiagonal_cosine(rows: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity over all pairs of distinct rows of an (n, d) matrix, n >= 2."""
    unit = F.normalize(rows, dim=-1)
    sims = unit @ unit.T
    n = rows.shape[0]
    return (sims.sum() - sims.diagonal().sum()) / (n * (n - 1))


def batch_diversity_loss(soft: torch.Tensor) -> torch.Tensor:
    """Mean off-diagonal cosine similarity of the flattened soft tokens of a batch (seed 002, section 56)."""
    if soft.shape[0] < 2:
        return soft.new_zeros(())
    return mean_offdiagonal_cosine(soft.reshape(soft.shape[0], -1))
