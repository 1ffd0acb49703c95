"""Residual-stream states by layer (0 = embedding output, n = last block before the final norm), and
pairs of states of two models read off the same texts."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from harness.models import ActivationCapture, check_finite
from harness.models.lm import backbone, uses_bos


@dataclass
class Encoded:
    ids: list[int]
    ends: list[int]  # character offset where each token ends (-1 for BOS)


def encode(lm, text: str, add_bos: bool) -> Encoded:
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, ends = list(enc["input_ids"]), [int(end) for _, end in enc["offset_mapping"]]
    if add_bos and uses_bos(lm):
        ids, ends = [lm.tokenizer.bos_token_id] + ids, [-1] + ends
    return Encoded(ids, ends)


@torch.no_grad()
def layer_states(lm, ids: list[int], layers: list[int]) -> dict[int, torch.Tensor]:
    """{layer: (positions, width)} float32 states of one sequence; NaN/Inf is named with its layer."""
    with ActivationCapture(lm.name, lm.anatomy, residual=True) as cap:
        backbone(lm)(input_ids=torch.tensor([ids], device=lm.device))  # no LM head: only the stream is needed
    stream = cap.residual_stream()
    out = {}
    for layer in layers:
        state = stream[layer][0].float().cpu()
        check_finite(state, lm.name, "embed" if layer == 0 else f"block.{layer - 1}")
        out[layer] = state
    return out


def pair_positions(a: Encoded, b: Encoded) -> tuple[list[int], list[int]]:
    """Positions of tokens of `a` and `b` that end at the same character offset; where several tokens of one
    tokenizer end at the same offset (byte pieces of one character), the last, which has read the whole
    character, is paired. BOS is never paired."""
    last_a = {end: i for i, end in enumerate(a.ends) if end > 0}
    last_b = {end: j for j, end in enumerate(b.ends) if end > 0}
    shared = sorted(set(last_a) & set(last_b))
    return [last_a[end] for end in shared], [last_b[end] for end in shared]


def paired_states(a_lm, b_lm, texts: list[str], a_layers: list[int], b_layers: list[int], pairing: str,
                  add_bos: bool, bar=None, per_text: int | None = None, seed: int = 0) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], list[int]]:
    """States of both models on the same texts, paired by `pairing`; also the text index of every pair."""
    a_out: dict[int, list] = {layer: [] for layer in a_layers}
    b_out: dict[int, list] = {layer: [] for layer in b_layers}
    owner: list[int] = []
    for t, text in enumerate(texts):
        ea, eb = encode(a_lm, text, add_bos), encode(b_lm, text, add_bos)
        sa, sb = layer_states(a_lm, ea.ids, a_layers), layer_states(b_lm, eb.ids, b_layers)
        if pairing == "mean_pooled":
            keep_a = [i for i, e in enumerate(ea.ends) if e > 0]
            keep_b = [j for j, e in enumerate(eb.ends) if e > 0]
            if not keep_a or not keep_b:
                continue
            for layer in a_layers:
                a_out[layer].append(sa[layer][keep_a].mean(0, keepdim=True))
            for layer in b_layers:
                b_out[layer].append(sb[layer][keep_b].mean(0, keepdim=True))
            owner.append(t)
        else:
            pa, pb = pair_positions(ea, eb)
            if per_text is not None and len(pa) > per_text:
                keep = sorted(random.Random(f"{seed}:{t}").sample(range(len(pa)), per_text))
                pa, pb = [pa[k] for k in keep], [pb[k] for k in keep]
            for layer in a_layers:
                a_out[layer].append(sa[layer][pa])
            for layer in b_layers:
                b_out[layer].append(sb[layer][pb])
            owner += [t] * len(pa)
        if bar is not None:
            bar.update(1)
    return ({k: torch.cat(v) for k, v in a_out.items()}, {k: torch.cat(v) for k, v in b_out.items()}, owner)
