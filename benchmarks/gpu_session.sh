#!/usr/bin/env bash
# A GPU session on a CUDA machine with this repo checked out. The extension:
# QKERNELS_EXTENSION=path/to/_C.so uses one built elsewhere against the GPU machine's
# torch and Python (`make gpu-ext GPU_PYTHON=python3.12 GPU_TORCH=2.11.0` builds every
# CUTLASS unit into build/gpu-ext; nvcc on the GPU machine costs device time) and runs the
# package from the checkout (nothing installed); otherwise it is built and installed here.
#   bash benchmarks/gpu_session.sh test                 # the GPU tests, then memcheck
#   bash benchmarks/gpu_session.sh bench int8_mm        # one op group of the GPU suite
#   bash benchmarks/gpu_session.sh bench linear_w8a8,linear_w8a16 quick
#   bash benchmarks/gpu_session.sh bench stream         # fake-quant bandwidth, Int8LSTM
#   bash benchmarks/gpu_session.sh bench model          # Llama / BERT / QAT-step end to end
#   bash benchmarks/gpu_session.sh lease                # device call 1: tests, memcheck
#   bash benchmarks/gpu_session.sh lease-bench          # device call 2: the speed tables
#   bash benchmarks/gpu_session.sh lease-all            # one call: tests, memcheck, models
#   bash benchmarks/gpu_session.sh lease-next           # compiled decode, AVX-512 host tests
# Logs and results JSON (named with the device, date and ops) go to $OUT (default
# benchmarks/results); the output ends with the ratio tables.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -n "${QKERNELS_EXTENSION:-}" ]; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  $PY -m pip install -q -e ".[cuda]" --no-build-isolation || exit 1
fi

info() {
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  $PY -m qkernels.cli info || exit 1
}

# The op tests on the Triton and CUDA backends (the `backend` fixture's triton, cuda and
# cuda-cpp parameters) and every test marked cuda (not the compile-only checks, which CI
# runs). $1: seconds at most.
run_tests() {
  timeout "$1" $PY -m pytest -v -n 15 --tb=short -rfE -p no:cacheprovider --timeout 120 \
    -k "(triton or cuda) and not compiles_for and not fused_into" tests/test_cuda_cpp.py tests/test_cuda.py \
    tests/test_cuda_backend.py tests/ops > "$OUT/pytest-gpu.log" 2>&1
  echo "pytest (triton / cuda backends): exit $? (log: $OUT/pytest-gpu.log)"
  # -v: every result has its line, so a run cut short still names its failures
  grep -c " PASSED " "$OUT/pytest-gpu.log"
  grep " FAILED \| ERROR " "$OUT/pytest-gpu.log" | sed 's/^\[gw[0-9]*\] \[ *[0-9]*%\] //' | head -60
  tail -3 "$OUT/pytest-gpu.log"
}

# compute-sanitizer memcheck over every CUDA C++ kernel and tile once (bf16 output only for
# the every-tile test: the other output dtypes share the kernels' loads). $1: seconds.
run_memcheck() {
  timeout "$1" compute-sanitizer --tool memcheck --error-exitcode 9 \
    $PY -m pytest -q -p no:cacheprovider -k "not every_tile or bfloat16" tests/test_cuda_cpp.py \
    > "$OUT/memcheck.log" 2>&1
  echo "compute-sanitizer memcheck: exit $? (log: $OUT/memcheck.log)"
  tail -5 "$OUT/memcheck.log"
}

