"""The neural signal and its mapping to sampling parameters (definitions: registry/kinds/tre_sweep.py)."""

from __future__ import annotations

from typing import Callable

import torch

from registry.kinds.tre_sweep import Centres, Directions, Ranges


def standardise(values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (values.double() - mean) / std


def aggregate(z: torch.Tensor, how: str) -> torch.Tensor:
    """One number per row from (B, k) z-scores, over the finite ones only (NaN if none is)."""
    finite = torch.isfinite(z)
    values = torch.where(finite, z.abs() if how == "mean_abs_z" else z, torch.zeros_like(z))
    count = finite.sum(dim=-1)
    nan = torch.full(z.shape[:-1], float("nan"), dtype=values.dtype, device=z.device)
    return torch.where(count > 0, values.sum(dim=-1) / count.clamp_min(1), nan)


class EMA:
    """s_0 = x_0, s_t = alpha * x_t + (1 - alpha) * s_{t-1}; a NaN observation leaves s unchanged."""

    def __init__(self, alpha: float, rows: int):
        self.alpha = alpha
        self.state = torch.full((rows,), float("nan"), dtype=torch.float64)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double().cpu()
        blended = torch.where(torch.isnan(self.state), x, self.alpha * x + (1 - self.alpha) * self.state)
        self.state = torch.where(torch.isnan(x), self.state, blended)
        return self.state.clone()


# ----------------------------------------------------------------------------- mapping
def _sigmoid(signal: torch.Tensor, gain: float) -> torch.Tensor:
    return torch.sigmoid(gain * signal)


def _linear_clip(signal: torch.Tensor, gain: float) -> torch.Tensor:
    return (0.5 + gain * signal / 4).clamp(0.0, 1.0)


# A new mapping: a model in registry/kinds/tre_sweep.py (SignalMapping) and a function here.
MAPPINGS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "sigmoid": _sigmoid, "linear_clip": _linear_clip, "reconstructed": _sigmoid}


def unit_from_signal(mapping, signal: torch.Tensor) -> torch.Tensor:
    """u in [0, 1] per row; a row without any signal yet (NaN) counts as typical (s = 0)."""
    return MAPPINGS[mapping.name](torch.nan_to_num(signal.double(), nan=0.0), mapping.gain)


def _place(u: torch.Tensor, lo: float, hi: float, direction: str, centre: float | None = None) -> torch.Tensor:
    """lo + u (hi - lo) (direction up) or its mirror (down); with a centre, piecewise-linear through
    (0, lo), (0.5, centre), (1, hi) instead (the `reconstructed` mapping)."""
    v = u if direction == "up" else 1 - u
    if centre is None:
        value = lo + v * (hi - lo)
    else:
        value = torch.where(v <= 0.5, lo + 2 * v * (centre - lo), centre + (2 * v - 1) * (hi - centre))
    return value.clamp(lo, hi)


def params_from_unit(u: torch.Tensor, ranges: Ranges, directions: Directions,
                     centres: Centres | None = None) -> tuple[torch.Tensor, ...]:
    centre = (lambda name: getattr(centres, name)) if centres is not None else (lambda name: None)  # noqa: E731
    temperature = _place(u, ranges.temperature.lo, ranges.temperature.hi, directions.temperature, centre("temperature"))
    top_p = _place(u, ranges.top_p.lo, ranges.top_p.hi, directions.top_p, centre("top_p"))
    top_k = _place(u, ranges.top_k.lo, ranges.top_k.hi, directions.top_k, centre("top_k")).round().long()
    return temperature, top_p, top_k.clamp(ranges.top_k.lo, ranges.top_k.hi)


def random_params(uniforms: torch.Tensor, ranges: Ranges) -> tuple[torch.Tensor, ...]:
    """(B, 3) uniforms in [0, 1) -> temperature and top_p uniform in [lo, hi], top_k uniform on lo..hi."""
    u = uniforms.double()
    temperature = ranges.temperature.lo + u[:, 0] * (ranges.temperature.hi - ranges.temperature.lo)
    top_p = ranges.top_p.lo + u[:, 1] * (ranges.top_p.hi - ranges.top_p.lo)
    span = ranges.top_k.hi - ranges.top_k.lo + 1
    top_k = (ranges.top_k.lo + torch.floor(u[:, 2] * span)).long().clamp(max=ranges.top_k.hi)
    return temperature, top_p, top_k
