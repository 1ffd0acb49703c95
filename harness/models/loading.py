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
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=True)
    return BitsAndBytesConfig(load_in_8bit=True)


def _load_hf(source: HFSource, dtype: torch.dtype, device: torch.device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"revision": source.revision, "dtype": dtype}
    if source.quantization != "none":
        if device.type != "cuda":
            raise ModelFetchError(f"{source.repo_id}: {source.quantization} quantization needs a CUDA device (bitsandbytes)")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ModelFetchError(f"{source.repo_id}: {source.quantization} needs bitsandbytes: pip install -e '.[paper]'") from None
        kwargs["quantization_config"] = _bitsandbytes_config(source.quantization, dtype)
        kwargs["device_map"] = {"": device.index or 0}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.repo_id, revision=source.revision)
        model = AutoModelForCausalLM.from_pretrained(source.repo_id, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFetchError(f"could not load {source.repo_id!r} (revision {source.revision}): {first}") from None
    if source.quantization == "none":
        model = model.to(device)
    return model.eval(), tokenizer, {"revision": source.revision}


def load_model(name: str, profile: str, *, cache_dir: Path, device: torch.device, dtype: str | None = None) -> LoadedModel:
    """Load logical model `name` as the catalog defines it for `profile`."""
    entry = model_entry(name)
    source = entry.source(profile)
    torch_dtype = getattr(torch, dtype or source.dtype)
    start = time.perf_counter()
    if isinstance(source, TinySource):
        model, tokenizer = build_tiny_model(source.architecture, source.config, source.init_seed, torch_dtype)
        model, info = model.to(device), {}
    elif isinstance(source, GGUFWheelSource):
        model, tokenizer, info = load_gguf_wheel(source, cache_dir, torch_dtype)
        model = model.to(device)
    elif isinstance(source, HFSource):
        model, tokenizer, info = _load_hf(source, torch_dtype, device)
    else:  # pragma: no cover - the catalog union has no other member
        raise TypeError(f"unsupported source {type(source).__name__}")
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
        self._loaded: dict[tuple[str, str | None], LoadedModel] = {}
        self.provenance: dict[str, dict] = {}

    def get(self, name: str, dtype: str | None = None) -> LoadedModel:
        key = (name, dtype)
        if key not in self._loaded:
            loaded = load_model(name, self.profile, cache_dir=self.cache_dir, device=self.device, dtype=dtype)
            self._loaded[key] = loaded
            self.provenance[name] = loaded.provenance()
        return self._loaded[key]

    def release(self, name: str) -> None:
        for key in [k for k in self._loaded if k[0] == name]:
            del self._loaded[key]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
