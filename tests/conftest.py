import os

import torch

# Triton kernels run on CPU tensors in the interpreter; the switch is read when
# the kernels are defined, so it must be set before qkernels.triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from backends import ALL_ISAS, BACKENDS, Backend, triton_runs  # noqa: E402
from hypothesis import settings  # noqa: E402

import qkernels  # noqa: E402

# Property tests: a few dozen examples per op in `make test`, many more with
# HYPOTHESIS_PROFILE=slow; no deadline (first calls compile and warm caches).
settings.register_profile("ci", max_examples=30, deadline=None, database=None)
settings.register_profile("slow", max_examples=1000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def available_isas() -> list[str]:
    from qkernels import _C

    best = _C.best_cpu_isa()
    return list(ALL_ISAS[ALL_ISAS.index(best) :])


FIXTURE_TOL = {"rtol": 1e-4, "atol": 1e-6}  # 1-ulp differences of torch's ops, amplified


@pytest.fixture
def saved_with_avx2(monkeypatch):
    """The expected outputs of the saved fixtures were written on an AVX2-only CPU. The
    int8 GEMMs are exact on every ISA, but AVX512-BF16 rounds linear_w8a16's x to bf16,
    and torch's own float ops (LayerNorm, softmax, BLAS) round differently per CPU: the
    fixtures run the AVX2 kernels and compare to FIXTURE_TOL (a wrong or missing weight
    is off by orders of magnitude more); same-machine round trips stay bit-identical."""
    if "avx2" not in available_isas():
        pytest.skip("CPU lacks avx2, the path the fixtures' outputs were written with")
    monkeypatch.setenv("QKERNELS_CPU_ISA", "avx2")


@pytest.fixture(params=ALL_ISAS)
def isa(request, monkeypatch):
    """Runs the test once per CPU kernel path, forced with QKERNELS_CPU_ISA."""
    if request.param not in available_isas():
        pytest.skip(f"CPU lacks {request.param}")
    monkeypatch.setenv("QKERNELS_CPU_ISA", request.param)
    return request.param


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch) -> Backend:
    name = request.param
    if name.startswith("cpu-"):
        isa = name.removeprefix("cpu-")
        if isa not in available_isas():
            pytest.skip(f"CPU lacks {isa}")
        monkeypatch.setenv("QKERNELS_CPU_ISA", isa)
    elif name == "triton" and not triton_runs():
        pytest.skip("needs the Triton interpreter or a GPU")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if name == "cuda-cpp":  # every op with a C++ kernel on it; the others skip
        from qkernels import _backend

        monkeypatch.setattr(_backend, "_chosen", dict.fromkeys(_backend.cuda_cpp_ops(), "cuda"))
    return Backend(name)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


assert qkernels.EXTENSION_ERROR is None, f"qkernels._C failed to load: {qkernels.EXTENSION_ERROR}"
os.environ.pop("QKERNELS_CPU_ISA", None)
