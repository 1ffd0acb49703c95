"""Cached decoding on embeddings: shared prefixes, left-padded batches, greedy generation, label scoring.

Everything works on `inputs_embeds`, so text, soft tokens and mixtures go through one path.
Batches are left-padded with explicit position ids, so a padded row gives the same result as
the row alone (tests check this). A constant prefix (a primer, few-shot demonstrations) is
encoded once and its KV cache reused for every batch. Caches keep every position (no
sliding-window truncation); sliding-window layers get their window from the attention mask.
Caches grow in place into spare capacity rather than by concatenation, and rows that are
finished leave the batch, so each decoding step costs what the unfinished rows need.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

from harness.models.lm import backbone, embed, lm_logits, output_cache, warn_if_beyond_context, with_cache
from harness.models.loading import LoadedModel


class GrowingLayer(DynamicLayer):
    """A cache layer that appends into spare capacity (growing by half when full) instead of concatenating.

    `keys` / `values` are views of the filled part. Selecting rows copies them into a new buffer,
    so a fork never writes into its parent's memory.
    """

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.length, self.key_buffer, self.value_buffer = 0, None, None
        start, end = self.length, self.length + key_states.shape[-2]
        if self.key_buffer is None or end > self.key_buffer.shape[-2]:
            self._reallocate(key_states, value_states, end + max(64, end // 2))
        self.key_buffer[..., start:end, :] = key_states
        self.value_buffer[..., start:end, :] = value_states
        self._set_length(end)
        return self.keys, self.values

    def _reallocate(self, key_states, value_states, capacity: int) -> None:
        shape = lambda t: (*t.shape[:-2], capacity, t.shape[-1])  # noqa: E731
        keys, values = key_states.new_empty(shape(key_states)), value_states.new_empty(shape(value_states))
        if self.length:
            keys[..., : self.length, :] = self.keys
            values[..., : self.length, :] = self.values
        self.key_buffer, self.value_buffer = keys, values

    def _set_length(self, length: int) -> None:
        self.length = length
        self.keys, self.values = self.key_buffer[..., :length, :], self.value_buffer[..., :length, :]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized and self.length:
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self._set_length(self.length)

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a growing cache is never cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a growing cache is never repeated; select rows instead")


class GrowingCache(Cache):
    """A cache of `GrowingLayer`s, one per decoder layer, created as the model first writes them."""

    def __init__(self):
        super().__init__(layer_class_to_replicate=GrowingLayer)


def fork_cache(cache, rows: torch.Tensor):
    """A cache holding `rows` of `cache` (repeats allowed), leaving `cache` untouched.

    Selecting rows gives every layer new buffers, so copying the layer objects, not their
    tensors, is enough: the fork never writes into the parent's memory.
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


def encode_prefix(lm: LoadedModel, embeds: torch.Tensor) -> Prefix:
    """Encode a (1, P, d) prefix and keep its KV cache."""
    positions = torch.arange(embeds.shape[1])[None]
    masks = causal_masks(lm, torch.ones(1, embeds.shape[1], dtype=torch.bool), positions, positions)
    with torch.no_grad():
        out = backbone(lm)(inputs_embeds=embeds, attention_mask=masks, use_cache=True, **with_cache(GrowingCache()),
                           position_ids=positions.to(lm.device))
    return Prefix(output_cache(out), embeds.shape[1])


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
                           **with_cache(prefix.expand(batch) if prefix else GrowingCache()), use_cache=True)
    last = lm_logits(lm, out.last_hidden_state[:, -1])
    return Encoded(output_cache(out), full_mask, positions[:, -1] + 1, last, key_positions)


def _step(lm: LoadedModel, cache, masks, positions: torch.Tensor, ids: torch.Tensor):
    """Feed (B, n) token ids after a cache under prepared masks; returns final hidden states (B, n, d)."""
    with torch.no_grad():
        out = backbone(lm)(inputs_embeds=embed(lm, ids), attention_mask=masks, position_ids=positions.to(lm.device),
                           **with_cache(cache), use_cache=True)
    return out.last_hidden_state


