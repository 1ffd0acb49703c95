"""Router logits -> per-layer routing statistics of one position.

transformers returns one tensor per MoE layer shaped (batch x sequence, experts), batch-major; the row
of a row's last position is `row * seq + seq - 1`.
"""

from __future__ import annotations

import math

import torch

from harness.models import check_finite


def last_position_logits(router_logits: tuple, batch: int, seq: int) -> list[torch.Tensor]:
    """Per layer, the (batch, experts) router logits of each row's last position."""
    return [layer.view(batch, seq, -1)[:, -1] for layer in router_logits]


def layer_stats(logits: torch.Tensor, model_name: str, layer: int) -> dict:
    """usage p = softmax(logits), normalised entropy H(p) / ln(E), top-1 minus top-2 margin, for one layer."""
    check_finite(logits, model_name, f"router.{layer}")
    p = torch.softmax(logits.float(), dim=-1)
    experts = p.shape[-1]
    entropy = float(-(p * torch.log(p.clamp_min(1e-30))).sum()) / math.log(experts)
    top2 = torch.topk(p, 2).values
    return {"usage": [round(float(v), 6) for v in p], "entropy": round(entropy, 6),
            "margin": round(float(top2[0] - top2[1]), 6)}
