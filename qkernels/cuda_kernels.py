"""The CUDA C++ backend's host code: the ops' argument checks (their fake kernels), the
rule for which problems the CUTLASS GEMMs take, and the calls into qkernels._C.

A problem the C++ kernels do not take goes to the Triton kernel of the same op, so the
"cuda" backend accepts every input the op does (DESIGN.md, "CUDA C++ backend"):
  - K and N multiples of 16 (CUTLASS reads and writes 16-byte vectors), K > 0;
  - K <= MAX_EXACT_K (past it int32 sums could overflow: Triton splits K);
  - a device the build has kernels for (sm_8x: the sm_80 cubins; sm_90: sm_90a) and an
    output dtype this build instantiated (a reduced build has bfloat16 only).
linear_w8a16 takes K a positive multiple of 16 and 16-byte aligned x and wq (any N).
"""

from __future__ import annotations

import functools

import torch

from qkernels._common import MAX_EXACT_K, as_rows, device_capability
from qkernels._library import EXTENSION_ERROR
from qkernels.meta.fake_quant import (
    channel_layout,
    check_channel,
    entry_points,
    lsq_zero_point,
    param_vectors,
)
from qkernels.meta.int8_gemm import int8_mm_fake, int_mm_fake, linear_fake, quantize_rowwise_fake

ALIGN = 16  # K and N (csrc/cuda/int8_gemm_cutlass.h: kAlignK, kAlignN)
_DTYPE_NAMES = {
    torch.int32: "int32",
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
}


@functools.cache
def _c():
    from qkernels import _C

    return _C


@functools.cache
def built_ops() -> tuple[str, ...]:
    """Ops with a CUDA C++ kernel in this build of qkernels._C (asked once: every CUDA op
    call reads it)."""
    if EXTENSION_ERROR is not None:
        return ()
    return tuple(getattr(_c(), "cuda_ops", lambda: ())())


@functools.cache
def gemm_kernels() -> frozenset[str]:
    """The compiled CUTLASS GEMMs, as "sm90:bfloat16"."""
    if "int_mm" not in built_ops():
        return frozenset()
    return frozenset(_c().cuda_gemm_kernels())


def cubin_arch(capability: tuple[int, int]) -> str | None:
    """The cubins a device of this compute capability runs (the build holds sm_80 and
    sm_90a code, no PTX): sm_80's on every 8.x, sm_90a's on 9.0; none elsewhere (Triton
    runs there)."""
    major, minor = capability
    if major == 8:
        return "sm80"
    if (major, minor) == (9, 0):
        return "sm90"
    return None


def gemm_route(
    n: int,
    k: int,
    out_dtype: torch.dtype,
    capability: tuple[int, int],
    kernels: frozenset[str] | None = None,
) -> str | None:
    """None when a CUTLASS GEMM takes this problem; otherwise why it runs on Triton."""
    kernels = gemm_kernels() if kernels is None else kernels
    if k <= 0 or k % ALIGN or n % ALIGN:
        return f"K={k} and N={n} must be positive multiples of {ALIGN}"
    if k > MAX_EXACT_K:
        return f"K={k} past {MAX_EXACT_K}: int32 sums could overflow"
    arch = cubin_arch(capability)
    if arch is None:
        return f"no CUDA C++ GEMM for sm_{capability[0]}{capability[1]}"
    if f"{arch}:{_DTYPE_NAMES[out_dtype]}" not in kernels:
        return f"this build has no {arch} GEMM with {_DTYPE_NAMES[out_dtype]} output"
    return None


def _route(device: torch.device, n: int, k: int, out_dtype: torch.dtype) -> str | None:
    return gemm_route(n, k, out_dtype, device_capability(device))


def _triton(name: str):
    from qkernels import triton as qk_triton

    return getattr(qk_triton, name)


