"""`harness plan`'s memory estimate against what a dry run measures, at real sizes this machine holds (CPU).

Each case runs `harness dry-run --size real --device cpu` in its own process (random weights, the published
architecture) and compares
  - the weights: the plan's bytes for the model against the resident memory its build left held, and
  - the peak: the plan's memory model (weights + the largest forward), evaluated at the shapes the run made,
    against the run's measured peak resident set above the process's start (builds excluded, see PeakMemory).
Tolerances (harness/dryrun.py, where they are explained): weights within 5% + 0.15 GiB, peak within 10% + 0.25 GiB.

    python benchmarks/dry_run_memory.py   -> benchmarks/results/dry_run_memory.json (exit 1 if outside tolerance)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.dryrun import PEAK_TOLERANCE, WEIGHTS_TOLERANCE, plan_agreement

OUT = Path("benchmarks/results/dry_run_memory.json")
CASES = [  # (label, spec, extra arguments)
    ("Gemma-3-270M float32, TRE generation", "tre_sweep_gemma3_270m_local", ["--tokens", "8", "--set", "dtype=float32"]),
    ("Gemma-3-270M bfloat16, TRE generation", "tre_sweep_gemma3_270m_local", ["--tokens", "8", "--set", "dtype=bfloat16"]),
    ("LLaMA-2-7B bfloat16, residual-stream forwards", "residual_gain_paper", ["--set", "models=[llama2_7b]", "--set", "pairs=[]", "--set", "ratios=[]"]),
]


def main(cases=CASES) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, spec, extra in cases:
            cmd = [sys.executable, "-m", "harness.cli", "dry-run", f"specs/{spec}.yaml", "--size", "real",
                   "--device", "cpu", "--out", scratch, *extra]
            subprocess.run(cmd, check=True)
            result = json.loads((Path(scratch) / f"{spec}.real.cpu.json").read_text())
            rows.append({"case": label, "spec": spec, "arguments": extra, "wall_seconds": result["wall_seconds"],
                         **plan_agreement(result)})
            print(json.dumps(rows[-1]))
    tolerance = {"weights": f"{WEIGHTS_TOLERANCE[0]:.0%} + {WEIGHTS_TOLERANCE[1] / 2**30:.2f} GiB",
                 "peak": f"{PEAK_TOLERANCE[0]:.0%} + {PEAK_TOLERANCE[1] / 2**30:.2f} GiB"}
    OUT.write_text(json.dumps({"tolerance": tolerance,
                               "cases": rows}, indent=2) + "\n")
    return 0 if all(r["within_tolerance"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
