# Set-up is part of every target: a fresh machine needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC := torch>=2.11,<2.15
DEPS_STAMP := $(VENV)/.deps-installed
BUILD_STAMP := $(VENV)/.qkernels-built
# The CUDA C++ kernels build where nvcc and a CUDA build of torch are (setup.py decides).
# reduced: only the bfloat16-output CUTLASS GEMMs, one tile each (each instantiation unit
# is minutes of nvcc on 2 cores); `make cuda-check-all` builds and checks every one.
CUDA_KERNELS ?= reduced
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)

.PHONY: all demo test test-slow lint report bench bench-ci cmake-test sanitize cuda-check \
	cuda-check-all gpu-ext wheel-check clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first: the C++ build imports it (no build isolation, so it builds
# against the torch that will run it). The editable install skips the extension
# (QKERNELS_NO_EXT): the next target builds it once, in place.
$(DEPS_STAMP): $(PY) pyproject.toml
	$(PIP) install -q "$(TORCH_SPEC)" setuptools wheel ninja
	QKERNELS_NO_EXT=1 $(PIP) install -q -e ".[dev,cuda]" --no-build-isolation
	touch $@

$(BUILD_STAMP): $(DEPS_STAMP) setup.py $(CSRC)
	QKERNELS_CUDA_KERNELS=$(CUDA_KERNELS) $(PY) setup.py -q build_ext --inplace
	touch $@

demo: $(BUILD_STAMP)
	$(PY) -m qkernels.demo

lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check qkernels tests benchmarks examples tools setup.py

# Two pytest workers (-n 2): most tests are single-threaded Python (the Triton interpreter,
# subprocess start-up), so the 2-core CI machine runs them in ~60% of the time.
test: $(BUILD_STAMP) lint
	$(PY) -m pytest -q -n 2 -m "not slow" tests
	$(MAKE) bench-ci
	$(MAKE) cuda-check
	$(MAKE) sanitize

# The CUDA build without a GPU: it imports here with its CUDA ops listed, the GEMMs use
# int8 tensor-core instructions, nothing spills, shared memory fits (tools/cuda_check.py);
# then the same build as a wheel installs into a fresh venv and passes CPU op tests.
HAS_CUDA_BUILD = $(PY) -c "import sys; from qkernels import _C; sys.exit(not _C.built_with_cuda())"
cuda-check: $(BUILD_STAMP)
	@if $(HAS_CUDA_BUILD); then $(PY) tools/cuda_check.py && $(MAKE) wheel-check; \
	else echo "cuda-check: skipped (no CUDA toolkit or a CPU-only torch: a CPU-only build)"; fi

cuda-check-all: $(DEPS_STAMP)
	QKERNELS_CUDA=1 QKERNELS_CUDA_KERNELS=all $(PY) setup.py -q build_ext \
	  --build-lib build/cuda-all --build-temp build/cuda-all-obj
	$(PY) tools/cuda_check.py "$$(ls build/cuda-all/qkernels/_C*.so)"

# The extension for a GPU machine, built here (nvcc there costs device time): against that
# machine's torch and Python, every CUTLASS unit. Carry build/gpu-ext to the GPU machine and
# point QKERNELS_EXTENSION at its .so (benchmarks/gpu_session.sh). The H200 image of
# 2026-11 had torch 2.11.0+cu130 on Python 3.12.
GPU_PYTHON ?= python3.12
GPU_TORCH ?= 2.11.0
gpu-ext:
	$(GPU_PYTHON) -m venv build/gpu-venv
	build/gpu-venv/bin/python -m pip install -q torch==$(GPU_TORCH) numpy ninja setuptools \
	  wheel safetensors tqdm nvidia-cutlass==4.2.0.0
	QKERNELS_CUDA=1 QKERNELS_CUDA_KERNELS=all build/gpu-venv/bin/python setup.py -q build_ext \
	  --build-lib build/gpu-ext --build-temp build/gpu-ext-obj
	@ls build/gpu-ext/qkernels/_C*.so

# pip wheel builds in-tree with the same flags as the in-place build, so ninja reuses its
# objects. The fresh venv sees the dev venv's packages through a .pth line (not its
# editable qkernels: .pth files of an added directory are not run).
WHEEL_VENV := build/wheel-venv
PURELIB = -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"
wheel-check: $(BUILD_STAMP)
	rm -rf build/wheel $(WHEEL_VENV)
	QKERNELS_CUDA=1 QKERNELS_CUDA_KERNELS=$(CUDA_KERNELS) $(PIP) wheel -q --no-deps \
	  --no-build-isolation -w build/wheel .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(PY) $(PURELIB) > "$$($(WHEEL_VENV)/bin/python $(PURELIB))/dev-venv.pth"
	$(WHEEL_VENV)/bin/python -m pip install -q --no-deps build/wheel/qkernels-*.whl
	cd build && wheel-venv/bin/python -c "import qkernels, sys; \
	  sys.exit(0 if 'wheel-venv' in qkernels.__file__ and qkernels._C.built_with_cuda() else \
	  f'not the wheel: {qkernels.__file__}')"
	cd build && wheel-venv/bin/python -m pytest -q -p no:cacheprovider ../tests/ops/test_int8_gemm.py \
	  -k "cpu and not triton"

# AddressSanitizer + UndefinedBehaviorSanitizer: csrc/ built into build/sanitize (-O1),
# then the op tests of the C++ CPU kernels run against that build. Python and torch are
# not instrumented, so libasan is preloaded and leak checking is off.
SANITIZE_ENV = QKERNELS_EXTENSION="$$(ls build/sanitize/qkernels/_C*.so)" \
	LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
sanitize: $(DEPS_STAMP)
	QKERNELS_CUDA=0 QKERNELS_SANITIZE=1 $(PY) setup.py -q build_ext --build-lib build/sanitize \
	  --build-temp build/sanitize-obj
	$(SANITIZE_ENV) $(PY) -m pytest -q -p no:cacheprovider tests/ops/test_sanitized_build.py
	$(SANITIZE_ENV) $(PY) -m pytest -q -n 2 -p no:cacheprovider -m "not slow" tests/ops \
	  -k "not triton and not cuda and not properties"

# The long tests (e.g. 20 real SIGKILLs of a fine-tuning run, each resumed).
test-slow: $(BUILD_STAMP)
	$(PY) -m pytest -q -m slow tests

# One small shape of the benchmark suite, so it cannot rot.
bench-ci: $(BUILD_STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-min-rounds=3 --benchmark-max-time=0.2
	$(VENV)/bin/qkernels bench --suite all --shapes ci --peers --min-run-time 0.05 --json -
	TRITON_INTERPRET=1 $(VENV)/bin/qkernels bench --suite gpu --shapes ci --min-run-time 0.01 --json -
	$(VENV)/bin/qkernels bench --suite gpu-stream --shapes ci --json -

# Charts and the README's Results section from the committed benchmark JSON.
report: $(BUILD_STAMP)
	$(PY) tools/report.py

bench: $(BUILD_STAMP)
	$(VENV)/bin/qkernels bench --suite all

# Builds csrc/ against libtorch with CMake and runs the C++-side test.
cmake-test: $(DEPS_STAMP)
	cmake -S . -B cmake-build -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c "import torch.utils; print(torch.utils.cmake_prefix_path)")" \
	  -DTORCH_CXX11_ABI="$$($(PY) -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")"
	cmake --build cmake-build -j 2
	cd cmake-build && ctest --output-on-failure

clean:
	rm -rf build cmake-build qkernels/_C*.so $(BUILD_STAMP)
