"""A frozen causal LM's parts: decoder stack, input embeddings, LM head, tokenizer conventions, context.

Cached decoding on embeddings (prefixes, batches, greedy generation, label scoring) is in
`harness.models.decoding`.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from harness.models.loading import LoadedModel


def _cache_argument() -> str:
    """transformers 5.x renamed the models' `past_key_values` argument (and output field) to `cache`; the old name
    still works with a warning until 5.40. Use whichever this installation's models declare."""
    from dataclasses import fields

    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" if "cache" in {f.name for f in fields(BaseModelOutputWithPast)} else "past_key_values"


CACHE_ARGUMENT = _cache_argument()


def with_cache(cache) -> dict:
    """The keyword that hands a KV cache to a model's forward pass."""
    return {CACHE_ARGUMENT: cache}


def output_cache(out):
    """The KV cache a forward pass returned."""
    return getattr(out, CACHE_ARGUMENT)


def backbone(lm: LoadedModel) -> nn.Module:
    """The decoder stack without the LM head (returns final-norm hidden states)."""
    model = lm.model
    for attr in ("model", "gpt_neox", "transformer"):
        if isinstance(getattr(model, attr, None), nn.Module):
            return getattr(model, attr)
    raise TypeError(f"cannot find the decoder stack of {type(model).__name__}")


def embed(lm: LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """Input embeddings as the model's embedding module returns them (Gemma 3 scales inside it)."""
    return lm.model.get_input_embeddings()(ids.to(lm.device))


def lm_logits(lm: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """LM head (and final logit soft-capping where the architecture has it) on chosen positions only."""
    logits = lm.anatomy.lm_head(hidden)
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


def tokenize(lm: LoadedModel, text: str, bos: bool = False) -> list[int]:
    """Token ids of `text`, with the tokenizer's BOS first if `bos` and the model uses one."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if bos and uses_bos(lm):
        ids = [lm.tokenizer.bos_token_id] + ids
    return ids


def uses_bos(lm: LoadedModel) -> bool:
    """Whether the model's tokenizer starts sequences with BOS (SmolLM2's does not)."""
    probe = lm.tokenizer("a")["input_ids"]
    return lm.tokenizer.bos_token_id is not None and probe[:1] == [lm.tokenizer.bos_token_id]


def context_length(lm: LoadedModel) -> int | None:
    return getattr(lm.model.config, "max_position_embeddings", None)


def warn_if_beyond_context(lm: LoadedModel, length: int) -> None:
    """Positions past the model's trained context run without error but are out of distribution: say so once."""
    limit = context_length(lm)
    if limit is not None and length > limit and not getattr(lm, "_warned_context", False):
        warnings.warn(f"{lm.name}: a prompt of {length} positions exceeds the model's context of {limit}", stacklevel=3)
        lm._warned_context = True
