"""Resource planning: what a spec's run needs (parameters, memory, tokens) before anything loads.

Each kind describes its workload in `harness/kinds/<kind>/plan.py` (`workload(spec, profile) -> Workload`);
this module turns that and the catalog's model shapes (`shape:` in models.yaml; tiny models are
measured from their config) into memory and token estimates. The estimates are deliberately
simple and stated: weights at the source's width (a quantised source keeps the embedding and the
LM head at the compute width, as bitsandbytes does), a KV cache for the longest forward, the
activations of one forward (and, for training, the activations a backward keeps, after Korthikanti
et al. 2022: s*b*h*(34 + 5*a*s/h) bytes per layer at 16 bits), plus optimizer state for what is trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.kinds.contract import Forward, Workload
from registry.catalog import HFSource, TinySource, model_entry

GIB = 2**30
GPU_SIZES_GIB = (24, 40, 80, 141)
USABLE_FRACTION = 0.9  # CUDA context, allocator fragmentation and workspace take the rest
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
QUANT_BYTES = {"none": None, "int8": 1.0, "nf4": 0.5 + 0.127 / 8 * 2}  # NF4 with double-quantised constants


@dataclass
class ModelSize:
    name: str
    parameters: int
    layers: int
    hidden: int
    vocab: int
    kv_heads: int
    head_dim: int
    compute_bytes: int  # bytes per activation / KV element
    weight_bytes: float
    width: str  # e.g. "bfloat16", "nf4 (bfloat16 compute)"


@dataclass
class ForwardPlan:
    forward: Forward
    kv_cache_bytes: float
    activation_bytes: float

    @property
    def bytes(self) -> float:
        return self.kv_cache_bytes + self.activation_bytes


@dataclass
class Plan:
    spec: str
    profile: str
    workload: Workload
    sizes: dict[str, ModelSize]
    forwards: list[ForwardPlan]
    optimizer_bytes: float

    def _peak(self, models: list[str]) -> float:
        weights = sum(self.sizes[m].weight_bytes for m in models)
        largest = max((f.bytes for f in self.forwards if f.forward.model in models), default=0.0)
        return weights + largest

    @property
    def total_bytes(self) -> float:
        """Peak memory: the weights loaded together, the largest forward, and the optimizer state."""
        if self.workload.one_at_a_time:
            peak = max(self._peak([m]) for m in self.workload.models)
        else:
            peak = self._peak(self.workload.models)
        return peak + self.optimizer_bytes

    def fits(self) -> list[int]:
        """The GPU sizes (GiB) whose usable memory holds the whole run."""
        return [g for g in GPU_SIZES_GIB if self.total_bytes <= g * GIB * USABLE_FRACTION]


def model_size(name: str, profile: str, dtype: str | None = None, quantization: str | None = None) -> ModelSize:
    """Parameters and weight bytes of a catalog model as the profile loads it (`dtype` and `quantization`
    override the catalog's, as a spec's fields do)."""
    entry = model_entry(name)
    source = entry.source(profile)
    layers, hidden = source.dims()
    if isinstance(source, TinySource):
        parameters, config = _tiny_shape(source)
        vocab = config.vocab_size
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    elif entry.shape is None:
        raise ValueError(f"model {name!r} has no `shape:` in registry/catalog/models.yaml, so it cannot be planned")
    else:
        parameters, vocab = entry.shape.parameters, entry.shape.vocab_size
        kv_heads, head_dim = entry.shape.kv_heads, entry.shape.head_dim
    compute = dtype or source.dtype
    compute_bytes = DTYPE_BYTES[compute]
    quantization = quantization or (source.quantization if isinstance(source, HFSource) else "none")
    width = compute if quantization == "none" else f"{quantization} ({compute} compute)"
    return ModelSize(name, parameters, layers, hidden, vocab, kv_heads, head_dim, compute_bytes,
                     weight_bytes(parameters, vocab, hidden, compute, quantization), width)


def weight_bytes(parameters: int, vocab: int, hidden: int, compute: str, quantization: str) -> float:
    """Bytes of the weights at the compute width, or quantised with the input embedding and the LM head kept at
    the compute width (as bitsandbytes does)."""
    if quantization == "none":
        return parameters * DTYPE_BYTES[compute]
    kept = vocab * hidden * 2
    return (parameters - kept) * QUANT_BYTES[quantization] + kept * DTYPE_BYTES[compute]


def _tiny_shape(source: TinySource) -> tuple[int, object]:
    """Parameter count and config of a tiny model, built on the meta device (no memory, no weights)."""
    import torch

    from harness.models.tiny import build_tiny_model

    with torch.device("meta"):
        model, _ = build_tiny_model(source.architecture, source.config, source.init_seed, torch.float32)
    return sum(p.numel() for p in model.parameters()), model.config


def forward_bytes(size: ModelSize, forward: Forward) -> ForwardPlan:
    b, s, h = forward.batch, forward.sequence, size.hidden
    kv = 2 * size.layers * size.kv_heads * size.head_dim * size.compute_bytes * b * s
    # one forward's live activations: a few hidden-size tensors per row and position, fp32 logits of one position
    activations = b * s * h * size.compute_bytes * 8 + b * size.vocab * 4
    if forward.trains:
        heads = max(1, h // size.head_dim)
        activations += size.layers * s * b * h * (34 + 5 * heads * s / h) * size.compute_bytes / 2
    return ForwardPlan(forward, kv, activations)


def plan_spec(spec, profile: str) -> Plan:
    from harness import kinds

    planner = kinds.planner(spec.kind)
    if planner is None:
        raise ValueError(f"kind {spec.kind!r} has no plan module (harness/kinds/{spec.kind}/plan.py)")
    work = planner.workload(spec, profile)
    dtype = getattr(spec, "dtype", None)
    quantization = getattr(spec, "quantization", None)
    sizes = {name: model_size(name, profile, dtype, quantization) for name in work.models}
    forwards = [forward_bytes(sizes[f.model], f) for f in work.forwards]
    optimizer = work.trainable_parameters * 16  # fp32 weights, gradients and two AdamW moments
    return Plan(spec.name, profile, work, sizes, forwards, optimizer)


def check_fits(plan: Plan, device) -> None:
    """Refuse, before any model loads, a run whose estimate exceeds what the device has free."""
    have = available_memory(device)
    if have is not None and plan.total_bytes > have:
        where = "free GPU memory" if device.type == "cuda" else "available memory"
        raise PlanError(f"{plan.spec} needs about {gib(plan.total_bytes)} ({plan.profile} profile; `harness plan "
                        f"specs/{plan.spec}.yaml --profile {plan.profile}` itemises it), the machine has "
                        f"{gib(have)} {where}; use a smaller batch_size, a quantised model or a larger machine")


class PlanError(RuntimeError):
    pass


def available_memory(device) -> float | None:
    """Bytes the run may use on `device` (free GPU memory, or the machine's available RAM)."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            info = dict(line.split(":", 1) for line in handle)
        return float(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.0f} MiB"


def human_count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def describe(plan: Plan) -> list[str]:
    """The plan as lines of text (what `harness plan` prints)."""
    lines = [f"{plan.spec} ({plan.profile} profile)"]
    for size in plan.sizes.values():
        lines.append(f"  {size.name}: {human_count(size.parameters)} parameters, weights {gib(size.weight_bytes)} "
                     f"at {size.width}")
    for f in plan.forwards:
        lines.append(f"  {f.forward.what} ({f.forward.model}): {f.forward.batch} x {f.forward.sequence} positions"
                     f"{', with backward' if f.forward.trains else ''}: KV cache {gib(f.kv_cache_bytes)}, "
                     f"activations {gib(f.activation_bytes)}")
    if plan.optimizer_bytes:
        lines.append(f"  trained: {human_count(plan.workload.trainable_parameters)} parameters, optimizer state "
                     f"{gib(plan.optimizer_bytes)}")
    fits = plan.fits()
    peak = "peak, one model at a time" if plan.workload.one_at_a_time and len(plan.sizes) > 1 else "peak"
    lines.append(f"  {peak}: about {gib(plan.total_bytes)}; fits a GPU of "
                 + (", ".join(map(str, fits)) + " GiB" if fits else f"none of {', '.join(map(str, GPU_SIZES_GIB))} GiB")
                 + f"; about {human_count(plan.workload.tokens)} token positions processed")
    lines += [f"  note: {n}" for n in plan.workload.notes]
    return lines


def estimated_tokens(text: str) -> int:
    """Token count of a text without a tokenizer: about 3.5 characters per token in English, rounded up."""
    return max(1, math.ceil(len(text) / 3.5))
