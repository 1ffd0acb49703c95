"""Per-item latency of the bridge, direct text and text relay (seed 002, section 90), component by component.

Batch 1, warm-up trials first, then the median and 90th percentile over timed trials, on items
of the spec's evaluation set. The receiver's part is timed under two protocols, so like is
compared with like: "forward" (one forward pass over its prompt, no generation: how the report
timed the bridge's receiver, 19.3 ms) and "answer" (it writes its answer greedily until the
answer's terminator: how the report timed direct text, 98.8 ms, and the relay's receiver). Each
reported number sits in the row of the protocol it was measured with. The bridge is the one the
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
from harness.engine import state_dir_for  # noqa: E402
from harness.models import decoding as D  # noqa: E402

# seed 002, section 90 (NVIDIA H100, Llama-3.1-8B -> Mistral-7B, SST-2 bridge with 8 soft tokens, 50 trials),
# keyed by (method, component, protocol of the receiver's part); protocol None: no receiver in the component
REPORTED_MS = {
    ("Bridge", "sender encode", None): 16.9, ("Bridge", "bridge", None): 1.2,
    ("Bridge", "receiver", "forward"): 19.3, ("Bridge", "total", "forward"): 37.3,
    ("Direct text", "receiver", "answer"): 98.8, ("Direct text", "total", "answer"): 98.8,
    ("Text relay", "sender summary", None): 744.9, ("Text relay", "receiver", "answer"): 89.7,
    ("Text relay", "total", "answer"): 834.5,
}
PROTOCOLS = ("forward", "answer")


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
    state_dir, _ = state_dir_for(cache, spec, args.profile)
    checkpoint = state_dir / f"bridge.seed{spec.training_seeds()[0]}.pt"  # the first training seed
    if not checkpoint.is_file():
        sys.exit(f"error: no trained bridge for {args.spec} ({args.profile} profile) at {checkpoint}; "
                 f"run `harness run {args.spec} --profile {args.profile}` first")
    state = torch.load(checkpoint, weights_only=True)["module"]
    sender_dim = state["normalizer.mean"].shape[0]
    bridge = LatentBridge(spec.bridge, sender_dim, receiver.model.config.hidden_size, torch.zeros(sender_dim),
                          torch.ones(sender_dim), 0.03)
    bridge.load_state_dict(state)
    bridge.eval()
    primed = ReceiverPrompt.build(receiver, task, t.primer)
    prompt = primed.text_middle(t.prompt)
    direct = ReceiverPrompt.build(receiver, task, task.instruction())

    def forward(rp: ReceiverPrompt, middle: torch.Tensor) -> None:
        D.encode(rp.lm, [middle], rp.prefix)  # one pass over the prompt, the next-token logits, nothing written

    def answer(rp: ReceiverPrompt, middle: torch.Tensor) -> None:
        D.greedy_generate(rp.lm, D.encode(rp.lm, [middle], rp.prefix), t.max_new_tokens, rp.stops)

    receivers = {"forward": forward, "answer": answer}
    samples: dict[tuple, list[float]] = {}
    items = task.eval
    for trial in range(args.warmup + args.trials):
        item = items[trial % len(items)]
        timings: dict[tuple, float] = {}
        with torch.no_grad():
            states, encode_ms = timed(lambda: compute_sender_states(sender, [task.sender_text(item)], layer))
            soft, bridge_ms = timed(lambda: bridge(*pad_states(states, receiver.device))[0][0])
            summary, summary_ms = timed(lambda: generate_texts(sender, [t.relay_template.format(input=item.input)],
                                                               t.relay_max_tokens, 1)[0])
            timings[("Bridge", "sender encode", None)] = encode_ms
            timings[("Bridge", "bridge", None)] = bridge_ms
            timings[("Text relay", "sender summary", None)] = summary_ms
            for protocol, receive in receivers.items():
                _, bridge_rx = timed(lambda: receive(primed, primed.soft_middle(soft, prompt)))
                _, direct_rx = timed(lambda: receive(direct, direct.text_middle(task.item_text(item.input))))
                _, relay_rx = timed(lambda: receive(direct, direct.text_middle(task.item_text(summary))))
                timings.update({("Bridge", "receiver", protocol): bridge_rx,
                                ("Bridge", "total", protocol): encode_ms + bridge_ms + bridge_rx,
                                ("Direct text", "receiver", protocol): direct_rx, ("Direct text", "total", protocol): direct_rx,
                                ("Text relay", "receiver", protocol): relay_rx,
                                ("Text relay", "total", protocol): summary_ms + relay_rx})
        if trial >= args.warmup:
            for key, ms in timings.items():
                samples.setdefault(key, []).append(ms)

    def p90(values):
        return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else values[0]

    rows = [{"method": m, "component": c, "protocol": p, "median_ms": statistics.median(v), "p90_ms": p90(v),
             "reported_ms": REPORTED_MS.get((m, c, p))} for (m, c, p), v in samples.items()]
    total = {(r["method"], r["protocol"]): r["median_ms"] for r in rows if r["component"] == "total"}
    device = f"{torch.get_num_threads()}-thread CPU" if receiver.device.type == "cpu" else torch.cuda.get_device_name()
    report = {
        "spec": str(args.spec.relative_to(ROOT)), "profile": args.profile, "sender": spec.sender,
        "receiver": spec.receiver, "device": device, "trials": args.trials, "warmup": args.warmup,
        "soft_tokens": spec.bridge.soft_tokens, "rows": rows,
        "relay_vs_bridge": {p: total[("Text relay", p)] / total[("Bridge", p)] for p in PROTOCOLS},
        "direct_vs_bridge": {p: total[("Direct text", p)] / total[("Bridge", p)] for p in PROTOCOLS},
        "reported_relay_vs_bridge": 834.5 / 37.3, "reported_direct_vs_bridge": 98.8 / 37.3,
        "bridge_checkpoint": str(checkpoint),
        "notes": (f"{spec.sender} -> {spec.receiver}. Protocol of the receiver's part: forward = one forward pass "
                  "over its prompt (the report's bridge timing), answer = greedy answer to its terminator (the "
                  "report's direct-text and relay timing). The report's ratios (22.4x relay/bridge, 2.6x direct/bridge) "
                  "mix the two: its bridge total is forward-only, its direct and relay totals write answers."),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for r in rows:
        reported = f"{r['reported_ms']:6.1f} ms" if r["reported_ms"] is not None else "     -"
        print(f"{r['method']:12s} {r['component']:15s} {r['protocol'] or '':8s} median {r['median_ms']:8.1f} ms   "
              f"p90 {r['p90_ms']:8.1f} ms   reported {reported}")
    for p in PROTOCOLS:
        print(f"{p}: text relay / bridge {report['relay_vs_bridge'][p]:.1f}x, direct text / bridge "
              f"{report['direct_vs_bridge'][p]:.1f}x (reported, mixed protocols: 22.4x, 2.6x)")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
