"""Per-token sampling parameters for the three TRE conditions (definitions: registry/kinds/tre_sweep.py).

Every controller answers `step(t)` with one temperature, top-p and top-k per row. The neural
controller reads the calibrated units from a forward hook on the chosen layer; the random one
draws from its own per-row streams; the baseline one returns its constants.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from harness.models import ActivationCapture
from harness.kinds.tre_sweep.calibration import NeuronCalibration, capture_kwargs
from harness.kinds.tre_sweep.signal import EMA, aggregate, params_from_unit, random_params, standardise, unit_from_signal
from registry.kinds.tre_sweep import FixedParams, Ranges


@dataclass
class StepParams:
    temperature: torch.Tensor  # (B,) float
    top_p: torch.Tensor  # (B,) float
    top_k: torch.Tensor  # (B,) long
    signal_raw: torch.Tensor | None = None  # (B,) standardised signal before smoothing (NaN: no finite unit)
    signal: torch.Tensor | None = None  # (B,) after the EMA


class BaselineController:
    def __init__(self, params: FixedParams, rows: int):
        self.params = params
        self.rows = rows

    def attached(self):
        return contextlib.nullcontext()

    def step(self, t: int) -> StepParams:
        full = lambda v, dtype: torch.full((self.rows,), v, dtype=dtype)  # noqa: E731
        return StepParams(full(self.params.temperature, torch.float64), full(self.params.top_p, torch.float64),
                          full(self.params.top_k, torch.long))


class RandomController:
    def __init__(self, ranges: Ranges, uniforms: torch.Tensor):
        self.ranges = ranges
        self.uniforms = uniforms  # (B, T, 3), one private stream per row

    def attached(self):
        return contextlib.nullcontext()

    def step(self, t: int) -> StepParams:
        return StepParams(*random_params(self.uniforms[:, t], self.ranges))


class NeuralController:
    """Reads the calibrated units at the last position of each row after every forward pass."""

    def __init__(self, model_name: str, anatomy, calibration: NeuronCalibration, *, aggregate_how: str,
                 ema_alpha: float, mapping, ranges: Ranges, rows: int, check_finite: bool):
        self.model_name = model_name
        self.anatomy = anatomy
        self.calibration = calibration
        self.aggregate_how = aggregate_how
        self.mapping = mapping
        self.ranges = ranges
        self.check_finite = check_finite
        self.ema = EMA(ema_alpha, rows)
        self._neurons = torch.tensor(calibration.neurons, dtype=torch.long)
        self._mean = torch.tensor(calibration.mean, dtype=torch.float64)
        self._std = torch.tensor(calibration.std, dtype=torch.float64)
        self._latest: torch.Tensor | None = None

    def _on_capture(self, point: str, tensor: torch.Tensor) -> None:
        self._latest = tensor[:, -1, :].index_select(-1, self._neurons.to(tensor.device)).double().cpu()

    def attached(self):
        return ActivationCapture(self.model_name, self.anatomy, keep=False, check=self.check_finite,
                                 on_capture=self._on_capture,
                                 **capture_kwargs(self.calibration.point_kind, self.calibration.layer))

    def step(self, t: int) -> StepParams:
        if self._latest is None:
            raise RuntimeError("the neural controller was stepped before a forward pass reached its layer")
        z = standardise(self._latest, self._mean, self._std)
        raw = (aggregate(z, self.aggregate_how) - self.calibration.signal_mean) / self.calibration.signal_std
        smooth = self.ema.update(raw)
        temperature, top_p, top_k = params_from_unit(unit_from_signal(self.mapping, smooth), self.ranges,
                                                     self.mapping.directions, getattr(self.mapping, "centres", None))
        return StepParams(temperature, top_p, top_k, raw, smooth)
