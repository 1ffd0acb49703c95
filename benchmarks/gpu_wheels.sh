#!/usr/bin/env bash
# Fetch, into .whl/ (git-ignored), the packages benchmarks/gpu_check.sh needs that a bare CUDA image with torch,
# transformers and accelerate lacks: pydantic and its needs, and bitsandbytes. Run on a machine that reaches PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-3.12}
fetch() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$@"
}
pin() { grep -i -E "^$1==" constraints.txt; }  # the versions the project is tested with
fetch "$(pin pydantic)" "$(pin pydantic_core)" "$(pin annotated-types)" "$(pin typing-inspection)"
fetch "$(pin bitsandbytes)" || echo "bitsandbytes not fetched: the int8 / NF4 checks will say so"
du -sh .whl
