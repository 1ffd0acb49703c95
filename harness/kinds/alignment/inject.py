"""Generation with injected states, and the automatic scores of a generation.

The target runs on as many positions as the injected states have, with zero input embeddings; a
forward pre-hook on block L (the final norm when L is the last layer) swaps the stream entering it for
the injected states on that first call only, so the prefix's cache above L holds the injected states'
keys and values; the target then decodes greedily from there. L = 0 feeds the states as the input
embeddings themselves.
"""

from __future__ import annotations

import math

import torch
from transformers import DynamicCache

from harness.models import check_finite
from harness.models.lm import with_cache


def _replacement_hook(states: torch.Tensor):
    armed = {"on": True}

    def hook(module, args, kwargs):
        if not armed["on"]:
            return None
        armed["on"] = False
        value = args[0] if args else kwargs["hidden_states"]
        new = states.to(value.dtype).to(value.device).reshape(value.shape)
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}
    return hook


def _injection_point(lm, layer: int):
    if layer < lm.anatomy.n_layers:
        return lm.anatomy.layers[layer]
    if lm.anatomy.final_norm is None:
        raise ValueError(f"{lm.name}: injecting at layer {layer} (after the last block) needs a final norm")
    return lm.anatomy.final_norm


@torch.no_grad()
def greedy(lm, max_new_tokens: int, *, prompt_ids: list[int] | None = None, states: torch.Tensor | None = None,
           layer: int = 0) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens after a native prompt or after injected `states` (positions x width) at `layer`;
    also the log-probabilities of the first generated position."""
    cache = DynamicCache()
    device = lm.device
    if states is not None:
        n = states.shape[0]
        embeds = states if layer == 0 else torch.zeros(n, lm.model.config.hidden_size)
        handle = None if layer == 0 else _injection_point(lm, layer).register_forward_pre_hook(
            _replacement_hook(states[None]), with_kwargs=True)
        try:
            out = lm.model(inputs_embeds=embeds[None].to(lm.dtype).to(device), position_ids=torch.arange(n, device=device)[None],
                           **with_cache(cache), use_cache=True)
        finally:
            if handle is not None:
                handle.remove()
    else:
        n = len(prompt_ids)
        out = lm.model(input_ids=torch.tensor([prompt_ids], device=device), position_ids=torch.arange(n, device=device)[None],
                       **with_cache(cache), use_cache=True)
    logits = out.logits[0, -1].float()
    check_finite(logits, lm.name, "logits")
    first = torch.log_softmax(logits, -1).cpu()
    stop = {lm.tokenizer.eos_token_id} - {None}
    tokens: list[int] = []
    for i in range(max_new_tokens):
        token = int(logits.argmax())
        tokens.append(token)
        if token in stop or i == max_new_tokens - 1:
            break
        out = lm.model(input_ids=torch.tensor([[token]], device=device), position_ids=torch.tensor([[n + i]], device=device),
                       **with_cache(cache), use_cache=True)
        logits = out.logits[0, -1].float()
        check_finite(logits, lm.name, "logits")
    return tokens, first


@torch.no_grad()
def continuation_nll(lm, prompt_ids: list[int], continuation: list[int]) -> float | None:
    """Mean negative log-likelihood (nats per token) of `continuation` after the native prompt."""
    if not continuation:
        return None
    ids = torch.tensor([prompt_ids + continuation], device=lm.device)
    logits = lm.model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    check_finite(logits, lm.name, "logits")
    logp = torch.log_softmax(logits, -1)
    return float(-logp.gather(1, ids[0, len(prompt_ids):, None]).mean())


def repetition_rate(tokens: list[int]) -> float:
    """Share of tokens (from the second) whose bigram with the previous token occurred earlier."""
    if len(tokens) < 2:
        return 0.0
    seen, repeats = set(), 0
    for pair in zip(tokens, tokens[1:]):
        repeats += pair in seen
        seen.add(pair)
    return repeats / (len(tokens) - 1)


def distinct_2(tokens: list[int]) -> float | None:
    pairs = list(zip(tokens, tokens[1:]))
    return len(set(pairs)) / len(pairs) if pairs else None


def kl(p_log: torch.Tensor, q_log: torch.Tensor) -> float:
    """KL(p || q) in nats from log-probabilities over the same vocabulary."""
    value = float((p_log.exp() * (p_log - q_log)).sum())
    return value if math.isfinite(value) else float("inf")
