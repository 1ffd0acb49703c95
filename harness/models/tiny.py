"""Tiny random models of real transformers architectures, and the byte-level tokenizer they share.

Nothing is downloaded: the tokenizer is built from the 256 byte symbols plus four special
tokens, and the model from a config with a fixed seed, so the same entry always gives the
same weights.
"""

from __future__ import annotations

import functools

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from registry.catalog.tiny_defaults import TINY_DEFAULTS

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

@functools.cache
def _tokenizer_object():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return tok


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (every text is representable) with BOS added like Llama's."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer_object(),
        bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(architecture: str, overrides: dict):
    if architecture not in TINY_DEFAULTS:
        raise ValueError(f"no tiny config for architecture {architecture!r}")
    tokenizer = tiny_tokenizer()
    settings = dict(TINY_DEFAULTS[architecture])
    settings.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    rope_theta = overrides.get("rope_theta")
    settings.update({k: v for k, v in overrides.items() if k != "rope_theta"})
    if "head_dim" in settings and architecture != "gpt_neox":
        settings["head_dim"] = settings["hidden_size"] // settings["num_attention_heads"]
    config = AutoConfig.for_model(architecture, **settings)
    if rope_theta is not None:
        _set_rope_theta(config, float(rope_theta))
    return config


def _set_rope_theta(config, theta: float) -> None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        params["rope_theta"] = theta
    elif isinstance(params, dict):
        for sub in params.values():
            if isinstance(sub, dict):
                sub["rope_theta"] = theta
    else:
        config.rope_theta = theta


def build_tiny_model(architecture: str, overrides: dict, init_seed: int, dtype: torch.dtype):
    config = tiny_config(architecture, overrides)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(init_seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval(), tiny_tokenizer()
