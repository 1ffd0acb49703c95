"""Hidden states of the frozen sender, computed once per (model, layer, texts) and cached on disk.

The forward pass stops right after the chosen block (later blocks and the LM head are never
run). Positions of special tokens (BOS) are dropped: their outsized norms would dominate the
normaliser's statistics and the resampler's attention.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from harness.fsutil import atomic_write_text, atomic_write_with
from harness.models import LoadedModel, check_finite


class _StopForward(Exception):
    pass


def _cache_key(lm: LoadedModel, layer: int, texts: list[str]) -> str:
    payload = json.dumps({"source": lm.source.model_dump(mode="json"), "dtype": str(lm.dtype), "layer": layer,
                          "texts": texts}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


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
    if path.is_file():
        data = load_file(str(path))
        if progress is not None:
            progress.update(len(texts))
        return list(torch.split(data["states"], data["lengths"].tolist()))
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
