"""What the `backend` fixture (conftest.py) hands a test. Each op test runs once per
implementation of the op: every C++ CPU ISA the machine has (forced with
QKERNELS_CPU_ISA), the Triton kernels (under the interpreter on CPU, as CI runs them,
or on a GPU), the op's CUDA dispatch ("cuda": the default "auto" choice) and its CUDA
C++ kernels ("cuda-cpp": set_backend("cuda"); skipped for ops without one) when a GPU
is present."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from qkernels import cuda_kernels

ALL_ISAS = ("avx512_vnni", "avx2", "scalar")
BACKENDS = (*(f"cpu-{isa}" for isa in ALL_ISAS), "triton", "cuda", "cuda-cpp")


def triton_runs() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()


# Triton tests skip only when no Triton can run; an import error inside
# qkernels.triton is a failure, never a skip.
needs_triton = pytest.mark.skipif(not triton_runs(), reason="needs the Triton interpreter or a GPU")
triton_ops = importlib.import_module("qkernels.triton") if triton_runs() else None
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _move(value, device: str):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_move(v, device) for v in value)
    return value


def lora_adapter_bound(x, a, b, scaling: float) -> torch.Tensor:
    """Elementwise bound on the error of scaling (x a^T) b^T computed with x, a, t = x a^T
    and scaling b each rounded to bf16 (unit roundoff 2^-8: 8 significant bits) and summed in
    fp32: 2^-6 (|x| |a|^T)
    |scaling b|^T, second-order and fp32-sum terms included (DESIGN.md, "LoRA on an int8
    base")."""
    k, r = a.shape[1], a.shape[0]
    reach = (x.double().abs() @ a.double().abs().T) @ (abs(scaling) * b.double().abs()).T
    return reach * (2**-6 * (1 + 2**-6) + (k + r) * 2**-23)


class Backend:
    """Calls an op by name on this backend's device and brings the result to the CPU."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.device = {"triton": TRITON_DEVICE, "cuda": "cuda", "cuda-cpp": "cuda"}.get(name, "cpu")
        # The interpreter runs a kernel at Python speed: keep its shapes small.
        self.interpreted = name == "triton" and self.device == "cpu"

    @property
    def w8a16_rounds_x_to_bf16(self) -> bool:
        """linear_w8a16(_act) on the AVX512-BF16 kernels (DESIGN.md, "CPU numerics")."""
        from qkernels import _C

        return (
            self.name == "cpu-avx512_vnni"
            and "avx512_bf16" in _C.cpu_features().split()
            and os.environ.get("QKERNELS_CPU_BF16") != "0"
        )

    @property
    def lora_adapter_in_bf16(self) -> bool:
        """lora_w8a8 / lora_w8a16's adapter in bf16 pairs: where linear_w8a16 rounds x to
        bf16 (DESIGN.md, "LoRA on an int8 base"); bounded by `lora_adapter_bound`."""
        return self.w8a16_rounds_x_to_bf16

    @property
    def lora_dx_in_bf16(self) -> bool:
        """lora_backward's base GEMM in bf16 (CPU with AVX512-BF16; DESIGN.md, "LoRA on
        an int8 base")."""
        from qkernels.meta.lora import dx_in_bf16

        return self.device == "cpu" and dx_in_bf16()

    def skip_if_slow(self, work: int, limit: int = 2_000_000) -> None:
        """Skip shapes whose work (multiply-adds, elements) the interpreter would spend
        seconds on; every backend with compiled kernels runs them all."""
        if self.interpreted and work > limit:
            pytest.skip(f"work over {limit}: too slow for the Triton interpreter")

    def op(self, name: str):
        if self.name == "triton":
            return getattr(triton_ops, name)
        if self.name == "cuda-cpp" and name not in cuda_kernels.built_ops():
            pytest.skip(f"no CUDA C++ kernel for {name} in this build")
        return getattr(torch.ops.qkernels, name)

    def __call__(self, name: str, *args, host: tuple = ()):
        """op(*args, *host) with args on this backend's device; `host` arguments (such
        as a PackedSequence's batch_sizes) stay on the CPU."""
        return _move(self.op(name)(*_move(args, self.device), *host), "cpu")

    def __repr__(self) -> str:
        return self.name
