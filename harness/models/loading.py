"""Load a catalog model for a profile: hub, GGUF wheel or tiny, behind one function."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from registry.catalog import GGUFWheelSource, HFSource, ModelEntry, TinySource, model_entry
from harness.models.anatomy import Anatomy, architecture_facts, find_anatomy
from harness.models.gguf_wheel import ModelFetchError, load_gguf_wheel
from harness.models.tiny import build_tiny_model

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str
    entry: ModelEntry
    source: object
    model: torch.nn.Module
    tokenizer: object
    anatomy: Anatomy
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    load_info: dict = field(default_factory=dict)

    @property
    def facts(self) -> dict:
        return architecture_facts(self.model, self.anatomy)

    def provenance(self) -> dict:
        return {
            "name": self.name,
            "display_name": self.entry.display_name,
            "source": self.source.model_dump(mode="json"),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "load_seconds": round(self.load_seconds, 3),
            **self.load_info,
        }


class DeviceUnavailable(RuntimeError):
    pass


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda was asked for but no CUDA device is available (use --device cpu or auto)")
    return device


def _bitsandbytes_config(quantization: str, compute_dtype: torch.dtype):
    """bitsandbytes settings (CUDA or CPU; bitsandbytes >= 0.50 runs both on the CPU): int8 is LLM.int8()
    (matmul inputs cast to float16), nf4 is 4-bit NormalFloat with double quantisation computing in `compute_dtype`."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelFetchError(f"{quantization} quantization needs bitsandbytes: pip install 'bitsandbytes>=0.50'") from None
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=True)
    return BitsAndBytesConfig(load_in_8bit=True)


def _quantized_kwargs(quantization: str, dtype: torch.dtype, device: torch.device) -> dict:
    if quantization == "none":
        return {}
    return {"quantization_config": _bitsandbytes_config(quantization, dtype),
            "device_map": {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}}


def _load_hf(source: HFSource, dtype: torch.dtype, device: torch.device, quantization: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"revision": source.revision, "dtype": dtype, **_quantized_kwargs(quantization, dtype, device)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.repo_id, revision=source.revision)
        model = AutoModelForCausalLM.from_pretrained(source.repo_id, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFetchError(f"could not load {source.repo_id!r} (revision {source.revision}): {first}") from None
    if quantization == "none":
        model = model.to(device)
    return model.eval(), tokenizer, {"revision": source.revision}


def _quantize_in_memory(model, dtype: torch.dtype, device: torch.device, quantization: str):
    """A model built in memory (tiny) reloaded through bitsandbytes, as a hub or GGUF model would be."""
    import tempfile

    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **_quantized_kwargs(quantization, dtype, device))


CPU_NF4_BLOCK = 32  # bitsandbytes' CPU 4-bit kernel packs output rows in blocks of 32


def _check_cpu_nf4_widths(name: str, model) -> None:
    """Fail at load, naming the layer, where bitsandbytes' CPU NF4 kernel would fail at the first forward."""
    for module_name, module in model.named_modules():
        out = getattr(module, "out_features", None)
        if type(module).__name__ == "Linear4bit" and out % CPU_NF4_BLOCK:
            raise ModelFetchError(f"{name}: nf4 on the CPU needs every quantised layer's output width to be a multiple "
                                  f"of {CPU_NF4_BLOCK}; {module_name} has {out} (use int8, or a CUDA device)")


def load_model(name: str, profile: str, *, cache_dir: Path, device: torch.device, dtype: str | None = None,
               quantization: str | None = None) -> LoadedModel:
    """Load logical model `name` as the catalog defines it for `profile`; `dtype` and `quantization`
    (none, int8, nf4) override the catalog's."""
    entry = model_entry(name)
    source = entry.source(profile)
    torch_dtype = getattr(torch, dtype or source.dtype)
    quant = quantization or (source.quantization if isinstance(source, HFSource) else "none")
    start = time.perf_counter()
    if isinstance(source, TinySource):
        model, tokenizer = build_tiny_model(source.architecture, source.config, source.init_seed, torch_dtype)
        model, info = (model.to(device) if quant == "none" else _quantize_in_memory(model, torch_dtype, device, quant)), {}
    elif isinstance(source, GGUFWheelSource):
        model, tokenizer, info = load_gguf_wheel(source, cache_dir, torch_dtype, _quantized_kwargs(quant, torch_dtype, device))
        model = model.to(device) if quant == "none" else model
    elif isinstance(source, HFSource):
        model, tokenizer, info = _load_hf(source, torch_dtype, device, quant)
    else:  # pragma: no cover - the catalog union has no other member
        raise TypeError(f"unsupported source {type(source).__name__}")
    if quant != "none":
        info = {**info, "quantization": quant}
        if quant == "nf4" and device.type == "cpu":
            _check_cpu_nf4_widths(name, model)
    for param in model.parameters():
        param.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    elapsed = time.perf_counter() - start
    anatomy = find_anatomy(model)
    loaded_dims = (anatomy.n_layers, model.config.hidden_size)
    if loaded_dims != source.dims():
        raise ModelFetchError(f"{name}: the loaded model has {loaded_dims[0]} layers and hidden size {loaded_dims[1]}, "
                              f"the catalog says {source.dims()[0]} and {source.dims()[1]}")
    log.info("loaded %s (%s) in %.1fs", name, source.type, elapsed)
    return LoadedModel(name, entry, source, model, tokenizer, anatomy, device, torch_dtype, elapsed, info)


class ModelProvider:
    """Loads models on first use and keeps them for the rest of the run."""

    def __init__(self, profile: str, cache_dir: Path, device: torch.device):
        self.profile = profile
        self.cache_dir = Path(cache_dir)
        self.device = device
        self._loaded: dict[tuple[str, str | None, str | None], LoadedModel] = {}
        self.provenance: dict[str, dict] = {}

    def get(self, name: str, dtype: str | None = None, quantization: str | None = None) -> LoadedModel:
        key = (name, dtype, quantization)
        if key not in self._loaded:
            loaded = load_model(name, self.profile, cache_dir=self.cache_dir, device=self.device, dtype=dtype,
                                quantization=quantization)
            self._loaded[key] = loaded
            self.provenance[name] = loaded.provenance()
        return self._loaded[key]

    def release(self, name: str) -> None:
        for key in [k for k in self._loaded if k[0] == name]:
            del self._loaded[key]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
