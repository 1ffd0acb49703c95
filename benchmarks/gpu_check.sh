#!/usr/bin/env bash
# The prepared GPU check: on a machine with one CUDA GPU and no network, in about ten minutes,
#   1. the CUDA path of every kind on stand-in models, at the paper specs' dtypes (bfloat16) and with
#      bitsandbytes int8 / NF4 where the specs use them;
#   2. dry runs at real size of the largest paper specs one GPU holds: residual_gain_paper's eight models one at a
#      time, the Llama-3.1-8B -> Mistral-7B bridge (banking77_16tok) for 40 training steps (the report: about 10
#      it/s on one H100, section 85), and DeepSeek-V2-Lite's 8-bit half-life for a few chunks;
# and prints each run's measured peak memory beside `harness plan`'s, and the training steps per second.
# Mixtral-8x7B in 8 bits is not tried at real size: a dry run builds random bfloat16 weights and quantises them
# through a saved copy (about 87 GiB), more than such a machine's disk.
#
# Usage, from the repository root:  benchmarks/gpu_check.sh [OUT]   (default benchmarks/results/gpu_check/<gpu>)
# Packages a bare GPU image lacks travel as wheels in .whl/ (benchmarks/gpu_wheels.sh fetches them); nothing is
# downloaded and no model or dataset is read. Commit OUT afterwards; no test depends on it.
set -uo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "could not install the wheels in .whl/"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1
GPU=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))") || { echo "no CUDA GPU"; exit 1; }
OUT=${1:-benchmarks/results/gpu_check/$GPU}
mkdir -p "$OUT"
python3 - <<'PY' | tee "$OUT/environment.txt"
import importlib, platform, torch
print("gpu:", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB")
print("python:", platform.python_version(), "torch:", torch.__version__, "cuda:", torch.version.cuda)
for name in ("transformers", "accelerate", "bitsandbytes", "pydantic"):
    try:
        print(f"{name}:", importlib.import_module(name).__version__)
    except ImportError:
        print(f"{name}: not installed")
PY

dry() {  # dry() SECONDS ARGS...: one dry run under a time limit; a failure is logged and the check goes on
  local limit=$1; shift
  echo "== harness dry-run $*" | tee -a "$OUT/log.txt"
  timeout "$limit" python3 -m harness.cli dry-run "$@" --device cuda 2>&1 | grep -v Warning | tee -a "$OUT/log.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || echo "   FAILED (exit $rc)" | tee -a "$OUT/log.txt"
}

# 1. every kind's CUDA path, stand-in models (bfloat16 / int8 / NF4 as the specs say)
for spec in banking77_16tok gsm8k_v12_dit tre_sweep_gemma2_27b tre_sweep_gemma3_27b_int8 residual_gain_paper \
            alignment_adapters_paper halflife_mixtral_8x7b; do
  dry 60 "specs/$spec.yaml" --size stand-in --steps 2 --items 2 --tokens 4 --out "$OUT/stand-in"
done
# 2. real sizes
dry 120 specs/residual_gain_paper.yaml --size real --out "$OUT/real"
dry 180 specs/banking77_16tok.yaml --size real --steps 40 --items 4 --tokens 8 \
    --set 'evaluation.methods=[bridge,prompt_tuning,random]' --out "$OUT/real"
dry 150 specs/halflife_deepseek_v2_lite.yaml --size real --steps 3 --out "$OUT/real"

python3 -c "from harness.dryrun import summary_table; print(summary_table('$OUT'), end='')" | tee "$OUT/summary.md"
