"""Zero-shot multiple-choice scoring by continuation log-likelihood, as lm-evaluation-harness does it.

Per item the context (PIQA: "Question: {goal}\\nAnswer:") is followed by each choice after the
target delimiter (" "). A choice's score is the summed log-likelihood of its tokens; `acc` picks
the highest sum, `acc_norm` the highest sum divided by the choice's length in characters
(lm-eval's `acc_norm`; for PIQA's ASCII text that is per byte). Tokens as lm-eval's HF model
makes them: the context and context + continuation are each tokenised whole and the
continuation's tokens are what the second adds (trailing spaces of the context move to the
continuation); BOS first where the model's tokenizer uses one.
"""

from __future__ import annotations

import torch

from harness.data import DataError
from harness.models import LoadedModel
from harness.models import lm as L
from registry.kinds.bridge import ContinuationSpec


def context_text(spec: ContinuationSpec, item: dict) -> str:
    return spec.context_template.format(**{k: v for k, v in item.items() if k in ("text", "question", "choices")})


def encode_pair(lm: LoadedModel, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's `_encode_pair` splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = L.tokenize(lm, context + continuation, bos=True)
    head = L.tokenize(lm, context, bos=True)
    return whole[: len(head)], whole[len(head):]


def choice_logliks(lm: LoadedModel, pairs: list[tuple[list[int], list[int]]], batch_size: int) -> list[float]:
    """Summed log-likelihood of each continuation after its context (right-padded batches, longest first;
    the LM head runs only where a continuation token is predicted)."""
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out = [0.0] * len(pairs)
    backbone = L.backbone(lm)
    for start in range(0, len(order), batch_size):
        picked = order[start:start + batch_size]
        seqs = [pairs[i][0] + pairs[i][1] for i in picked]
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        with torch.no_grad():
            hidden = backbone(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).last_hidden_state
            rows = torch.cat([torch.full((len(pairs[i][1]),), r) for r, i in enumerate(picked)])
            cols = torch.cat([len(pairs[i][0]) - 1 + torch.arange(len(pairs[i][1])) for i in picked])
            targets = torch.cat([torch.tensor(pairs[i][1]) for i in picked]).to(lm.device)
            logp = torch.log_softmax(L.lm_logits(lm, hidden[rows, cols]), -1)
            token_ll = logp.gather(-1, targets[:, None])[:, 0].cpu()
        for r, i in enumerate(picked):
            first = sum(len(pairs[j][1]) for j in picked[:r])
            out[i] = float(token_ll[first:first + len(pairs[i][1])].sum())
    return out


def score_items(lm: LoadedModel, spec: ContinuationSpec, items: list[dict], choices: list[list[str]]) -> list[dict]:
    """Per item: every choice's summed log-likelihood and length, and the `acc` / `acc_norm` picks."""
    pairs = []
    for item, options in zip(items, choices):
        context = context_text(spec, item)
        pairs.extend(encode_pair(lm, context, spec.target_delimiter + option) for option in options)
    logliks = choice_logliks(lm, pairs, spec.batch_size)
    rows, start = [], 0
    for item, options in zip(items, choices):
        ll, start = logliks[start:start + len(options)], start + len(options)
        chars = [len(o) for o in options]
        if not all(chars):
            raise DataError(f"item {item['id']}: an empty choice cannot be length-normalised")
        rows.append({"loglik": [round(v, 4) for v in ll], "chars": chars,
                     "acc": max(range(len(ll)), key=ll.__getitem__),
                     "acc_norm": max(range(len(ll)), key=lambda c: ll[c] / chars[c])})
    return rows
