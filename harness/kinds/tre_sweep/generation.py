"""Batched generation with per-row, per-token sampling parameters and per-row random streams.

One left-padded batch, KV cache on, position ids counted from each row's first real token (as
transformers' generate does), the LM head applied to the last position only. After every
forward pass the controller gives each row its temperature, top-p and top-k (the neural one
reads the activations of that same pass), and each row draws its token from its own uniform
stream. A row stops at an end-of-sequence token, at `max_new_tokens`, or (mask policy) when
its logits have no finite value left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.models import NonFiniteActivationError, check_finite
from harness.models.lm import output_cache, with_cache
from harness.kinds.tre_sweep.sampling import draw, filter_logits, invalid_prob_rows, mask_nonfinite


@dataclass
class GeneratedRow:
    token_ids: list[int] = field(default_factory=list)  # sampled tokens, end-of-sequence excluded
    temperature: list[float] = field(default_factory=list)  # one entry per sampling step
    top_p: list[float] = field(default_factory=list)
    top_k: list[int] = field(default_factory=list)
    signal_raw: list[float | None] = field(default_factory=list)
    signal: list[float | None] = field(default_factory=list)
    nonfinite_logit_tokens: int = 0  # steps whose logits had NaN/Inf (masked)
    nonfinite_signal_tokens: int = 0  # steps whose signal had no finite unit (held)
    stop_reason: str = "length"  # "eos", "length" or "nonfinite"


def tokenize_left_padded(tokenizer, texts: list[str], *, add_special_tokens: bool, max_length: int | None = None):
    """A padded batch with the padding on the left, so every row's last position is a real token."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
                         truncation=max_length is not None, max_length=max_length)
    finally:
        tokenizer.padding_side = side


def end_of_sequence_ids(lm) -> set[int]:
    ids = {lm.tokenizer.eos_token_id}
    configured = getattr(lm.model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {int(i) for i in ids if i is not None}


def _value(x: torch.Tensor | None, i: int, digits: int = 6):
    if x is None:
        return None
    v = float(x[i])
    return None if v != v else round(v, digits)


def generate_rows(lm, model_name: str, texts: list[str], controller, uniforms: torch.Tensor, *, max_new_tokens: int,
                  nan_policy: str, add_special_tokens: bool, progress=None) -> list[GeneratedRow]:
    """Generate from every text in one batch; `uniforms` is (rows, max_new_tokens), one stream per row."""
    rows = len(texts)
    enc = tokenize_left_padded(lm.tokenizer, texts, add_special_tokens=add_special_tokens).to(lm.device)
    attention = enc["attention_mask"]
    positions = (attention.long().cumsum(-1) - 1).masked_fill(attention == 0, 1)
    eos = torch.tensor(sorted(end_of_sequence_ids(lm)), device=lm.device)
    pad_id = lm.tokenizer.pad_token_id
    results = [GeneratedRow() for _ in range(rows)]
    active = torch.ones(rows, dtype=torch.bool)
    step = 0
    try:
        with torch.no_grad(), controller.attached():
            out = lm.model(input_ids=enc["input_ids"], attention_mask=attention, position_ids=positions,
                           use_cache=True, logits_to_keep=1)
            for step in range(max_new_tokens):
                logits = out.logits[:, -1]
                params = controller.step(step)
                if nan_policy == "error":
                    check_finite(logits, model_name, "logits")  # in the model's dtype, which the message names
                    dead = torch.zeros(rows, dtype=torch.bool)
                else:
                    logits, affected, dead = mask_nonfinite(logits.float())
                    _count(results, active & affected.cpu(), "nonfinite_logit_tokens")
                    dead = dead.cpu()
                    if params.signal_raw is not None:
                        _count(results, active & torch.isnan(params.signal_raw), "nonfinite_signal_tokens")
                candidates = filter_logits(logits, params.temperature.to(lm.device), params.top_k.to(lm.device),
                                           params.top_p.to(lm.device))
                if nan_policy == "error":
                    check_finite(candidates.probs, model_name, "probs")
                else:
                    dead |= invalid_prob_rows(candidates.probs).cpu()
                tokens = draw(candidates, uniforms[:, step].to(lm.device))
                is_eos = torch.isin(tokens, eos).cpu()
                for i in torch.nonzero(active).flatten().tolist():
                    row = results[i]
                    if dead[i]:
                        row.stop_reason = "nonfinite"
                        continue
                    row.temperature.append(round(float(params.temperature[i]), 6))
                    row.top_p.append(round(float(params.top_p[i]), 6))
                    row.top_k.append(int(params.top_k[i]))
                    if params.signal is not None:
                        row.signal_raw.append(_value(params.signal_raw, i))
                        row.signal.append(_value(params.signal, i))
                    if is_eos[i]:
                        row.stop_reason = "eos"
                    else:
                        row.token_ids.append(int(tokens[i]))
                active &= ~(dead | is_eos)
                if progress is not None and (step % 8 == 7 or step == max_new_tokens - 1):
                    progress.set_postfix_str(f"token {step + 1}/{max_new_tokens}", refresh=False)
                if not active.any() or step == max_new_tokens - 1:
                    break
                tokens = torch.where(active.to(lm.device), tokens, torch.full_like(tokens, pad_id))
                attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=-1)
                positions = positions[:, -1:] + 1
                out = lm.model(input_ids=tokens.unsqueeze(-1), attention_mask=attention, position_ids=positions,
                               **with_cache(output_cache(out)), use_cache=True)
    except NonFiniteActivationError as exc:
        raise NonFiniteActivationError(f"{exc}, at generation step {step}") from None
    return results


def _count(results: list[GeneratedRow], mask: torch.Tensor, attribute: str) -> None:
    for i in torch.nonzero(mask).flatten().tolist():
        setattr(results[i], attribute, getattr(results[i], attribute) + 1)
