"""Bridge training throughput: the naive loop against the harness's loop, in one run on one machine.

Naive: the sender runs on every step, the receiver reads the whole sequence (primer included)
every step and computes logits at every position. Harness: sender hidden states computed once
and cached, the primer encoded once (KV cache), the LM head applied only where an answer token
is predicted. Both train the same bridge on the same batches. Reported: steps/s of each, the
speed-up, and achieved FLOP/s (counted with torch's FlopCounterMode) as a share of this
machine's fp32 matmul peak, measured in the same run.

    python benchmarks/bridge_train.py [--spec specs/banking77_16tok.yaml] [--profile local] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.kinds.bridge.modules import LatentBridge, batch_diversity_loss  # noqa: E402
from harness.kinds.bridge.receiver import ReceiverPrompt  # noqa: E402
from harness.kinds.bridge.sender_states import compute_sender_states, pad_states  # noqa: E402
from harness.kinds.bridge.task import build_task  # noqa: E402
from harness.context import RunContext  # noqa: E402
from harness.fsutil import DEFAULT_CACHE_DIR  # noqa: E402
from harness.models import ModelProvider  # noqa: E402
from harness.models import lm as L  # noqa: E402
from registry import load_spec  # noqa: E402


def matmul_peak_gflops(size: int = 1536, repeats: int = 12) -> float:
    """Best sustained fp32 GEMM rate over a few rounds (the machine's practical peak)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def environment() -> tuple[Path, Path | None]:
    """The cache folder and data mirror, from the same variables the CLI reads."""
    cache = Path(os.environ.get("HARNESS_CACHE_DIR", DEFAULT_CACHE_DIR))
    mirror = Path(os.environ["HARNESS_DATA_MIRROR"]) if os.environ.get("HARNESS_DATA_MIRROR") else None
    return cache, mirror


def setup(spec_path: Path, profile: str, cache_dir: Path, mirror: Path | None):
    spec = load_spec(spec_path, profile)
    device = torch.device("cpu")
    models = ModelProvider(profile, cache_dir, device)
    ctx = RunContext(profile=profile, models=models, device=device, seed=spec.seed, work_dir=cache_dir,
                     state_dir=cache_dir, cache_dir=cache_dir, data_mirror=mirror, show_progress=False)
    task = build_task(spec, ctx)
    return spec, task, models.get(spec.sender), models.get(spec.receiver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "banking77_16tok.yaml")
    parser.add_argument("--profile", default="local", choices=["tiny", "local"])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per loop (after 2 warm-up steps)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bridge_train.json")
    args = parser.parse_args()
    cache, mirror = environment()
    spec, task, sender, receiver = setup(args.spec, args.profile, cache, mirror)
    batch, layer = spec.training.batch_size, spec.bridge.sender_layer
    n_items = batch * (args.steps + 2)
    items = task.train[:n_items]
    texts = [task.sender_text(i) for i in items]

    states = compute_sender_states(sender, texts, layer)  # the harness caches these; not timed
    stacked = torch.cat(states)
    primed = ReceiverPrompt.build(receiver, task, task.task.primer)
    prompt = primed.text_middle(task.task.prompt)
    answers = [primed.answer_ids(task.answer_text(i)) for i in items]
    torch.manual_seed(0)

    def new_bridge():
        torch.manual_seed(0)
        bridge = LatentBridge(spec.bridge, stacked.shape[-1], receiver.model.config.hidden_size, stacked.mean(0),
                              stacked.std(0), 0.03)
        return bridge, torch.optim.AdamW(bridge.parameters(), lr=spec.training.lr)

    primer_embeds = L.embed(receiver, torch.tensor(L.tokenize(receiver, task.task.primer, bos=True)))

    def naive_step(bridge, opt, idx):
        with torch.no_grad():
            hidden = compute_sender_states(sender, [texts[i] for i in idx], layer)  # sender every step
        padded, mask = pad_states(hidden, receiver.device)
        soft, _ = bridge(padded, mask)
        seqs, labels = [], []
        for s, i in zip(soft, idx):
            answer = torch.tensor(answers[i])
            seqs.append(torch.cat([primer_embeds, s, prompt, L.embed(receiver, answer)]))
            labels.append(torch.cat([torch.full((len(seqs[-1]) - len(answer),), -100), answer]))
        width = max(len(x) for x in seqs)
        embeds = torch.stack([F.pad(x, (0, 0, 0, width - len(x))) for x in seqs])
        attn = torch.stack([F.pad(torch.ones(len(x), dtype=torch.long), (0, width - len(x))) for x in seqs])
        target = torch.stack([F.pad(y, (0, width - len(y)), value=-100) for y in labels])
        logits = receiver.model(inputs_embeds=embeds, attention_mask=attn).logits.float()  # every position
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1))
        loss = loss + spec.training.diversity_weight * batch_diversity_loss(soft)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def harness_step(bridge, opt, idx):
        padded, mask = pad_states([states[i] for i in idx], receiver.device)
        soft, _ = bridge(padded, mask)
        loss = primed.answer_loss([primed.soft_middle(s, prompt) for s in soft], [answers[i] for i in idx])
        loss = loss + spec.training.diversity_weight * batch_diversity_loss(soft)
        opt.zero_grad()
        loss.backward()
        opt.step()

    peak = matmul_peak_gflops()
    results = {}
    for name, step in (("naive", naive_step), ("harness", harness_step)):
        bridge, opt = new_bridge()
        batches = [list(range(s * batch, (s + 1) * batch)) for s in range(args.steps + 2)]
        for idx in batches[:2]:
            step(bridge, opt, idx)  # warm-up
        times = []
        for idx in batches[2:]:
            start = time.perf_counter()
            step(bridge, opt, idx)
            times.append(time.perf_counter() - start)
        with FlopCounterMode(display=False) as counter:
            step(bridge, opt, batches[2])
        flops = counter.get_total_flops()
        seconds = statistics.median(times)
        results[name] = {"median_step_s": seconds, "steps_per_s": 1 / seconds, "gflop_per_step": flops / 1e9,
                         "achieved_gflops": flops / seconds / 1e9, "share_of_peak": flops / seconds / 1e9 / peak}
    report = {
        "spec": str(args.spec.relative_to(ROOT)), "profile": args.profile, "sender": spec.sender,
        "receiver": spec.receiver, "batch_size": batch, "soft_tokens": spec.bridge.soft_tokens,
        "timed_steps": args.steps, "matmul_peak_gflops": peak, "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), **results,
        "speedup": results["naive"]["median_step_s"] / results["harness"]["median_step_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    for name in ("naive", "harness"):
        r = results[name]
        print(f"{name:8s} {r['median_step_s']:.3f} s/step  {r['steps_per_s']:.2f} steps/s  "
              f"{r['gflop_per_step']:.1f} GFLOP/step  {r['achieved_gflops']:.1f} GFLOP/s = {100 * r['share_of_peak']:.0f}% of peak")
    print(f"speed-up {report['speedup']:.2f}x  -> {args.out}")


if __name__ == "__main__":
    main()
