#!/usr/bin/env bash
# One call on a lent GPU machine (see the device tool's METHOD.md): build, the GPU
# tests, the GPU benchmark suite. Results go to $OUT (or benchmarks/results) as JSON
# named with the device and date; the log's last lines are the ratio table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv
pip install -q -e . --no-build-isolation
python -m pytest -q -m cuda tests 2>&1 | tail -20
device=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-').lower())")
qkernels bench --suite gpu --json "$OUT/gemm-gpu-$device-$(date +%F).json" 2>&1 | tail -80