def _vector(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float().contiguous().reshape(-1)


def quantize_rowwise(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    quantize_rowwise_fake(x, bits)
    if x.shape[-1] == 0:
        return _triton("quantize_rowwise")(x, bits)
    q, s = _c().cuda_quantize_rowwise(as_rows(x), bits)
    return q.reshape(x.shape), s.reshape(x.shape[:-1])


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    int_mm_fake(a, b)
    if _route(a.device, b.shape[0], a.shape[1], torch.int32):
        return _triton("int_mm")(a, b)
    return _c().cuda_int8_gemm(a.contiguous(), b.contiguous(), None, None, None, torch.int32)


def int8_mm(a, b, a_scale, b_scale, bias=None, out_dtype=None):
    int8_mm_fake(a, b, a_scale, b_scale, bias, out_dtype)
    out_dtype = out_dtype or torch.float32
    if _route(a.device, b.shape[0], a.shape[1], out_dtype):
        return _triton("int8_mm")(a, b, a_scale, b_scale, bias, out_dtype)
    return _c().cuda_int8_gemm(
        a.contiguous(), b.contiguous(), _vector(a_scale), _vector(b_scale), _vector(bias), out_dtype
    )


def linear_w8a8(x, wq, w_scale, bias=None):
    """Per-token quantization (one CUDA pass), then the CUTLASS GEMM with the dequant
    epilogue."""
    linear_fake("linear_w8a8", x, wq, w_scale, bias)
    n, k = wq.shape
    if _route(x.device, n, k, x.dtype):
        return _triton("linear_w8a8")(x, wq, w_scale, bias)
    q, s = _c().cuda_quantize_rowwise(as_rows(x), 8)
    out = _c().cuda_int8_gemm(q, wq.contiguous(), s, _vector(w_scale), _vector(bias), x.dtype)
    return out.reshape(*x.shape[:-1], n)


def w8a16_route(x2d: torch.Tensor, wq: torch.Tensor) -> str | None:
    """None when the CUDA C++ linear_w8a16 takes these operands; otherwise why not."""
    k = wq.shape[1]
    if k <= 0 or k % ALIGN:
        return f"K={k} must be a positive multiple of {ALIGN}"
    if x2d.data_ptr() % 16 or wq.data_ptr() % 16:
        return "x or wq is not 16-byte aligned"
    return None


def linear_w8a16(x, wq, w_scale, bias=None):
    """M <= 16: one pass over the int8 weights; larger M: the weight dequantized once into
    x's dtype, then cuBLAS."""
    linear_fake("linear_w8a16", x, wq, w_scale, bias)
    n = wq.shape[0]
    x2d = as_rows(x)
    wq = wq.contiguous()
    if w8a16_route(x2d, wq):
        return _triton("linear_w8a16")(x, wq, w_scale, bias)
    out = _c().cuda_linear_w8a16(x2d, wq, _vector(w_scale), _vector(bias))
    return out.reshape(*x.shape[:-1], n)


def _fq_forward(x, layout, scale, zp, zp_in_round, qmin, qmax):
    s, inv, z = param_vectors(scale, zp)
    return _c().cuda_fake_quant_forward(x.contiguous(), s, inv, z, *layout, zp_in_round, qmin, qmax)


def _fq_backward(grad, x, layout, scale, zp, zp_in_round, qmin, qmax):
    _, inv, z = param_vectors(scale, zp)
    g = grad.contiguous().to(x.dtype)
    return _c().cuda_fake_quant_backward(
        g, x.contiguous(), inv, z, *layout, zp_in_round, qmin, qmax
    )


(
    fake_quant,
    fake_quant_backward,
    fake_quant_group,
    fake_quant_group_backward,
    fake_quant_lsq,
) = entry_points(_fq_forward, _fq_backward)


def fake_quant_lsq_backward(
    grad, x, scale, zero_point, axis: int, qmin: int, qmax: int, grad_factor=1.0
):
    """dx and the scale / zero-point gradients, summed in float64 without atomics
    (deterministic; see csrc/cuda/fake_quant.cu)."""
    check_channel("fake_quant_lsq_backward", x, scale, zero_point, axis, qmin, qmax)
    n = scale.numel()
    seg_len, n_params, along = channel_layout(x, n, axis)
    s, inv, z = param_vectors(scale, lsq_zero_point(zero_point, qmin, qmax, n == 1))
    g = grad.contiguous().to(x.dtype)
    dx, dscale, dzp = _c().cuda_fake_quant_lsq_backward(
        g, x.contiguous(), s, inv, z, seg_len, n_params, along, qmin, qmax, float(grad_factor)
    )
    zp_dtype = zero_point.dtype if zero_point.is_floating_point() else torch.float32
    return dx, dscale.float().view(scale.shape), dzp.to(zp_dtype).view(zero_point.shape)
