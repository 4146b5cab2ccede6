#!/usr/bin/env bash
# A GPU session on a CUDA machine with this repo checked out, in steps of at most ~10
# minutes each. The extension: QKERNELS_EXTENSION=path/to/_C.so uses one built elsewhere
# against the same torch (`make cuda-check-all` builds every CUTLASS unit into
# build/cuda-all: carry it, nvcc on the GPU machine costs device time); otherwise it is
# built here.
#   bash benchmarks/gpu_session.sh test                 # pytest -m cuda + memcheck
#   bash benchmarks/gpu_session.sh bench int8_mm        # one op group of the GPU suite
#   bash benchmarks/gpu_session.sh bench linear_w8a8,linear_w8a16
#   bash benchmarks/gpu_session.sh bench lowrank_mm,lowrank_mm_backward
# Logs and results JSON (named with the device, date and ops) go to $OUT (default
# benchmarks/results); the output ends with the ratio table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv
if [ -n "${QKERNELS_EXTENSION:-}" ]; then
  QKERNELS_NO_EXT=1 pip install -q -e . --no-build-isolation || exit 1
else
  pip install -q -e ".[cuda]" --no-build-isolation || exit 1
fi
case "${1:-}" in
  test)
    python -m pytest -q -m cuda tests > "$OUT/pytest-cuda.log" 2>&1
    echo "pytest -m cuda: exit $? (log: $OUT/pytest-cuda.log)"
    tail -25 "$OUT/pytest-cuda.log"
    # memcheck over a small subset: every CUDA C++ kernel and tile once
    compute-sanitizer --tool memcheck --error-exitcode 9 python -m pytest -q -x \
      tests/test_cuda_cpp.py > "$OUT/memcheck.log" 2>&1
    echo "compute-sanitizer memcheck: exit $? (log: $OUT/memcheck.log)"
    tail -5 "$OUT/memcheck.log"
    ;;
  bench)
    device=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-').lower())")
    ops="${2:?which ops, e.g. int8_mm}"
    qkernels bench --suite gpu --ops "$ops" \
      --json "$OUT/gemm-gpu-$device-$(date +%F)-${ops//,/-}.json" > "$OUT/bench-$ops.log" 2>&1
    echo "bench $ops: exit $?"
    tail -60 "$OUT/bench-$ops.log"
    ;;
  *)
    echo "usage: $0 test | bench OPS" >&2
    exit 2
    ;;
esac
