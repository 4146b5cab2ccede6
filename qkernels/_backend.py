"""The CUDA side of the ops: which implementation runs each op on CUDA tensors
(`set_backend` / QKERNELS_BACKEND), and how torch.compile sees inside them.

Backends: "triton" (qkernels/triton, every op) and "cuda" (CUDA C++ kernels in
qkernels._C; none are built yet, so choosing it raises, naming the op).

torch.compile: the GEMM family's ops are decomposed, under AOTAutograd's
functionalization, into their Triton host code, whose launches go through
`wrap_triton` — so Inductor sees the kernels themselves (what
`torch.library.triton_op` does; done here by hand because these ops are defined
once for every device (`_library`), and CPU tensors must keep the op).
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

from qkernels._common import check
from qkernels._library import EXTENSION_ERROR, lib
from qkernels.op_table import BACKENDS, OPS, cuda_ops

ENV = "QKERNELS_BACKEND"

# Every op with a CUDA kernel (all have a Triton one), from the op table.
CUDA_OPS = cuda_ops()

_chosen: dict[str, str] = {}  # set_backend's choices; they override the environment


def cuda_cpp_ops() -> tuple[str, ...]:
    """Ops with a CUDA C++ kernel in this build of qkernels._C."""
    if EXTENSION_ERROR is not None:
        return ()
    from qkernels import _C

    return tuple(getattr(_C, "cuda_ops", lambda: ())())


def _check_op(where: str, op: str) -> None:
    check(
        op in CUDA_OPS, where, f"unknown op {op!r}; ops with a CUDA kernel: {', '.join(CUDA_OPS)}"
    )


def _validate(where: str, backend: str, ops: Iterable[str]) -> None:
    check(
        backend in BACKENDS,
        where,
        f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}",
    )
    for op in ops:
        _check_op(where, op)
        check(
            backend != "cuda" or op in cuda_cpp_ops(),
            where,
            f"no CUDA C++ kernel for {op} in this build of qkernels._C "
            f"(CUDA C++ ops built: {', '.join(cuda_cpp_ops()) or 'none'}); use 'triton'",
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
    """The backend `op` runs on for CUDA tensors: set_backend, else QKERNELS_BACKEND,
    else triton."""
    if op not in CUDA_OPS:
        _check_op("get_backend", op)
    if op in _chosen:
        return _chosen[op]
    return _parse_env(os.environ.get(ENV, "")).get(op, "triton")


def _triton_fn(name: str):
    # Imported on first use: `import qkernels` must work without Triton.
    try:
        from qkernels import triton as qk_triton
    except ImportError as e:
        raise RuntimeError(f"qkernels.{name}: the CUDA kernel needs Triton ({e})") from e
    return getattr(qk_triton, name)


def _cuda_impl(name: str):
    def impl(*args):
        if get_backend(name) == "cuda":
            from qkernels import _C

            return getattr(_C, f"cuda_{name}")(*args)
        # Eager call on real tensors: launch directly, no tracing wrapper.
        with set_wrap_triton_enabled(False):
            return _triton_fn(name)(*args)

    return impl


def _on_cuda(args) -> bool:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return bool(tensors) and all(t.device.type == "cuda" for t in tensors)


def _decompose_into_triton(name: str):
    def decompose(mode, op, types, args, kwargs):
        from torch.export._trace import custom_triton_ops_decomposition_disabled

        plain = all(
            t is torch.Tensor or issubclass(t, (FakeTensor, FunctionalTensor)) for t in types
        )
        if (
            not plain
            or custom_triton_ops_decomposition_disabled()
            or not _on_cuda(args)
            or get_backend(name) != "triton"
        ):
            return mode.__torch_dispatch__(op, types, args, kwargs)
        with mode:
            return _triton_fn(name)(*args, **kwargs)

    return decompose


for _op in OPS:
    if _op.cuda:
        lib.impl(_op.name, _cuda_impl(_op.name), "CUDA")
    if _op.traceable:
        torch.library.register_torch_dispatch(
            _op.qualname, FunctionalTensorMode, _decompose_into_triton(_op.name), lib=lib
        )
