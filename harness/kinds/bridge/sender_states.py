"""Hidden states of the frozen sender, computed once per (model, layer, texts) and cached on disk.

The forward pass stops right after the chosen block (later blocks and the LM head are never
run). Positions of special tokens (BOS) are dropped: their outsized norms would dominate the
normaliser's statistics and the resampler's attention.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file

from harness.codegraph import code_digest
from harness.fsutil import atomic_write_text, atomic_write_with
from harness.models import LoadedModel, check_finite


class _StopForward(Exception):
    pass


def _cache_key(lm: LoadedModel, layer: int, texts: list[str]) -> str:
    """Everything the states depend on: the weights' source, dtype, layer, texts, the code computing them
    (this module's import closure) and the library that runs the model."""
    payload = json.dumps({"source": lm.source.model_dump(mode="json"), "dtype": str(lm.dtype), "layer": layer,
                          "texts": texts, "code": code_digest((__name__,)),
                          "versions": [torch.__version__, transformers.__version__]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_cached(path: Path, n_texts: int) -> list[torch.Tensor] | None:
    """The cached states, or None (and the entry deleted, with a warning naming it) if it is unreadable."""
    try:
        data = load_file(str(path))
        lengths = data["lengths"].tolist()
        if len(lengths) != n_texts or sum(lengths) != data["states"].shape[0]:
            raise ValueError(f"it holds {len(lengths)} texts, {n_texts} expected")
        return list(torch.split(data["states"], lengths))
    except Exception as exc:  # truncated or foreign file
        warnings.warn(f"discarded a corrupt sender-state cache entry {path} ({type(exc).__name__}: {exc}); recomputing",
                      stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def compute_sender_states(lm: LoadedModel, texts: list[str], layer: int, batch_size: int = 16,
                          progress=None) -> list[torch.Tensor]:
    """(T_i, d) float32 states of block `layer`'s output for each text (special tokens removed)."""
    index = lm.anatomy.layer_index(layer)
    captured = {}

    def hook(module, args, output):
        captured["states"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    special = set(lm.tokenizer.all_special_ids)
    # batches of similar length waste little on padding; results go back in input order
    lengths = [len(ids) for ids in lm.tokenizer(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    states: list[torch.Tensor | None] = [None] * len(texts)
    handle = lm.anatomy.layers[index].register_forward_hook(hook)
    lm.tokenizer.padding_side = "right"
    try:
        for start in range(0, len(texts), batch_size):
            picked = order[start:start + batch_size]
            enc = lm.tokenizer([texts[i] for i in picked], return_tensors="pt", padding=True).to(lm.device)
            try:
                with torch.no_grad():
                    lm.model(**enc, use_cache=False)
            except _StopForward:
                pass
            hidden = captured.pop("states")
            check_finite(hidden, lm.name, f"block.{index}")
            for i, row, ids, mask in zip(picked, hidden, enc["input_ids"], enc["attention_mask"]):
                real = mask.bool()
                keep = real & torch.tensor([int(t) not in special for t in ids], device=ids.device)
                states[i] = row[keep if keep.any() else real].float().cpu()  # a text of only specials keeps them
            if progress is not None:
                progress.update(len(picked))
    finally:
        handle.remove()
    return states


def sender_states(lm: LoadedModel, texts: list[str], layer: int, cache_dir: Path, batch_size: int = 16,
                  progress=None) -> list[torch.Tensor]:
    """compute_sender_states, read from / written to `<cache_dir>/sender_states/` by content hash."""
    index = lm.anatomy.layer_index(layer)
    key = _cache_key(lm, index, texts)
    path = Path(cache_dir) / "sender_states" / f"{key[:32]}.safetensors"
    cached = _read_cached(path, len(texts)) if path.is_file() else None
    if cached is not None:
        if progress is not None:
            progress.update(len(texts))
        return cached
    states = compute_sender_states(lm, texts, index, batch_size, progress)
    data = {"states": torch.cat(states), "lengths": torch.tensor([len(s) for s in states])}
    atomic_write_with(path, lambda tmp: save_file(data, str(tmp)))
    atomic_write_text(path.with_suffix(".json"), json.dumps({"model": lm.name, "layer": index, "n_texts": len(texts)}))
    return states


def pad_states(states: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (T_i, d) states into (B, T, d) with a True-at-real-token mask."""
    width = max(s.shape[0] for s in states)
    out = states[0].new_zeros(len(states), width, states[0].shape[-1])
    mask = torch.zeros(len(states), width, dtype=torch.bool)
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out.to(device), mask.to(device)
