"""Activation capture with forward hooks, and the NaN/Inf check that names where it happened.

Points (names used as keys):
  "embed"              input of the first block (embeddings after any model-specific scaling)
  "block.<i>"          residual stream after block i (pre-final-norm for the last block)
  "final_norm.in/out"  input and output of the final norm
  "mlp.<i>"            output of block i's MLP (hidden size; MoE blocks included)
  "mlp_inner.<i>"      input of block i's MLP down projection (the neurons; dense MLPs only)
  "router.<i>"         router logits of block i (MoE only), shape (tokens, experts)

Note: transformers' `hidden_states[-1]` is the post-final-norm state, not the last block's
output; "block.<n-1>" here is the block output itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

import torch

from harness.models.anatomy import Anatomy


class NonFiniteActivationError(RuntimeError):
    """NaN or Inf found in an activation; the message names model, point and dtype."""


def _first_tensor(value):
    if torch.is_tensor(value):
        return value
    if isinstance(value, (tuple, list)) and value and torch.is_tensor(value[0]):
        return value[0]
    raise TypeError(f"expected a tensor or a tuple starting with one, got {type(value).__name__}")


def describe_point(point: str) -> str:
    kind, _, index = point.partition(".")
    return {
        "embed": "the embedding output (input of layer 0)",
        "block": f"the output of layer {index}",
        "final_norm": f"the final norm {index}put",
        "mlp": f"the MLP output of layer {index}",
        "mlp_inner": f"the MLP neurons of layer {index}",
        "router": f"the router logits of layer {index}",
        "logits": "the output logits",
        "probs": "the sampling probabilities",
    }.get(kind, point)


def check_finite(tensor: torch.Tensor, model_name: str, point: str) -> None:
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        kinds = "NaN" if torch.isnan(tensor).any() else "Inf"
        raise NonFiniteActivationError(
            f"{model_name}: {bad} non-finite ({kinds}) values in {describe_point(point)} (dtype {str(tensor.dtype).replace('torch.', '')})"
        )


class ActivationCapture:
    """Context manager that records chosen points on every forward call.

    `store[point]` is a list with one tensor per forward call (generation appends one per
    step). `on_capture(point, tensor)` is called as values arrive, for online consumers.
    """

    def __init__(
        self,
        model_name: str,
        anatomy: Anatomy,
        *,
        residual: bool = False,
        final_norm: bool = False,
        mlp_layers: Iterable[int] = (),
        mlp_inner_layers: Iterable[int] = (),
        router: bool = False,
        check: bool = True,
        keep: bool = True,
        on_capture: Callable[[str, torch.Tensor], None] | None = None,
    ):
        self.model_name = model_name
        self.anatomy = anatomy
        self.check = check
        self.keep = keep
        self.on_capture = on_capture
        self.store: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._plan: list[tuple[torch.nn.Module, str, Callable]] = []
        if residual:
            self._plan.append((anatomy.layers[0], "pre", self._input_hook("embed")))
            for i, layer in enumerate(anatomy.layers):
                self._plan.append((layer, "post", self._output_hook(f"block.{i}")))
        if final_norm:
            if anatomy.final_norm is None:
                raise ValueError(f"{model_name} has no final norm to capture")
            self._plan.append((anatomy.final_norm, "pre", self._input_hook("final_norm.in")))
            self._plan.append((anatomy.final_norm, "post", self._output_hook("final_norm.out")))
        for i in mlp_layers:
            i = anatomy.layer_index(i)
            self._plan.append((anatomy.mlp(i), "post", self._output_hook(f"mlp.{i}")))
        for i in mlp_inner_layers:
            i = anatomy.layer_index(i)
            self._plan.append((anatomy.mlp_down_projection(i), "pre", self._input_hook(f"mlp_inner.{i}")))
        if router:
            routers = [(i, anatomy.router(i)) for i in range(anatomy.n_layers)]
            if not any(r is not None for _, r in routers):
                raise ValueError(f"{model_name} is not a mixture-of-experts model: it has no router logits")
            for i, module in routers:
                if module is not None:
                    self._plan.append((module, "post", self._output_hook(f"router.{i}")))
        self._handles = []

    def _record(self, point: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach()
        if self.check:
            check_finite(tensor, self.model_name, point)
        if self.keep:
            self.store[point].append(tensor)
        if self.on_capture is not None:
            self.on_capture(point, tensor)

    def _input_hook(self, point: str):
        def hook(module, args, kwargs):
            value = args[0] if args else kwargs.get("hidden_states", kwargs.get("input"))
            self._record(point, _first_tensor(value))
        return hook

    def _output_hook(self, point: str):
        def hook(module, args, kwargs, output):
            self._record(point, _first_tensor(output))
        return hook

    def __enter__(self) -> "ActivationCapture":
        for module, when, hook in self._plan:
            if when == "pre":
                handle = module.register_forward_pre_hook(hook, with_kwargs=True)
            else:
                handle = module.register_forward_hook(hook, with_kwargs=True)
            self._handles.append(handle)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def get(self, point: str, call: int = -1) -> torch.Tensor:
        if point not in self.store:
            raise KeyError(f"{point!r} was not captured (captured: {', '.join(self.store) or 'nothing'})")
        return self.store[point][call]

    def residual_stream(self, call: int = -1) -> list[torch.Tensor]:
        """[input of block 0, output of block 0, ..., output of the last block]."""
        return [self.get("embed", call)] + [self.get(f"block.{i}", call) for i in range(self.anatomy.n_layers)]

    def clear(self) -> None:
        self.store.clear()
