"""Label search against scoring every label in one pass, on flat and peaked distributions, in one run.

The evaluation picks each item's label as the exact argmax of summed log-likelihood over the
task's verbalizers (`decoding.best_candidates`: a uniform-cost search over the label trie that
expands about 128 prefixes per round). The alternative is to expand every internal node of the
trie for every row in one forward pass (tree attention over the same cache) and take the best
complete label. Both are exact; the search expands only prefixes more likely than the answer,
the one-pass scoring expands all of them in fewer, larger passes. This measures which is faster,
and whether they agree, on
- flat distributions: soft tokens of Gaussian noise at the receiver's embedding scale before the
  receiver's prompt (what the noise baseline feeds; its best label sits near -20 nats), and
- peaked distributions: the evaluation items' text after the same primer.
Reported per model and input: seconds for each way, prefixes expanded per item (padding
included), labels that agree, the largest |difference| in the best label's log-likelihood, and
how many rounded (4 decimals, as records store it) scores differ.

    python benchmarks/label_search.py [--spec specs/banking77_16tok.yaml] [--items 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bridge_train import environment, setup  # noqa: E402
from harness.kinds.bridge.receiver import ReceiverPrompt  # noqa: E402
from harness.models import decoding as D  # noqa: E402
from harness.models.lm import lm_logits  # noqa: E402


def score_every_label(lm, enc: D.Encoded, trie: D.CandidateTrie, max_tokens: int = 2048) -> list[tuple[int, float]]:
    """Per row, the best candidate after expanding every internal trie node in one pass (rows in chunks
    of at most `max_tokens` new tokens); ties go to the first candidate, as in the search."""
    nodes = sorted(node for node in trie.children if node)
    slot = {node: j for j, node in enumerate(nodes)}
    ancestors = torch.zeros(len(nodes), len(nodes), dtype=torch.bool)  # node j sees node i: i is j or above it
    for node, j in slot.items():
        ancestors[j, [slot[node[:d]] for d in range(1, len(node) + 1)]] = True
    ids, depth = torch.tensor([n[-1] for n in nodes]), torch.tensor([len(n) - 1 for n in nodes])
    n_rows, prompt_len = enc.mask.shape
    first = torch.log_softmax(enc.last_logits, -1)
    rows_per_pass = max(1, max_tokens // len(nodes))
    best = []
    for start in range(0, n_rows, rows_per_pass):
        rows = torch.arange(start, min(n_rows, start + rows_per_pass))
        positions = enc.next_position.cpu()[rows][:, None] + depth[None]
        allowed = torch.cat([enc.mask.bool().cpu()[rows][:, None, :].expand(-1, len(nodes), -1),
                             ancestors[None].expand(len(rows), -1, -1)], dim=2)
        key_positions = torch.cat([enc.key_positions.cpu()[rows], positions], dim=1)
        hidden = D._step(lm, D.fork_cache(enc.cache, rows.to(lm.device)),
                         D.attention_masks(lm, allowed, positions, key_positions), positions.to(lm.device),
                         ids[None].expand(len(rows), -1).to(lm.device))
        for k, row in enumerate(rows.tolist()):
            logp = torch.log_softmax(lm_logits(lm, hidden[k]), -1)
            scores = {index: float(first[row, c[0]]) + sum(float(logp[slot[c[:t]], c[t]]) for t in range(1, len(c)))
                      for c, index in sorted(trie.complete.items())}
            best.append(max(scores.items(), key=lambda kv: kv[1]))
    return best


def compare(lm, tp: ReceiverPrompt, middles: list[torch.Tensor], batch_size: int) -> dict:
    seconds = {"search": 0.0, "every_label": 0.0}
    expanded, searched, scored = 0, [], []
    step = D._step

    def counting_step(*args):
        nonlocal expanded
        expanded += args[-1].numel()
        return step(*args)

    for start in range(0, len(middles), batch_size):
        enc = D.encode(lm, middles[start:start + batch_size], tp.prefix)
        D._step = counting_step
        try:
            t0 = time.perf_counter()
            searched += D.best_candidates(lm, enc, tp.trie)
            seconds["search"] += time.perf_counter() - t0
        finally:
            D._step = step
        t0 = time.perf_counter()
        scored += score_every_label(lm, enc, tp.trie)
        seconds["every_label"] += time.perf_counter() - t0
    n = len(middles)
    return {
        "seconds": seconds, "search_over_every_label": seconds["search"] / seconds["every_label"],
        "expanded_per_item": {"search": expanded / n, "every_label": len([k for k in tp.trie.children if k])},
        "same_label": f"{sum(a[0] == b[0] for a, b in zip(searched, scored))}/{n}",
        "max_abs_logprob_difference": max(abs(a[1] - b[1]) for a, b in zip(searched, scored)),
        "rounded_scores_differ": f"{sum(round(a[1], 4) != round(b[1], 4) for a, b in zip(searched, scored))}/{n}",
        "median_best_logprob": sorted(b for _, b in searched)[n // 2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "banking77_16tok.yaml")
    parser.add_argument("--profile", default="local", choices=["tiny", "local"])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_search.json")
    args = parser.parse_args()
    cache, mirror = environment()
    spec, task, sender, receiver = setup(args.spec, args.profile, cache, mirror)
    if not task.is_classification:
        raise SystemExit(f"{args.spec}: the benchmark needs a classification task (it scores labels)")
    items = task.eval[: args.items]
    report = {"spec": str(args.spec.relative_to(ROOT)), "profile": args.profile, "items": len(items),
              "batch_size": spec.evaluation.batch_size, "labels": len(task.verbalizers),
              "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "models": {}}
    generator = torch.Generator().manual_seed(0)
    for role, lm in (("receiver", receiver), ("sender", sender)):
        tp = ReceiverPrompt.build(lm, task, task.task.primer)
        prompt = tp.text_middle(task.task.prompt)
        table = lm.model.get_input_embeddings().weight
        scale = float(table.float().pow(2).mean(-1).sqrt().mean())
        noise = [torch.randn(16, table.shape[1], generator=generator) * scale for _ in items]
        inputs = {"flat": [tp.soft_middle(n.to(table.dtype), prompt) for n in noise],
                  "peaked": [tp.text_middle(task.item_text(i.input)) for i in items]}
        tp.evaluate(inputs["peaked"][:4], spec.evaluation.batch_size)  # warm-up
        entry = {"model": lm.name, "trie_prefixes": len([k for k in tp.trie.children if k])}
        for name, middles in inputs.items():
            entry[name] = compare(lm, tp, middles, spec.evaluation.batch_size)
            r = entry[name]
            print(f"{role} {lm.name} {name}: search {r['seconds']['search']:.1f} s ({r['expanded_per_item']['search']:.0f} "
                  f"prefixes/item), every label {r['seconds']['every_label']:.1f} s ({entry['trie_prefixes']}/item); "
                  f"same label {r['same_label']}, max |d logp| {r['max_abs_logprob_difference']:.1e}, "
                  f"rounded scores differ {r['rounded_scores_differ']}")
        report["models"][role] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