def greedy_generate(lm: LoadedModel, enc: Encoded, max_new_tokens: int, stop_ids: set[int]) -> list[list[int]]:
    """Greedy continuation of every row; stops a row at any id in `stop_ids` (not included).

    Rows that have stopped leave the batch (their cache rows are dropped), so the remaining
    steps cost only what the rows still writing need.
    """
    batch = enc.last_logits.shape[0]
    cache, mask, pos, key_pos = fork_cache(enc.cache, torch.arange(batch)), enc.mask, enc.next_position, enc.key_positions
    outputs: list[list[int]] = [[] for _ in range(batch)]
    live = list(range(batch))  # original row of each cache row
    nxt = enc.last_logits.argmax(-1).cpu()
    for step in range(max_new_tokens):
        keep = []
        for k, row in enumerate(live):
            if int(nxt[k]) not in stop_ids:
                outputs[row].append(int(nxt[k]))
                keep.append(k)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(live):
            index = torch.tensor(keep)
            cache.batch_select_indices(index.to(lm.device))
            live, mask, pos, key_pos, nxt = [live[k] for k in keep], mask[index], pos[index], key_pos[index], nxt[index]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        key_pos = torch.cat([key_pos, pos[:, None]], dim=1)
        hidden = _step(lm, cache, causal_masks(lm, mask, key_pos, pos[:, None]), pos[:, None], nxt[:, None].to(lm.device))
        pos = pos + 1
        nxt = lm_logits(lm, hidden[:, -1]).argmax(-1).cpu()
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


def best_candidates(lm: LoadedModel, enc: Encoded, trie: CandidateTrie, round_tokens: int = 128
                    ) -> list[tuple[int, float]]:
    """For every row, the exact argmax of summed log-likelihood over the trie's candidates.

    Uniform-cost search: a prefix's log-probability can only fall as tokens are added, so the
    first complete candidate to leave a row's max-heap is that row's argmax. Each round expands
    frontier prefixes of every unfinished row in one forward pass using tree attention: the new
    tokens are appended to the row's own cache, and a 4-D mask lets each attend only to the
    prompt, its ancestors and itself, so nothing is copied or re-fed. Finished rows leave the
    batch (their cache rows are dropped), so a row that needs many expansions does not make the
    others pay for padding. Each round expands about `round_tokens` prefixes shared among the
    unfinished rows: one per row costs the fewest expansions but many small forward passes,
    and more per row speculates; 128 was fastest on Banking77's 77 labels with both local
    models (benchmarks/eval_throughput.py).
    """
    n_rows, prompt_len = enc.mask.shape
    first = torch.log_softmax(enc.last_logits, -1)
    heaps = [[(-float(first[r, t]), (t,)) for t in trie.children[()]] for r in range(n_rows)]
    for heap in heaps:
        heapq.heapify(heap)
    cache = fork_cache(enc.cache, torch.arange(n_rows))
    slots: list[dict] = [{} for _ in range(n_rows)]  # node -> its index in the row's cache
    live = list(range(n_rows))  # original row of each cache row
    prompt_keys, key_pos, next_pos = enc.mask.bool().cpu(), enc.key_positions.cpu(), enc.next_position.cpu()
    length = prompt_len
    result: list = [None] * n_rows
    while True:
        picks, keep = [], []
        per_row = max(1, round_tokens // len(live))
        for k, r in enumerate(live):
            chosen, done = _pop_frontier(heaps[r], trie, per_row)
            if done is not None:
                result[r] = done
            else:
                picks.append(chosen)
                keep.append(k)
        if not keep:
            return result
        if len(keep) < len(live):
            index = torch.tensor(keep)
            cache.batch_select_indices(index.to(lm.device))
            live, prompt_keys, key_pos, next_pos = [live[k] for k in keep], prompt_keys[index], key_pos[index], next_pos[index]
        width, n_live = max(len(p) for p in picks), len(live)
        ids = torch.zeros(n_live, width, dtype=torch.long)
        positions = next_pos[:, None].repeat(1, width)
        allowed = torch.zeros(n_live, width, length + width, dtype=torch.bool)
        allowed[:, torch.arange(width), length + torch.arange(width)] = True  # itself (padding too)
        for k, chosen in enumerate(picks):
            row_slots = slots[live[k]]
            for j, (_, node) in enumerate(chosen):
                ids[k, j] = node[-1]
                positions[k, j] += len(node) - 1
                allowed[k, j, :prompt_len] = prompt_keys[k]
                allowed[k, j, [row_slots[node[:d]] for d in range(1, len(node))]] = True
                row_slots[node] = length + j
        key_pos = torch.cat([key_pos, positions], dim=1)
        masks = attention_masks(lm, allowed, positions, key_pos)
        hidden = _step(lm, cache, masks, positions.to(lm.device), ids.to(lm.device))
        real = [(k, j) for k, chosen in enumerate(picks) for j in range(len(chosen))]
        rows_, cols_ = torch.tensor([k for k, _ in real]), torch.tensor([j for _, j in real])
        logp = torch.log_softmax(lm_logits(lm, hidden[rows_, cols_]), -1)  # real expansions only, not padding
        length += width
        for n, (k, j) in enumerate(real):
            neg, node = picks[k][j]
            heap = heaps[live[k]]
            for tok in trie.children[node]:
                heapq.heappush(heap, (neg - float(logp[n, tok]), node + (tok,)))
