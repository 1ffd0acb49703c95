"""Bridge training on N processes against one, through the real `harness run` path, in one run on one machine.

Runs the spec's bridge training (the bridge method only, a few evaluation items, no quick
evaluation) once as one process and once under `accelerate launch --num_processes N` (on a
machine without GPUs each process uses the CPU and gloo, one thread each, as torchrun sets
it), with separate caches so nothing trained is reused. Reported: training steps per second
of each (from run.json's `training.bridge` phase), the speed-up, and shard correctness: the
largest relative difference between the two runs' logged losses and gradient norms at every
step (the global-batch values), per step: equal up to float summation order at step 1, a difference
that training (Adam) then amplifies step by step.

    python benchmarks/sharded_train.py [--spec specs/banking77_16tok.yaml] [--steps 20] [--processes 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(launcher: list[str], spec: Path, profile: str, steps: int, processes: int, work: Path) -> dict:
    results, cache = work / "results", work / "cache"
    cmd = [*launcher, "run", str(spec), "--profile", profile, "--quiet", "--no-analyze",
           "--results-dir", str(results), "--cache-dir", str(cache),
           "--set", f"training.steps={steps}", "--set", "training.seeds=[0]", "--set", "evaluation.methods=[bridge]",
           "--set", f"task.eval_items={processes}", "--set", f"training.quick_eval_every={steps + 1}",
           "--set", f"training.checkpoint_every={steps}"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[:6])} ... failed:\n{done.stderr[-2000:]}")
    run_dir = next(p for p in results.iterdir() if not p.name.startswith("."))
    info = json.loads((run_dir / "run.json").read_text())
    with open(run_dir / "curves.csv") as f:
        curves = [r for r in csv.DictReader(f) if r["run"] == "bridge"]
    return {"seconds": info["phases"]["training.bridge"], "processes": info["hardware"]["processes"], "curves": curves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "specs" / "banking77_16tok.yaml")
    parser.add_argument("--profile", default="local", choices=["tiny", "local"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sharded_train.json")
    args = parser.parse_args()
    one_launcher = [sys.executable, "-m", "harness.cli"]
    many_launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                     str(args.processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                     "-m", "harness.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        one = run(one_launcher, args.spec, args.profile, args.steps, args.processes, Path(tmp) / "one")
        many = run(many_launcher, args.spec, args.profile, args.steps, args.processes, Path(tmp) / "many")
    # per step, the largest relative difference over the logged values: step 1 shows the sharding's own error
    # (float summation order); later steps also show how training (Adam) amplifies it
    by_step = [max(abs(float(a[k]) - float(b[k])) / max(abs(float(a[k])), 1e-12)
                   for k in ("total_loss", "lm_loss", "diversity_loss", "grad_norm"))
               for a, b in zip(one["curves"], many["curves"])]
    worst = max(by_step)
    report = {
        "spec": str(args.spec.relative_to(ROOT)), "profile": args.profile, "steps": args.steps,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "one_process": {"training_seconds": one["seconds"], "steps_per_s": args.steps / one["seconds"]},
        f"{args.processes}_processes": {"training_seconds": many["seconds"], "steps_per_s": args.steps / many["seconds"],
                                        "processes_recorded": many["processes"]},
        "speedup": one["seconds"] / many["seconds"],
        "max_relative_difference": worst, "steps_compared": len(by_step),
        "relative_difference_by_step": by_step,
        "note": "training phase only (the bridge; sender states, model loading and evaluation excluded)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"1 process: {report['one_process']['steps_per_s']:.3f} steps/s; {args.processes} processes: "
          f"{report[f'{args.processes}_processes']['steps_per_s']:.3f} steps/s; speed-up {report['speedup']:.2f}x; "
          f"largest relative difference of logged losses / gradient norms over {report['steps_compared']} steps: "
          f"{worst:.2e}  -> {args.out}")


if __name__ == "__main__":
    main()
