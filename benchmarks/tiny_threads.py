"""Tiny-profile runs (what the test suite runs) with one torch intra-op thread against two, in one run on the same
machine, alone. Beside another busy process two threads are several times slower than one (they wait on each other
for a core), which made one thread look like a win for the test suite; alone on 2 cores two threads are as fast or
faster (the 77-label search of banking77_16tok most of all), so the suite keeps torch's default.

    python benchmarks/tiny_threads.py    -> benchmarks/results/tiny_threads.json

Each spec runs in its own `harness run --profile tiny` process (the threads are fixed when torch starts), once per
thread count, alternating, so drift on the machine falls on both.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path("benchmarks/results/tiny_threads.json")
# one spec of each kind, and the bridge's heaviest tiny run (77 labels)
SPECS = ["banking77_16tok", "sst2_8tok", "gsm8k_v06", "halflife_toy_trained_local", "tre_sweep_smollm2_local",
         "alignment_procrustes_local", "residual_gain_local"]
THREADS = (1, 2)


def _run(spec: str, threads: int, scratch: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "harness.cli", "run", f"specs/{spec}.yaml", "--profile", "tiny", "--quiet",
               "--no-analyze", "--device", "cpu", "--runs-dir", str(scratch / f"runs-{threads}"),
               "--cache-dir", str(scratch / f"cache-{threads}"), "--run-id", spec]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    seconds = {t: {} for t in THREADS}
    with tempfile.TemporaryDirectory() as scratch:
        for spec in SPECS:
            for threads in THREADS:
                seconds[threads][spec] = round(_run(spec, threads, Path(scratch)), 2)
                print(spec, threads, seconds[threads][spec], flush=True)
    totals = {t: round(sum(seconds[t].values()), 1) for t in THREADS}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "seconds": {str(t): seconds[t] for t in THREADS},
              "total_seconds": {str(t): totals[t] for t in THREADS},
              "ratio_two_threads_to_one": round(totals[2] / totals[1], 2),
              "note": "wall seconds of `harness run --profile tiny` per spec, process start and imports included"}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
