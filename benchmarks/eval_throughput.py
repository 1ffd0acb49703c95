"""Evaluation throughput: the harness's batched evaluation against the obvious per-item loop, in one run.

One "item-method" is what every bridge-spec method does per evaluation item: greedy generation
of the answer (up to the task's `max_new_tokens`, stopping at the answer's terminator) and,
for classification, the exact argmax-likelihood label among the task's verbalizers.

Naive: per item, the whole prompt (instruction + item) through `model.generate` (greedy), cut
at the first stop token; then, for each candidate label, one forward pass over the prompt
followed by the label, summed log-likelihood of the label's tokens, argmax. (All labels of an
item in one batch would need every position's logits at once: 34 GB for Gemma-3's vocabulary.)
Harness: `ReceiverPrompt.evaluate`: the instruction's KV cache encoded once, items in
left-padded batches, generation and uniform-cost label search sharing each batch's cache,
finished rows leaving the batch. Both run the receiver-text method of the spec, on the
receiver (SmolLM2-135M, 49,152-word head) and the sender (Gemma-3-270M, 262,144-word head).
Reported: item-methods per second of each, the speed-up, the harness's split into encoding,
generation and label search, and whether both give the same generation and label per item.

    python benchmarks/eval_throughput.py [--spec specs/banking77_16tok.yaml] [--items 64] [--naive-items 4]
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
from harness.models import lm as L  # noqa: E402


def naive_item(lm, prompt_ids: list[int], candidates: list[list[int]], max_new_tokens: int, stops: set[int]):
    """Generation and label of one item the obvious way (no shared prefix, one pass per label)."""
    with torch.no_grad():
        out = lm.model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id)
        new = out[0, len(prompt_ids):].tolist()
        generated = next((new[:i] for i, t in enumerate(new) if t in stops), new)
        scores = []
        for c in candidates:  # one forward pass per label (all of them at once would need every position's logits)
            logp = torch.log_softmax(lm.model(input_ids=torch.tensor([prompt_ids + c])).logits[0].float(), -1)
            scores.append(sum(float(logp[len(prompt_ids) - 1 + t, c[t]]) for t in range(len(c))))
    return generated, max(range(len(scores)), key=scores.__getitem__)


def harness_split(tp: ReceiverPrompt, middles: list[torch.Tensor], batch_size: int, max_new_tokens: int) -> dict:
    """Seconds spent encoding, generating and searching labels, over the same batches `evaluate` uses."""
    seconds = {"encode": 0.0, "generate": 0.0, "label_search": 0.0}
    for start in range(0, len(middles), batch_size):
        t0 = time.perf_counter()
        enc = D.encode(tp.lm, middles[start:start + batch_size], tp.prefix)
        t1 = time.perf_counter()
        D.greedy_generate(tp.lm, enc, max_new_tokens, tp.stops)
        t2 = time.perf_counter()
        D.best_candidates(tp.lm, enc, tp.trie)
        t3 = time.perf_counter()
        for key, dt in zip(seconds, (t1 - t0, t2 - t1, t3 - t2)):
            seconds[key] += dt
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "banking77_16tok.yaml")
    parser.add_argument("--profile", default="local", choices=["tiny", "local"])
    parser.add_argument("--items", type=int, default=64, help="items for the harness path")
    parser.add_argument("--naive-items", type=int, default=4, help="items for the naive loop (its first items)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "eval_throughput.json")
    args = parser.parse_args()
    cache, mirror = environment()
    spec, task, sender, receiver = setup(args.spec, args.profile, cache, mirror)
    if not task.is_classification:
        raise SystemExit(f"{args.spec}: the benchmark needs a classification task (it scores labels)")
    t = task.task
    items = task.eval[: args.items]
    report = {"spec": str(args.spec.relative_to(ROOT)), "profile": args.profile, "items": len(items),
              "naive_items": min(args.naive_items, len(items)), "batch_size": spec.evaluation.batch_size,
              "labels": len(task.verbalizers), "max_new_tokens": t.max_new_tokens,
              "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "models": {}}
    for role, lm in (("receiver", receiver), ("sender", sender)):
        tp = ReceiverPrompt.build(lm, task, task.instruction())
        middles = [tp.text_middle(task.item_text(i.input)) for i in items]
        tp.evaluate(middles[: spec.evaluation.batch_size // 4], spec.evaluation.batch_size)  # warm-up
        start = time.perf_counter()
        rows = tp.evaluate(middles, spec.evaluation.batch_size)
        harness_s = time.perf_counter() - start
        split = harness_split(tp, middles, spec.evaluation.batch_size, t.max_new_tokens)

        prefix_ids = L.tokenize(lm, task.instruction(), bos=True)
        candidates = [L.tokenize(lm, t.answer_prefix + v + t.answer_suffix) for v in task.verbalizers]
        agree_generation = agree_label = 0
        start = time.perf_counter()
        for item, row in zip(items[: report["naive_items"]], rows):
            generated, label = naive_item(lm, prefix_ids + L.tokenize(lm, task.item_text(item.input)), candidates,
                                          t.max_new_tokens, tp.stops)
            agree_generation += lm.tokenizer.decode(generated, skip_special_tokens=True) == row["generated"]
            agree_label += label == row["scored"]
        naive_s = time.perf_counter() - start
        entry = {
            "model": lm.name, "vocabulary": int(lm.model.config.vocab_size),
            "prefix_tokens": len(prefix_ids),
            "harness": {"seconds": harness_s, "item_methods_per_s": len(items) / harness_s,
                        "split_seconds": split},
            "naive": {"seconds": naive_s, "item_methods_per_s": report["naive_items"] / naive_s},
            "same_generation": f"{agree_generation}/{report['naive_items']}",
            "same_label": f"{agree_label}/{report['naive_items']}",
        }
        entry["speedup"] = entry["harness"]["item_methods_per_s"] / entry["naive"]["item_methods_per_s"]
        report["models"][role] = entry
        print(f"{role} {lm.name}: harness {entry['harness']['item_methods_per_s']:.2f} item-methods/s "
              f"(encode {split['encode']:.1f} s, generate {split['generate']:.1f} s, labels {split['label_search']:.1f} s "
              f"for {len(items)} items), naive {entry['naive']['item_methods_per_s']:.3f}/s, "
              f"speed-up {entry['speedup']:.1f}x; same generation {entry['same_generation']}, same label {entry['same_label']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
