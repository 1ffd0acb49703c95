"""The receiver side: one way to build its inputs for training and for evaluation.

Every method that feeds the receiver embeddings (bridge, noise, prompt tuning, text) goes
through `ReceiverPrompt`: a constant prefix (BOS + primer, or BOS + instruction + few-shot
demonstrations) encoded once, then a per-item middle (soft tokens + prompt, or item text),
then the answer. Training and evaluation build the middle with the same function, so a
train/eval primer mismatch (seed 002, phase 4) happens only when a spec asks for it
(`task.train_primer`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.kinds.bridge.task import TaskData
from harness.models import LoadedModel
from harness.models import decoding as D
from harness.models import lm as L


@functools.lru_cache(maxsize=8)
def _newline_token_ids(tokenizer) -> frozenset[int]:
    """Every vocabulary entry whose text contains a newline (they end an answer)."""
    return frozenset(i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i]))


def stop_ids(lm: LoadedModel, suffix: str) -> set[int]:
    ids = {lm.tokenizer.eos_token_id} if lm.tokenizer.eos_token_id is not None else set()
    if "\n" in suffix:
        ids |= _newline_token_ids(lm.tokenizer)
    return ids


@dataclass
class ReceiverPrompt:
    """A model, its constant prefix (encoded once) and the task's answer candidates."""

    lm: LoadedModel
    prefix: D.Prefix | None  # None when there is nothing before the middle (no BOS, empty text)
    task: TaskData
    trie: D.CandidateTrie | None
    stops: set[int]

    @classmethod
    def build(cls, lm: LoadedModel, task: TaskData, prefix_text: str, bos: bool = True) -> "ReceiverPrompt":
        ids = L.tokenize(lm, prefix_text, bos=bos)
        prefix = D.encode_prefix(lm, L.embed(lm, torch.tensor([ids]))) if ids else None
        trie = None
        if task.is_classification:
            trie = D.CandidateTrie([L.tokenize(lm, task.task.answer_prefix + v + task.task.answer_suffix)
                                    for v in task.verbalizers])
        return cls(lm, prefix, task, trie, stop_ids(lm, task.task.answer_suffix))

    def text_middle(self, text: str, bos: bool = False) -> torch.Tensor:
        return L.embed(self.lm, torch.tensor(L.tokenize(self.lm, text, bos=bos), dtype=torch.long))

    def soft_middle(self, soft: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Soft tokens followed by the embedded prompt that comes after them."""
        return torch.cat([soft.to(after.dtype), after], dim=0)

    def answer_ids(self, answer_text: str) -> list[int]:
        return L.tokenize(self.lm, answer_text)

    # ------------------------------------------------------------------ training
    def answer_loss(self, middles: list[torch.Tensor], answers: list[list[int]]) -> torch.Tensor:
        """Mean cross-entropy of the answer tokens."""
        return self.answer_token_losses(middles, answers).mean()

    def answer_token_losses(self, middles: list[torch.Tensor], answers: list[list[int]]) -> torch.Tensor:
        """Cross-entropy of every answer token (one vector over the batch); the LM head runs only where
        an answer token is predicted."""
        lm = self.lm
        seqs = [torch.cat([m, L.embed(lm, torch.tensor(a))]) for m, a in zip(middles, answers)]
        width = max(s.shape[0] for s in seqs)
        embeds = seqs[0].new_zeros(len(seqs), width, seqs[0].shape[-1])
        mask = torch.zeros(len(seqs), width, dtype=torch.long, device=lm.device)
        for i, s in enumerate(seqs):  # right padding: the padding comes after every answer
            embeds[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = 1
        batch = len(seqs)
        offset = self.prefix.length if self.prefix else 0
        full_mask = torch.cat([mask.new_ones(batch, offset), mask], dim=1)
        positions = offset + torch.arange(width, device=lm.device)[None].expand(batch, -1)
        cache = self.prefix.expand(batch) if self.prefix else None
        hidden = L.backbone(lm)(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions,
                                **L.with_cache(cache), use_cache=cache is not None).last_hidden_state
        rows = torch.cat([torch.full((len(a),), i) for i, a in enumerate(answers)])
        cols = torch.cat([m.shape[0] - 1 + torch.arange(len(a)) for m, a in zip(middles, answers)])
        logits = L.lm_logits(lm, hidden[rows, cols])
        targets = torch.cat([torch.tensor(a) for a in answers]).to(logits.device)
        return F.cross_entropy(logits, targets, reduction="none")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, middles: list[torch.Tensor], batch_size: int, progress=None) -> list[dict]:
        """Greedy generation (parsed) and, for classification, the exact argmax-likelihood label."""
        results = []
        task = self.task
        for start in range(0, len(middles), batch_size):
            chunk = middles[start:start + batch_size]
            enc = D.encode(self.lm, chunk, self.prefix)
            generated = D.greedy_generate(self.lm, enc, task.task.max_new_tokens, self.stops)
            scored = D.best_candidates(self.lm, enc, self.trie) if self.trie is not None else [None] * len(chunk)
            for ids, best in zip(generated, scored):
                text = self.lm.tokenizer.decode(ids, skip_special_tokens=True)
                row = {"generated": text, "generation": task.parse(text)}
                if best is not None:
                    row["scored"], row["score_logprob"] = best[0], round(best[1], 4)
                results.append(row)
            if progress is not None:
                progress.update(len(chunk))
        return results


def generate_texts(lm: LoadedModel, prompts: list[str], max_new_tokens: int, batch_size: int,
                   stop_at_newline: bool = True, progress=None) -> list[str]:
    """Greedy continuations of plain text prompts (the text relay's sender side)."""
    stops = stop_ids(lm, "\n" if stop_at_newline else "")
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        seqs = [L.embed(lm, torch.tensor(L.tokenize(lm, p, bos=True))) for p in chunk]
        enc = D.encode(lm, seqs)
        for ids in D.greedy_generate(lm, enc, max_new_tokens, stops):
            out.append(lm.tokenizer.decode(ids, skip_special_tokens=True).strip())
        if progress is not None:
            progress.update(len(chunk))
    return out
