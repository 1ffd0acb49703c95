"""Where the parts of a decoder live, for every architecture in the catalog.

transformers names them differently (model.layers / gpt_neox.layers / language_model.layers,
norm / final_layer_norm, down_proj / dense_4h_to_h, mlp.gate / block_sparse_moe.gate); this
module is the one place that knows.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_BACKBONES = ("model.language_model", "model", "gpt_neox", "transformer")
_LAYER_LISTS = ("layers", "h")
_FINAL_NORMS = ("norm", "final_layer_norm", "ln_f")
_DOWN_PROJECTIONS = ("down_proj", "dense_4h_to_h", "c_proj", "fc2")


def _get(root: nn.Module, dotted: str):
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


@dataclass
class Anatomy:
    layers: list[nn.Module]
    embed: nn.Module
    final_norm: nn.Module | None
    lm_head: nn.Module

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def layer_index(self, index: int) -> int:
        """Normalise a possibly negative layer index, or raise naming the valid range."""
        n = self.n_layers
        if not -n <= index < n:
            raise IndexError(f"layer {index} is out of range for a model with {n} layers (valid: {-n}..{n - 1})")
        return index % n

    def mlp(self, index: int) -> nn.Module:
        layer = self.layers[self.layer_index(index)]
        for attr in ("mlp", "block_sparse_moe", "feed_forward"):
            if hasattr(layer, attr):
                return getattr(layer, attr)
        raise AttributeError(f"layer {index} has no MLP module")

    def mlp_down_projection(self, index: int) -> nn.Module:
        mlp = self.mlp(index)
        for attr in _DOWN_PROJECTIONS:
            if isinstance(getattr(mlp, attr, None), nn.Module):
                return getattr(mlp, attr)
        raise AttributeError(f"layer {index}: the MLP ({type(mlp).__name__}) has no single down projection (MoE?)")

    def router(self, index: int) -> nn.Module | None:
        mlp = self.mlp(index)
        if hasattr(mlp, "experts") and hasattr(mlp, "gate"):
            return mlp.gate
        return None

    @property
    def is_moe(self) -> bool:
        return self.router(0) is not None


def find_anatomy(model: nn.Module) -> Anatomy:
    for path in _BACKBONES:
        backbone = _get(model, path)
        if backbone is None:
            continue
        layers = next((getattr(backbone, name) for name in _LAYER_LISTS if isinstance(getattr(backbone, name, None), nn.ModuleList)), None)
        if layers is None:
            continue
        final_norm = next((getattr(backbone, name) for name in _FINAL_NORMS if isinstance(getattr(backbone, name, None), nn.Module)), None)
        return Anatomy(list(layers), model.get_input_embeddings(), final_norm, model.get_output_embeddings())
    raise TypeError(f"cannot find the decoder layers of {type(model).__name__}")


def architecture_facts(model: nn.Module, anatomy: Anatomy) -> dict:
    """Numbers and names read off the config and modules (for tables and provenance)."""
    config = model.config
    return {
        "model_type": config.model_type,
        "class": type(model).__name__,
        "n_layers": anatomy.n_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "context_length": getattr(config, "max_position_embeddings", None),
        "rope_theta": rope_theta(config),
        "norm_type": norm_type(anatomy),
        "mlp_type": mlp_type(config, anatomy),
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }


def rope_theta(config) -> float | str | None:
    """RoPE base; models with per-attention-type bases (Gemma 3) give 'sliding/full'."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        if "rope_theta" in params:
            return float(params["rope_theta"])
        thetas = {k: v.get("rope_theta") for k, v in params.items() if isinstance(v, dict)}
        if thetas:
            return "/".join(f"{k.split('_')[0]} {v:g}" for k, v in thetas.items())
    theta = getattr(config, "rope_theta", None)
    return float(theta) if theta is not None else None


def norm_type(anatomy: Anatomy) -> str:
    name = type(anatomy.final_norm).__name__ if anatomy.final_norm is not None else ""
    if "RMSNorm" in name:
        return "RMSNorm"
    if "LayerNorm" in name or isinstance(anatomy.final_norm, nn.LayerNorm):
        return "LayerNorm"
    return name or "none"


def mlp_type(config, anatomy: Anatomy) -> str:
    act = (getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None) or "").lower()
    mlp = anatomy.mlp(0)
    gated = hasattr(mlp, "gate_proj") or hasattr(mlp, "experts")
    if "xielu" in act:
        base = "xIELU"
    elif act in ("silu", "swish"):
        base = "SwiGLU" if gated else "SiLU"
    elif act.startswith("gelu"):
        base = "GeGLU" if gated else "GELU"
    elif act == "relu2":
        base = "ReLU2"
    else:
        base = act or "unknown"
    return f"MoE {base}" if hasattr(mlp, "experts") else base
