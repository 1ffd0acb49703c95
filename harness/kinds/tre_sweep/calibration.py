"""Calibration of the TRE controller: which units to read and what "typical" looks like.

The calibration texts go through the model once (batched, left-padded, each cut to its first
`max_tokens` tokens). At the chosen layer and point, every unit's variance is taken over all
token positions that are neither padding nor special tokens (BOS and chat markers carry
outsized activations in many models). The `top_k` units with the highest variance are kept with
their mean and std, and the aggregated signal over the same positions gives the signal's own
mean and std, against which generation-time signals are standardised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from harness.kinds.tre_sweep.generation import tokenize_left_padded
from harness.models import ActivationCapture, NonFiniteActivationError
from harness.kinds.tre_sweep.signal import aggregate, standardise
from registry.errors import SpecError


@dataclass
class NeuronCalibration:
    model: str
    layer: int
    n_layers: int
    point_kind: str  # "mlp_output" or "mlp_neurons"
    width: int
    dtype: str
    neurons: list[int]
    mean: list[float]
    std: list[float]
    variance: list[float]
    signal_mean: float
    signal_std: float
    n_tokens: int
    nonfinite_values: int  # NaN/Inf activation values seen (mask policy; 0 otherwise)
    top5_variance_raw: list[float | None]  # NaN-propagating variances, as a plain var().topk(5) reports them

    def as_record(self) -> dict:
        return {"record": "calibration", **asdict(self)}


def capture_kwargs(point_kind: str, layer: int) -> dict:
    return {"mlp_layers": [layer]} if point_kind == "mlp_output" else {"mlp_inner_layers": [layer]}


def point_name(point_kind: str, layer: int) -> str:
    return f"mlp.{layer}" if point_kind == "mlp_output" else f"mlp_inner.{layer}"


def _collect(lm, model_name: str, texts: list[str], *, add_special_tokens: bool, max_tokens: int, layer: int,
             point_kind: str, batch_size: int, check_finite: bool) -> torch.Tensor:
    """(tokens, width) float64 activations at the valid positions of every calibration text."""
    special = torch.tensor(sorted(set(lm.tokenizer.all_special_ids)), dtype=torch.long)
    point = point_name(point_kind, layer)
    rows = []
    for start in range(0, len(texts), batch_size):
        enc = tokenize_left_padded(lm.tokenizer, texts[start:start + batch_size], add_special_tokens=add_special_tokens,
                                   max_length=max_tokens)
        valid = enc["attention_mask"].bool() & ~torch.isin(enc["input_ids"], special)
        enc = enc.to(lm.device)
        with torch.no_grad(), ActivationCapture(model_name, lm.anatomy, check=check_finite,
                                                **capture_kwargs(point_kind, layer)) as cap:
            lm.model(**enc, logits_to_keep=1)
        acts = cap.get(point)
        if acts.dim() == 2:  # some MoE blocks return (tokens, width)
            acts = acts.view(valid.shape[0], valid.shape[1], -1)
        rows.append(acts.detach().cpu()[valid].double())
    return torch.cat(rows)


def _masked_moments(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit mean and variance (n - 1) over finite values; NaN where fewer than two are finite."""
    finite = torch.isfinite(acts)
    count = finite.sum(dim=0)
    zeroed = torch.where(finite, acts, torch.zeros_like(acts))
    mean = zeroed.sum(dim=0) / count.clamp_min(1)
    centred = torch.where(finite, acts - mean, torch.zeros_like(acts))
    var = (centred ** 2).sum(dim=0) / (count - 1).clamp_min(1)
    nan = torch.full_like(var, float("nan"))
    return torch.where(count > 0, mean, nan), torch.where(count > 1, var, nan)


def calibrate(lm, model_name: str, texts: list[str], *, add_special_tokens: bool, max_tokens: int, layer: int,
              point_kind: str, top_k: int, aggregate_how: str, batch_size: int, nan_policy: str) -> NeuronCalibration:
    """Under the mask policy, units without a finite variance are skipped; if fewer than `top_k` remain,
    the controller runs on those (possibly none: its signal then stays at 0, 'typical')."""
    dtype = str(lm.dtype).replace("torch.", "")
    try:
        acts = _collect(lm, model_name, texts, add_special_tokens=add_special_tokens, max_tokens=max_tokens,
                        layer=layer, point_kind=point_kind, batch_size=batch_size, check_finite=nan_policy == "error")
    except NonFiniteActivationError as exc:
        raise NonFiniteActivationError(f"{exc}, during calibration") from None
    n_tokens, width = acts.shape
    if n_tokens < 2:
        raise SpecError(f"{model_name}: the calibration texts give {n_tokens} usable token(s); at least two are needed",
                        field="calibration")
    if top_k > width:
        raise SpecError(f"{top_k} units asked for, but {point_kind} of layer {layer} of {model_name} has {width}",
                        field="top_k_neurons")
    raw_top5 = acts.var(dim=0).topk(min(5, width)).values
    mean, var = _masked_moments(acts)
    n_finite = int(torch.isfinite(var).sum())
    if n_finite < top_k and nan_policy == "error":
        raise NonFiniteActivationError(
            f"{model_name}: only {n_finite} of {width} units of the {point_kind.replace('_', ' ')} of "
            f"layer {layer} have a finite calibration variance (dtype {dtype}); {top_k} are needed")
    ranked = torch.where(torch.isfinite(var), var, torch.full_like(var, float("-inf")))
    neurons = ranked.topk(min(top_k, n_finite)).indices
    std = var[neurons].sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    signal = aggregate(standardise(acts[:, neurons], mean[neurons], std), aggregate_how)
    signal = signal[torch.isfinite(signal)]
    signal_mean = float(signal.mean()) if signal.numel() else 0.0
    signal_std = float(signal.std()) if signal.numel() > 1 else 1.0
    return NeuronCalibration(
        model=model_name, layer=layer, n_layers=lm.anatomy.n_layers, point_kind=point_kind, width=width, dtype=dtype,
        neurons=neurons.tolist(), mean=mean[neurons].tolist(), std=std.tolist(), variance=var[neurons].tolist(),
        signal_mean=signal_mean, signal_std=signal_std if signal_std > 0 else 1.0, n_tokens=n_tokens,
        nonfinite_values=int((~torch.isfinite(acts)).sum()),
        top5_variance_raw=[float(v) if torch.isfinite(v) else None for v in raw_top5],
    )
