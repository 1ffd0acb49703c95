"""Running a frozen causal LM on embeddings: prefixes, batched encoding, greedy decoding, label scoring.

Everything works on `inputs_embeds`, so text, soft tokens and mixtures go through one path.
Batches are left-padded with explicit position ids, so a padded row gives the same result as
the row alone (tests check this). A constant prefix (a primer, few-shot demonstrations) is
encoded once and its KV cache reused for every batch. Caches keep every position (no
sliding-window truncation); sliding-window layers get their window from the attention mask.
"""

from __future__ import annotations

import copy
import heapq
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from harness.models.loading import LoadedModel


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


def fork_cache(cache, rows: torch.Tensor):
    """A cache holding `rows` of `cache` (repeats allowed), leaving `cache` untouched.

    Cache layers grow by concatenation (they never write into their tensors), so copying the
    layer objects, not the tensors, is enough.
    """
    forked = copy.copy(cache)
    forked.layers = [copy.copy(layer) for layer in cache.layers]
    forked.batch_select_indices(rows)
    return forked


def attention_masks(lm: LoadedModel, allowed: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor):
    """Additive 4-D mask(s) from a boolean (B, Q, K) mask; sliding-window layers also need
    query position - key position < window. Returns a dict per layer type where the model mixes them."""
    config = lm.model.config
    neg = torch.finfo(lm.dtype).min

    def additive(keep: torch.Tensor) -> torch.Tensor:
        return torch.zeros(keep.shape, dtype=lm.dtype).masked_fill(~keep, neg)[:, None].to(lm.device)

    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if not window:
        return additive(allowed)
    in_window = allowed & (query_pos.cpu()[:, :, None] - key_pos.cpu()[:, None, :] < window)
    if "sliding_attention" in layer_types:
        return {"full_attention": additive(allowed), "sliding_attention": additive(in_window)}
    return additive(in_window)  # every layer slides


def causal_masks(lm: LoadedModel, key_ok: torch.Tensor, key_pos: torch.Tensor, query_pos: torch.Tensor):
    """Masks for Q new tokens that are the last Q of K keys: each sees valid keys up to itself."""
    n_keys, n_new = key_ok.shape[1], query_pos.shape[1]
    key_index = torch.arange(n_keys)
    query_index = n_keys - n_new + torch.arange(n_new)
    allowed = key_ok.bool().cpu()[:, None, :] & (key_index[None, None, :] <= query_index[None, :, None])
    return attention_masks(lm, allowed, query_pos, key_pos)


@dataclass
class Prefix:
    """A constant start of every sequence, encoded once."""

    cache: object
    length: int

    def expand(self, batch: int):
        return fork_cache(self.cache, torch.zeros(batch, dtype=torch.long))


def context_length(lm: LoadedModel) -> int | None:
    return getattr(lm.model.config, "max_position_embeddings", None)


def warn_if_beyond_context(lm: LoadedModel, length: int) -> None:
    """Positions past the model's trained context run without error but are out of distribution: say so once."""
    limit = context_length(lm)
    if limit is not None and length > limit and not getattr(lm, "_warned_context", False):
        warnings.warn(f"{lm.name}: a prompt of {length} positions exceeds the model's context of {limit}", stacklevel=3)
        lm._warned_context = True


def encode_prefix(lm: LoadedModel, embeds: torch.Tensor) -> Prefix:
    """Encode a (1, P, d) prefix and keep its KV cache."""
    positions = torch.arange(embeds.shape[1])[None]
    masks = causal_masks(lm, torch.ones(1, embeds.shape[1], dtype=torch.bool), positions, positions)
    with torch.no_grad():
        out = backbone(lm)(inputs_embeds=embeds, attention_mask=masks, use_cache=True, past_key_values=DynamicCache(),
                           position_ids=positions.to(lm.device))
    return Prefix(out.past_key_values, embeds.shape[1])


