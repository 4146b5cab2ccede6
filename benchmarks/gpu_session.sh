#!/usr/bin/env bash
# One call on a lent GPU machine (see the device tool's METHOD.md): build, the GPU
# tests, the GPU benchmark suite. Logs and the results JSON (named with the device
# and date) go to $OUT (default benchmarks/results); the output ends with the
# ratio table. A failing test does not stop the benchmark: both are worth having.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv
pip install -q -e . --no-build-isolation || exit 1
python -m pytest -q -m cuda tests > "$OUT/pytest-cuda.log" 2>&1
echo "pytest -m cuda: exit $? (log: $OUT/pytest-cuda.log)"; tail -15 "$OUT/pytest-cuda.log"
device=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-').lower())")
qkernels bench --suite gpu --json "$OUT/gemm-gpu-$device-$(date +%F).json" > "$OUT/bench-gpu.log" 2>&1
echo "bench: exit $?"; tail -60 "$OUT/bench-gpu.log"
