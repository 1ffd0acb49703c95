"""Maps from one model's states to another's width, and the alignment metrics.

A map is y = ((x - mu_x) / s_x) W s_y + mu_y. "No map" is W alone (no centring or scaling): the
identity on the shared leading dimensions (zero-padded or truncated) or a seeded random
semi-orthogonal matrix. Orthogonal Procrustes centres both sides, scales each by its root mean squared
norm, and takes W = U V^T from the SVD of X^T Y (semi-orthogonal when the widths differ); it then maps
into the target's centre and scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StateMap:
    weight: torch.Tensor  # (source width, target width)
    mu_x: torch.Tensor | float = 0.0
    s_x: float = 1.0
    mu_y: torch.Tensor | float = 0.0
    s_y: float = 1.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype)
        return ((x - self.mu_x) / self.s_x) @ w * self.s_y + self.mu_y


def pad_truncate(d_in: int, d_out: int) -> StateMap:
    return StateMap(torch.eye(d_in, d_out))


def random_semi_orthogonal(d_in: int, d_out: int, seed: int) -> StateMap:
    generator = torch.Generator().manual_seed(seed)
    g = torch.randn(max(d_in, d_out), min(d_in, d_out), generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(g)  # orthonormal columns
    w = q if d_in >= d_out else q.T
    return StateMap(w.float())


def _centre_scale(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    mu = z.mean(0)
    centred = z - mu
    scale = float(centred.pow(2).sum(1).mean().sqrt()) or 1.0
    return centred / scale, mu, scale


def procrustes(x: torch.Tensor, y: torch.Tensor) -> StateMap:
    """Orthogonal Procrustes on centred, norm-scaled pairs (rows of x and y are paired)."""
    xs, mu_x, s_x = _centre_scale(x.double())
    ys, mu_y, s_y = _centre_scale(y.double())
    u, _, vh = torch.linalg.svd(xs.T @ ys, full_matrices=False)
    return StateMap((u @ vh).float(), mu_x.float(), s_x, mu_y.float(), s_y)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) of paired rows; invariant to orthogonal maps and isotropic scaling."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (y.T @ x).pow(2).sum()
    return float(cross / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean())


def relative_mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """sum ||pred - target||^2 / sum ||target||^2 (0 is perfect; predicting zeros gives 1)."""
    return float((pred.double() - target.double()).pow(2).sum() / target.double().pow(2).sum())


def alignment_metrics(mapped: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Cosine and relative MSE as they are, and centred on the targets' mean (R^2 = 1 - the MSE relative to
    predicting that mean, and the cosine of the deviations), so a map that only adds the target's mean, which
    raw cosine rewards, scores 0 on the centred ones."""
    centre = y.double().mean(0)
    deviation = y.double() - centre
    r2 = 1 - float((mapped.double() - y.double()).pow(2).sum() / deviation.pow(2).sum())
    return {"cosine": cosine(mapped, y), "relative_mse": relative_mse(mapped, y), "r2": r2,
            "centred_cosine": cosine(mapped.double() - centre, deviation), "cka_before": linear_cka(x, y),
            "cka_after": linear_cka(mapped, y)}