# One op group of the GPU suite. $1: ops, $2: shapes (full | quick), $3: seconds at most,
# $4: seconds of CUDA-graph replays per sample (10 samples each), $5: only these M.
run_bench() {
  local device ms=()
  device=$($PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-').lower())")
  [ -n "${5:-}" ] && ms=(--m "$5")
  timeout "$3" $PY -m qkernels.cli bench --suite gpu --ops "$1" --shapes "$2" --min-run-time "$4" \
    "${ms[@]}" --json "$OUT/gemm-gpu-$device-$(date +%F)-$2-${1//,/-}${5:+-m${5//,/-}}.json" \
    >> "$OUT/bench.log" 2>&1
  echo "bench $1 ($2): exit $?"
}

# Fake-quant against the copy bandwidth, Int8LSTM against cuDNN. $1: seconds at most.
run_stream() {
  timeout "$1" $PY -m qkernels.cli bench --suite gpu-stream \
    --json "$OUT/stream-gpu-$(date +%F).json" >> "$OUT/bench.log" 2>&1
  echo "bench gpu-stream: exit $?"
}

# Llama-shaped prefill / decode, BERT embedding throughput, the QAT step. $1: seconds.
# $2: --compile to add decode with a static KV cache (CUDA graphs: no Python per call).
run_model() {
  local device
  device=$($PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-').lower())")
  timeout "$1" $PY -m qkernels.cli bench --suite gpu-model ${2:-} \
    --json "$OUT/model-gpu${2:+-compiled}-$device-$(date +%F).json" >> "$OUT/bench.log" 2>&1
  echo "bench gpu-model ${2:-}: exit $?"
}

# The C++ CPU kernels' AVX-512 paths on the GPU machine's host CPU (an AVX-512 VNNI + BF16
# Xeon on the H200 machines; this repo's CPU machine has AVX2 only). $1: seconds.
run_avx512() {
  timeout "$1" $PY -m pytest -q -n 15 -p no:cacheprovider --timeout 100 -k avx512 tests/ops \
    > "$OUT/pytest-avx512.log" 2>&1
  echo "pytest -k avx512 (host CPU): exit $?"
  grep "^FAILED" "$OUT/pytest-avx512.log" | head -20
  tail -1 "$OUT/pytest-avx512.log"
}

case "${1:-}" in
  test)
    info
    run_tests 600
    run_memcheck 300
    ;;
  bench)
    case "${2:-}" in
      stream) run_stream 600 ;;
      model) run_model 600 ;;
      *) run_bench "${2:?which ops, e.g. int8_mm, or stream, model}" "${3:-full}" 600 0.1 ;;
    esac
    tail -80 "$OUT/bench.log"
    ;;
  lease) # device call 1 (under 7 minutes): correctness, each step bounded
    info > "$OUT/info.log" 2>&1 || { cat "$OUT/info.log"; exit 1; }
    head -3 "$OUT/info.log"
    run_tests 330
    run_memcheck 60
    ;;
  lease-all) # one device call (under 9.5 minutes): correctness, memcheck, the end-to-end models
    info > "$OUT/info.log" 2>&1 || { cat "$OUT/info.log"; exit 1; }
    head -3 "$OUT/info.log"
    run_tests 290
    run_memcheck 80
    run_model 150
    grep "^  op=\|Error\|error:\|tokens/s\|sequences/s\| ms " "$OUT/bench.log" | cut -c1-330
    ;;
  lease-next) # one call (under 9 minutes): what the second H200 session left open
    info > "$OUT/info.log" 2>&1 || { cat "$OUT/info.log"; exit 1; }
    run_avx512 90
    $PY tools/host_overhead.py > "$OUT/host-overhead.log" 2>&1; cat "$OUT/host-overhead.log"
    run_model 380 --compile
    grep "tokens/s\|sequences/s\| ms " "$OUT/bench.log" | cut -c1-330
    ;;
  lease-bench) # device call 2 (under 6 minutes; both calls fit 15 device minutes): the speed tables
    info > "$OUT/info.log" 2>&1 || { cat "$OUT/info.log"; exit 1; }
    run_bench int8_mm,linear_w8a8 quick 100 0.03
    run_bench linear_w8a16,lowrank_mm,lowrank_mm_backward quick 80 0.03
    run_stream 45
    run_model 120
    grep "^  op=\|Error\|error:\|copy on\|LSTM\|fwd+bwd\|tokens/s\|sequences/s\| ms " \
      "$OUT/bench.log" | cut -c1-330
    ;;
  *)
    echo "usage: $0 test | bench OPS [full|quick] | bench stream | bench model | lease | lease-bench | lease-all | lease-next" >&2
    exit 2
    ;;
esac
