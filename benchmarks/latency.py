"""Per-item latency of the bridge, direct text and text relay (seed 002, section 90), component by component.

Batch 1, warm-up trials first, then the median and 90th percentile over timed trials, on items
of the spec's evaluation set. Every method ends the same way: the receiver writes its answer
greedily until the answer's terminator (the report timed the bridge's receiver as one forward
pass without generation, and direct text with a short generation). The bridge is the one the
spec's own run trained (how long the receiver writes depends on it), so run the spec first.
Writes benchmarks/results/latency.json, which `harness report` puts in the bridge summary.

    python benchmarks/latency.py [--spec specs/sst2_8tok.yaml] [--profile local] [--trials 30] [--warmup 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bridge_train import environment, setup  # noqa: E402
from harness.kinds.bridge.modules import LatentBridge  # noqa: E402
from harness.kinds.bridge.receiver import ReceiverPrompt, generate_texts  # noqa: E402
from harness.kinds.bridge.sender_states import compute_sender_states, pad_states  # noqa: E402
from harness.engine import spec_hash, state_dir_for  # noqa: E402
from harness.models import decoding as D  # noqa: E402

# seed 002, section 90 (NVIDIA H100, Llama-3.1-8B -> Mistral-7B, SST-2 bridge with 8 soft tokens, 50 trials)
REPORTED_MS = {
    ("Bridge", "sender encode"): 16.9, ("Bridge", "bridge"): 1.2, ("Bridge", "receiver answer"): 19.3,
    ("Bridge", "total"): 37.3, ("Direct text", "receiver answer"): 98.8, ("Direct text", "total"): 98.8,
    ("Text relay", "sender summary"): 744.9, ("Text relay", "receiver answer"): 89.7, ("Text relay", "total"): 834.5,
}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "sst2_8tok.yaml")
    parser.add_argument("--profile", default="local", choices=["tiny", "local", "paper"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency.json")
    args = parser.parse_args()
    cache, mirror = environment()
    spec, task, sender, receiver = setup(args.spec, args.profile, cache, mirror)
    layer, t = spec.bridge.sender_layer, task.task
    digest = spec_hash(spec.model_dump(mode="json"), args.profile)
    checkpoint = state_dir_for(cache, spec.name, digest) / f"bridge.seed{spec.training_seeds()[0]}.pt"  # the first training seed
    if not checkpoint.is_file():
        sys.exit(f"error: no trained bridge for {args.spec} ({args.profile} profile) at {checkpoint}; "
                 f"run `harness run {args.spec} --profile {args.profile}` first")
    state = torch.load(checkpoint, weights_only=False)["module"]
    sender_dim = state["normalizer.mean"].shape[0]
    bridge = LatentBridge(spec.bridge, sender_dim, receiver.model.config.hidden_size, torch.zeros(sender_dim),
                          torch.ones(sender_dim), 0.03)
    bridge.load_state_dict(state)
    bridge.eval()
    primed = ReceiverPrompt.build(receiver, task, t.primer)
    prompt = primed.text_middle(t.prompt)
    direct = ReceiverPrompt.build(receiver, task, task.instruction())

    def answer(rp: ReceiverPrompt, middle: torch.Tensor) -> None:
        D.greedy_generate(rp.lm, D.encode(rp.lm, [middle], rp.prefix), t.max_new_tokens, rp.stops)

    samples: dict[tuple[str, str], list[float]] = {key: [] for key in REPORTED_MS}
    items = task.eval
    for trial in range(args.warmup + args.trials):
        item = items[trial % len(items)]
        keep = trial >= args.warmup
        with torch.no_grad():
            states, encode_ms = timed(lambda: compute_sender_states(sender, [task.sender_text(item)], layer))
            soft, bridge_ms = timed(lambda: bridge(*pad_states(states, receiver.device))[0][0])
            _, receive_ms = timed(lambda: answer(primed, primed.soft_middle(soft, prompt)))
            _, direct_ms = timed(lambda: answer(direct, direct.text_middle(task.item_text(item.input))))
            summary, summary_ms = timed(lambda: generate_texts(sender, [t.relay_template.format(input=item.input)],
                                                               t.relay_max_tokens, 1)[0])
            _, classify_ms = timed(lambda: answer(direct, direct.text_middle(task.item_text(summary))))
        if keep:
            for key, ms in ((("Bridge", "sender encode"), encode_ms), (("Bridge", "bridge"), bridge_ms),
                            (("Bridge", "receiver answer"), receive_ms),
                            (("Bridge", "total"), encode_ms + bridge_ms + receive_ms),
                            (("Direct text", "receiver answer"), direct_ms), (("Direct text", "total"), direct_ms),
                            (("Text relay", "sender summary"), summary_ms), (("Text relay", "receiver answer"), classify_ms),
                            (("Text relay", "total"), summary_ms + classify_ms)):
                samples[key].append(ms)

    def p90(values):
        return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else values[0]

    rows = [{"method": m, "component": c, "median_ms": statistics.median(v), "p90_ms": p90(v),
             "reported_ms": REPORTED_MS[(m, c)]} for (m, c), v in samples.items()]
    total = {r["method"]: r["median_ms"] for r in rows if r["component"] == "total"}
    device = f"{torch.get_num_threads()}-thread CPU" if receiver.device.type == "cpu" else torch.cuda.get_device_name()
    report = {
        "spec": str(args.spec.relative_to(ROOT)), "profile": args.profile, "sender": spec.sender,
        "receiver": spec.receiver, "device": device, "trials": args.trials, "warmup": args.warmup,
        "soft_tokens": spec.bridge.soft_tokens, "rows": rows,
        "bridge_vs_relay": total["Text relay"] / total["Bridge"], "bridge_vs_direct": total["Direct text"] / total["Bridge"],
        "reported_bridge_vs_relay": 834.5 / 37.3,
        "bridge_checkpoint": str(checkpoint),
        "notes": f"{spec.sender} -> {spec.receiver}; every method's receiver writes its answer greedily",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for r in rows:
        print(f"{r['method']:12s} {r['component']:16s} median {r['median_ms']:8.1f} ms   p90 {r['p90_ms']:8.1f} ms"
              f"   reported {r['reported_ms']:6.1f} ms")
    print(f"text relay / bridge: {report['bridge_vs_relay']:.1f}x (reported 22.4x); "
          f"direct text / bridge: {report['bridge_vs_direct']:.1f}x (reported 2.6x)  -> {args.out}")


if __name__ == "__main__":
    main()
