"""StatisticalNormalizer -> PerceiverResampler (-> VQ or FSQ) -> output head: sender states to soft tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.kinds.bridge.quantizers import FSQ, VectorQuantizer
from registry.kinds.bridge import BridgeArchSpec


class StatisticalNormalizer(nn.Module):
    """Affine whitening of sender states with statistics measured on calibration items.

    (x - mean) / std per dimension; with `learnable`, mean and log-std are trained with the
    bridge. With `colour` (the receiver's embedding mean and std), the whitened states are
    re-coloured, x * std_r + mean_r, as seed 002's normalizer did; otherwise the scale is set
    at the bridge output.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, learnable: bool,
                 colour: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self._keep("mean", mean.clone(), learnable)
        self._keep("log_std", std.clamp_min(1e-6).log(), learnable)
        self.colour = colour is not None
        if colour is not None:
            target_mean, target_std = colour
            self._keep("target_mean", target_mean.clone(), learnable)
            self._keep("target_log_std", target_std.clamp_min(1e-8).log(), learnable)

    def _keep(self, name: str, value: torch.Tensor, learnable: bool) -> None:
        """A trained parameter, or a buffer that is saved with the bridge but not trained."""
        if learnable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        white = (x - self.mean) * torch.exp(-self.log_std)
        if self.colour:
            return white * torch.exp(self.target_log_std) + self.target_mean
        return white


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
    """Brings soft tokens to the receiver's embedding scale: rms x / rms(x) * s; tanh tanh(x) * s;
    layernorm_tanh tanh(LayerNorm(x)) * s; scale x * s; none x."""

    def __init__(self, mode: str, scale: float, learnable: bool, width: int | None = None):
        super().__init__()
        self.mode = mode
        value = torch.tensor(float(scale))
        self.scale = nn.Parameter(value) if learnable else nn.Buffer(value)
        self.norm = nn.LayerNorm(width) if mode == "layernorm_tanh" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "rms":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-8) * self.scale
        if self.mode == "tanh":
            return torch.tanh(x) * self.scale
        if self.mode == "layernorm_tanh":
            return torch.tanh(self.norm(x)) * self.scale
        if self.mode == "scale":
            return x * self.scale
        return x


def build_quantizer(spec: BridgeArchSpec, dim: int) -> nn.Module | None:
    if spec.vq is not None:
        vq = spec.vq
        return VectorQuantizer(vq.codebook_size, dim, vq.distance, vq.init, vq.pre_norm, vq.commitment,
                               vq.entropy_weight, vq.entropy_from)
    if spec.fsq is not None:
        return FSQ(spec.fsq.levels, dim, spec.fsq.unique_code_weight, spec.fsq.variance_weight)
    return None


class LatentBridge(nn.Module):
    """Sender states (B, T, d_s) with a padding mask -> soft tokens (B, steps x K, d_r)."""

    def __init__(self, spec: BridgeArchSpec, sender_dim: int, receiver_dim: int, mean: torch.Tensor,
                 std: torch.Tensor, receiver_rms: float, colour: tuple[torch.Tensor, torch.Tensor] | None = None):
        """colour: the receiver's per-dimension embedding mean and std (used with normalizer.recolour)."""
        super().__init__()
        if spec.normalizer.recolour and colour is None:
            raise ValueError("normalizer.recolour needs the receiver's embedding statistics")
        if colour is not None and spec.normalizer.recolour:
            target_mean, target_std = colour
            if target_mean.shape[-1] != sender_dim:  # widths differ: one value per statistic
                target_mean = target_mean.mean().expand(sender_dim).clone()
                target_std = target_std.mean().expand(sender_dim).clone()
            colour = (target_mean, target_std)
        else:
            colour = None
        self.normalizer = StatisticalNormalizer(mean, std, spec.normalizer.learnable, colour)
        r = spec.resampler
        self.resampler = PerceiverResampler(sender_dim, receiver_dim, spec.soft_tokens, r.dim, r.depth, r.heads,
                                            r.ffn_mult, spec.recurrent_steps)
        self.steps = spec.recurrent_steps
        self.vq = build_quantizer(spec, receiver_dim)
        scale = receiver_rms if spec.output.scale_init == "receiver_rms" else float(spec.output.scale_init)
        self.output = OutputScaling(spec.output.scaling, scale, spec.output.learnable_scale, receiver_dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """mask: True at real tokens. Returns soft tokens and auxiliary outputs: `raw` (the resampler's output
        before any quantizer and head) and, with a quantizer, `vq_loss`, `codes` and `quantized` (its statistics)."""
        context = self.resampler.proj_in(self.normalizer(states))
        pad_mask = ~mask
        produced, raws, vq_losses, codes, stats = [], [], [], [], []
        for step in range(self.steps):
            if produced:
                back = self.resampler.proj_back(torch.cat(produced, dim=1))
                ctx = torch.cat([context, back], dim=1)
                pads = torch.cat([pad_mask, pad_mask.new_zeros(back.shape[:2])], dim=1)
            else:
                ctx, pads = context, pad_mask
            raw = self.resampler.step(step, ctx, pads)
            raws.append(raw)
            if self.vq is not None:  # quantise the raw latents; the head is applied after
                quantized = self.vq(raw)
                raw = quantized.tokens
                vq_losses.append(quantized.loss), codes.append(quantized.codes), stats.append(quantized)
            produced.append(self.output(raw))
        aux: dict = {"raw": torch.cat(raws, dim=1)}
        if vq_losses:
            aux["vq_loss"] = torch.stack(vq_losses).mean()
            aux["codes"] = torch.cat(codes, dim=1)
            aux["quantized"] = stats
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
