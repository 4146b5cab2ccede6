"""The CUDA side of the ops: which implementation runs each op on CUDA tensors
(`set_backend` / QKERNELS_BACKEND), and how torch.compile sees inside them.

Backends: "triton" (qkernels/triton, every op), "cuda" (the CUDA C++ kernels of
qkernels._C, via qkernels/cuda_kernels.py; a problem they do not take runs on Triton),
"torch" (a few torch calls, qkernels/torch_kernels.py; the low-rank ops) and "auto", the
default: per op, device and (for linear_w8a16) rows of x, what an H200 measured fastest
(`auto_backend`).

torch.compile: the GEMM family's ops are decomposed, under AOTAutograd's
functionalization, into their Triton host code, whose launches go through
`wrap_triton` — so Inductor sees the kernels themselves (what
`torch.library.triton_op` does; done here by hand because these ops are defined
once for every device (`_library`), and CPU tensors must keep the op). An op that
resolves to the torch backend decomposes into its torch calls; one that resolves to the
C++ backend stays one opaque op in the graph.
torch.export keeps the ops whole, as it does for triton_op.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

import torch
from torch._library.triton import set_wrap_triton_enabled
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode

from qkernels import cuda_kernels, torch_kernels
from qkernels._common import check, device_capability
from qkernels._library import lib
from qkernels.op_table import BACKENDS, OPS, cuda_ops
from qkernels.op_table import op as op_def

ENV = "QKERNELS_BACKEND"
CHOICES = ("auto", *BACKENDS)

# Every op with a CUDA kernel (all have a Triton one), from the op table.
CUDA_OPS = cuda_ops()

_chosen: dict[str, str] = {}  # set_backend's choices; they override the environment


def cuda_cpp_ops() -> tuple[str, ...]:
    """Ops with a CUDA C++ kernel in this build of qkernels._C."""
    return cuda_kernels.built_ops()


# linear_w8a16 rows of x that "auto" runs on Triton although the C++ kernels are built:
# on the H200 the C++ decode kernel wins at one row only (1.20-1.37x Triton), Triton's
# split-K kernel from 2 rows (1.09x at 2, 4.5-7.4x at 16) to 1024 (even), the C++
# dequantize + cuBLAS path above (1.21x at 2048).
W8A16_TRITON_ROWS = (2, 1024)
_TORCH_FROM = (9, 0)  # "auto" takes the torch compositions on Hopper and later


def auto_backend(op: str, capability: tuple[int, int] | None, rows: int | None = None) -> str:
    """What "auto" runs `op` on, on a device of this compute capability (None: no GPU
    to ask, as when tracing with fake CUDA tensors: Triton), for `rows` rows of x where
    the choice depends on them (linear_w8a16; None: the C++ kernel). From the H200 run
    (benchmarks/results/*nvidia-h200-2026-11-28*.json, README "GPU results"):
    - the C++ kernel wherever this build has one for the arch: int8_mm 1.10-1.29x Triton
      at M=2048-8192, linear_w8a8 1.26-1.34x at M >= 1024 and 1.7-7.4x below,
      fake-quant fwd+bwd 0.98-5.8x (even in fp32); linear_w8a16 only at the rows above.
    - lowrank_mm and its backward on sm_90+: two cuBLAS matmuls, which beat the fused
      Triton kernels (forward 1.35-1.7x, backward 1.4-4.2x at rank 64, K=N=4096).
      sm_80 (not measured) keeps Triton.
    - otherwise Triton."""
    if capability is None:
        return "triton"
    cpp = op in cuda_cpp_ops() and bool(cuda_kernels.cubin_arch(capability))
    return measured_choice(op, capability, rows, cpp)


def measured_choice(op: str, capability: tuple[int, int], rows: int | None, cpp: bool) -> str:
    """auto_backend's rule given whether a C++ kernel runs on this arch (`cpp`); also
    what `make report` applies to the measured rows."""
    if "torch" in op_def(op).cuda and capability >= _TORCH_FROM:
        return "torch"
    if not cpp:
        return "triton"
    lo, hi = W8A16_TRITON_ROWS
    if op == "linear_w8a16" and rows is not None and lo <= rows <= hi:
        return "triton"
    return "cuda"


def _check_op(where: str, op: str) -> None:
    check(
        op in CUDA_OPS, where, f"unknown op {op!r}; ops with a CUDA kernel: {', '.join(CUDA_OPS)}"
    )


def _validate(where: str, backend: str, ops: Iterable[str]) -> None:
    check(
        backend in CHOICES,
        where,
        f"backend must be one of {', '.join(CHOICES)}, got {backend!r}",
    )
    for op in ops:
        _check_op(where, op)
        check(
            backend != "cuda" or op in cuda_cpp_ops(),
            where,
            f"no CUDA C++ kernel for {op} in this build of qkernels._C "
            f"(CUDA C++ ops built: {', '.join(cuda_cpp_ops()) or 'none'}); use 'triton'",
        )
        check(
            backend != "torch" or "torch" in op_def(op).cuda,
            where,
            f"no torch composition for {op} (ops with one: "
            f"{', '.join(o.name for o in OPS if 'torch' in o.cuda)}); use 'triton'",
        )


@functools.lru_cache(maxsize=8)
def _parse_env(value: str) -> dict[str, str]:
    """QKERNELS_BACKEND=triton (every op) or op=backend,op=backend (those ops).
    Cached per value: get_backend runs on every CUDA op call."""
    value = value.strip()
    if not value:
        return {}
    where = f"{ENV}={value!r}"
    if "=" not in value:
        _validate(where, value, CUDA_OPS)
        return dict.fromkeys(CUDA_OPS, value)
    choice = {}
    for item in value.split(","):
        op, sep, backend = (part.strip() for part in item.partition("="))
        check(bool(sep), where, f"expected op=backend items separated by commas, got {item!r}")
        _validate(where, backend, [op])
        choice[op] = backend
    return choice


def set_backend(backend: str, ops: str | Iterable[str] | None = None) -> None:
    """Run `ops` (default: every op with a CUDA kernel) on `backend` for CUDA tensors.
    Overrides QKERNELS_BACKEND. CPU tensors always run the C++ CPU kernels."""
    names = CUDA_OPS if ops is None else [ops] if isinstance(ops, str) else list(ops)
    _validate("set_backend", backend, names)
    _chosen.update(dict.fromkeys(names, backend))


def get_backend(op: str) -> str:
    """The backend chosen for `op` on CUDA tensors: set_backend, else QKERNELS_BACKEND,
    else "auto"."""
    if op not in CUDA_OPS:
        _check_op("get_backend", op)
    if op in _chosen:
        return _chosen[op]
    return _parse_env(os.environ.get(ENV, "")).get(op, "auto")


def resolve_backend(op: str, device: torch.device, rows: int | None = None) -> str:
    """The backend `op` runs on for tensors on `device` (and `rows` rows of x, where
    "auto" looks at them): the choice, "auto" resolved."""
    backend = get_backend(op)
    if backend == "auto":
        if not torch.cuda.is_available():
            return auto_backend(op, None)
        return auto_backend(op, device_capability(device), rows)
    return backend


def _resolve(name: str, args) -> str:
    rows = None
    if name == "linear_w8a16" and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
        rows = args[0].numel() // max(args[0].shape[-1], 1)
    return resolve_backend(name, _device(args), rows)


def _triton_fn(name: str):
    # Imported on first use: `import qkernels` must work without Triton.
    try:
        from qkernels import triton as qk_triton
    except ImportError as e:
        raise RuntimeError(f"qkernels.{name}: the CUDA kernel needs Triton ({e})") from e
    return getattr(qk_triton, name)


def _device(args) -> torch.device:
    return next(a.device for a in args if isinstance(a, torch.Tensor))


def _cuda_impl(name: str):
    def impl(*args):
        backend = _resolve(name, args)
        if backend == "cuda":
            return getattr(cuda_kernels, name)(*args)
        if backend == "torch":
            return getattr(torch_kernels, name)(*args)
        # Eager call on real tensors: launch directly, no tracing wrapper.
        with set_wrap_triton_enabled(False):
            return _triton_fn(name)(*args)

    return impl


def _on_cuda(args) -> bool:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return bool(tensors) and all(t.device.type == "cuda" for t in tensors)


def _decompose(name: str):
    def decompose(mode, op, types, args, kwargs):
        from torch.export._trace import custom_triton_ops_decomposition_disabled

        plain = all(
            t is torch.Tensor or issubclass(t, (FakeTensor, FunctionalTensor)) for t in types
        )
        if not plain or custom_triton_ops_decomposition_disabled() or not _on_cuda(args):
            return mode.__torch_dispatch__(op, types, args, kwargs)
        backend = _resolve(name, args)
        if backend == "cuda":  # one opaque op in the graph
            return mode.__torch_dispatch__(op, types, args, kwargs)
        fn = getattr(torch_kernels, name) if backend == "torch" else _triton_fn(name)
        with mode:
            return fn(*args, **kwargs)

    return decompose


for _op in OPS:
    if _op.cuda:
        lib.impl(_op.name, _cuda_impl(_op.name), "CUDA")
    if _op.traceable:
        torch.library.register_torch_dispatch(
            _op.qualname, FunctionalTensorMode, _decompose(_op.name), lib=lib
        )