def left_pad(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (T_i, d) tensors into (B, T, d), padding on the left; returns (embeds, mask)."""
    width = max(s.shape[0] for s in seqs)
    d = seqs[0].shape[-1]
    out = seqs[0].new_zeros(len(seqs), width, d)
    mask = torch.zeros(len(seqs), width, dtype=torch.long, device=seqs[0].device)
    for i, s in enumerate(seqs):
        out[i, width - s.shape[0]:] = s
        mask[i, width - s.shape[0]:] = 1
    return out, mask


@dataclass
class Encoded:
    """A batch after its prompt: the cache, the mask so far, next positions, last-token logits."""

    cache: object
    mask: torch.Tensor  # (B, prefix + T)
    next_position: torch.Tensor  # (B,)
    last_logits: torch.Tensor  # (B, V) float32
    key_positions: torch.Tensor  # (B, prefix + T): the position id of every cached key


def encode(lm: LoadedModel, seqs: list[torch.Tensor], prefix: Prefix | None = None) -> Encoded:
    """Encode per-row embedding sequences (after an optional shared prefix) with a KV cache."""
    embeds, mask = left_pad(seqs)
    batch = embeds.shape[0]
    offset = prefix.length if prefix else 0
    warn_if_beyond_context(lm, offset + embeds.shape[1])
    positions = (offset + mask.cumsum(-1) - 1).clamp_min(offset)
    full_mask = torch.cat([mask.new_ones(batch, offset), mask], dim=1) if prefix else mask
    key_positions = torch.cat([torch.arange(offset, device=mask.device)[None].expand(batch, -1), positions], dim=1)
    masks = causal_masks(lm, full_mask, key_positions, positions)
    with torch.no_grad():
        out = backbone(lm)(inputs_embeds=embeds, attention_mask=masks, position_ids=positions.to(lm.device),
                           past_key_values=prefix.expand(batch) if prefix else DynamicCache(), use_cache=True)
    last = lm_logits(lm, out.last_hidden_state[:, -1])
    return Encoded(out.past_key_values, full_mask, positions[:, -1] + 1, last, key_positions)


def _step(lm: LoadedModel, cache, masks, positions: torch.Tensor, ids: torch.Tensor):
    """Feed (B, n) token ids after a cache under prepared masks; returns final hidden states (B, n, d)."""
    with torch.no_grad():
        out = backbone(lm)(inputs_embeds=embed(lm, ids), attention_mask=masks, position_ids=positions.to(lm.device),
                           past_key_values=cache, use_cache=True)
    return out.last_hidden_state


def greedy_generate(lm: LoadedModel, enc: Encoded, max_new_tokens: int, stop_ids: set[int]) -> list[list[int]]:
    """Greedy continuation of every row; stops a row at any id in `stop_ids` (not included)."""
    batch = enc.last_logits.shape[0]
    cache, mask, pos = fork_cache(enc.cache, torch.arange(batch)), enc.mask, enc.next_position
    key_pos = enc.key_positions
    logits = enc.last_logits
    outputs: list[list[int]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool)
    nxt = logits.argmax(-1).cpu()
    for step in range(max_new_tokens):
        for i in range(batch):
            if not done[i]:
                if int(nxt[i]) in stop_ids:
                    done[i] = True
                else:
                    outputs[i].append(int(nxt[i]))
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        key_pos = torch.cat([key_pos, pos[:, None]], dim=1)
        hidden = _step(lm, cache, causal_masks(lm, mask, key_pos, pos[:, None]), pos[:, None], nxt[:, None].to(lm.device))
        pos = pos + 1
        active = (~done).nonzero().flatten()  # the LM head only for rows still writing
        nxt[active] = lm_logits(lm, hidden[active.to(hidden.device), -1]).argmax(-1).cpu()
    return outputs


class CandidateTrie:
    """Candidate token sequences as a prefix tree; no candidate may be a prefix of another."""

    def __init__(self, candidates: list[list[int]]):
        self.complete = {tuple(c): i for i, c in enumerate(candidates)}
        if len(self.complete) != len(candidates) or not all(candidates):
            raise ValueError("candidates must be distinct and non-empty")
        self.children: dict[tuple[int, ...], set[int]] = {}
        for c in candidates:
            for t in range(len(c)):
                self.children.setdefault(tuple(c[:t]), set()).add(c[t])
        if any(c in self.children for c in self.complete):
            raise ValueError("no candidate may be a prefix of another; end each with a terminator")


def _pop_frontier(heap: list, trie: CandidateTrie, limit: int) -> tuple[list, tuple | None]:
    """Up to `limit` best incomplete prefixes; or, if the best item is complete, that item."""
    picked = []
    while heap and len(picked) < limit:
        neg, node = heapq.heappop(heap)
        if node in trie.complete:
            if not picked:
                return [], (trie.complete[node], -neg)
            heapq.heappush(heap, (neg, node))  # expand what is ahead of it first
            break
        picked.append((neg, node))
    return picked, None


def best_candidates(lm: LoadedModel, enc: Encoded, trie: CandidateTrie, expand_per_row: int = 8,
                    max_per_row: int = 256) -> list[tuple[int, float]]:
    """For every row, the exact argmax of summed log-likelihood over the trie's candidates.

    Uniform-cost search: a prefix's log-probability can only fall as tokens are added, so the
    first complete candidate to leave a row's max-heap is that row's argmax. Each round expands
    frontier prefixes of every row in one forward pass using tree attention: the new tokens are
    appended to the row's own cache, and a 4-D mask lets each attend only to the prompt, its
    ancestors and itself, so nothing is copied or re-fed. The number expanded per row doubles
    every round (up to `max_per_row`), so a flat distribution needs few rounds and a peaked one
    wastes little.
    """
    n_rows, prompt_len = enc.mask.shape
    first = torch.log_softmax(enc.last_logits, -1)
    heaps = [[(-float(first[r, t]), (t,)) for t in trie.children[()]] for r in range(n_rows)]
    for heap in heaps:
        heapq.heapify(heap)
    cache = fork_cache(enc.cache, torch.arange(n_rows))
    slots: list[dict] = [{} for _ in range(n_rows)]  # node -> its index in the row's cache
    prompt_keys = enc.mask.bool()
    key_pos = enc.key_positions.cpu()
    length = prompt_len
    result: list = [None] * n_rows
    per_row = expand_per_row
    while True:
        picks = []
        for r in range(n_rows):
            chosen, done = ([], None) if result[r] is not None else _pop_frontier(heaps[r], trie, per_row)
            if done is not None:
                result[r] = done
            picks.append(chosen)
        width = max(len(p) for p in picks)
        if width == 0:
            return result
        per_row = min(2 * per_row, max_per_row)
        ids = torch.zeros(n_rows, width, dtype=torch.long)
        positions = enc.next_position[:, None].repeat(1, width)
        allowed = torch.zeros(n_rows, width, length + width, dtype=torch.bool)
        allowed[:, torch.arange(width), length + torch.arange(width)] = True  # itself (padding too)
        for r, chosen in enumerate(picks):
            for j, (_, node) in enumerate(chosen):
                ids[r, j] = node[-1]
                positions[r, j] += len(node) - 1
                allowed[r, j, :prompt_len] = prompt_keys[r]
                allowed[r, j, [slots[r][node[:d]] for d in range(1, len(node))]] = True
                slots[r][node] = length + j
        key_pos = torch.cat([key_pos, positions], dim=1)
        masks = attention_masks(lm, allowed, positions, key_pos)
        hidden = _step(lm, cache, masks, positions.to(lm.device), ids.to(lm.device))
        real = [(r, j) for r, chosen in enumerate(picks) for j in range(len(chosen))]
        rows_, cols_ = torch.tensor([r for r, _ in real]), torch.tensor([j for _, j in real])
        logp = torch.log_softmax(lm_logits(lm, hidden[rows_, cols_]), -1)  # real expansions only, not padding
        length += width
        for k, (r, j) in enumerate(real):
            neg, node = picks[r][j]
            for tok in trie.children[node]:
                heapq.heappush(heaps[r], (neg - float(logp[k, tok]), node + (tok,)))
