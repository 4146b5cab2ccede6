"""Triton kernels for the int8 GEMM family and lowrank_mm (the CUDA implementation;
CPU-testable with TRITON_INTERPRET=1). Same signatures and numbers as the ops.

Status: correct against reference.py under the interpreter; NOT yet run or tuned
on a GPU. `gemm_configs` is therefore one reasonable starting point per arch, not
a measured choice (see its docstring).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from qkernels._lowrank_registry import _lowrank_mm_fake
from qkernels._registry import _int8_mm_fake, _int_mm_fake, _linear_fake, _quantize_rowwise_fake
from qkernels.triton._common import round_half_even

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
# Trap: the interpreter's bf16 tl.dot returns garbage (fp16 is fine), so under the
# interpreter bf16 operands are widened to fp32 first; GPUs run the native bf16 dot.
UPCAST_BF16 = INTERPRET


def gemm_configs(arch: str | None = None) -> dict:
    """Block sizes per GPU arch. Untuned: the tile shapes int8 tensor cores want
    (K step 32/64 bytes, 64-128 wide tiles) — sm_90 gets larger tiles for its larger
    shared memory. To be replaced by a measured autotune table when a GPU is lent;
    the interpreter uses small tiles so CPU tests stay fast."""
    if INTERPRET or arch is None:
        return {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}
    if arch == "sm_90":
        return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}
    return {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64}  # sm_80 and others


def _arch(t: torch.Tensor) -> str | None:
    if t.device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(t.device)
    return f"sm_{major}{minor}"


@triton.jit
def _row_absmax_scale(x_ptr, m, k, ldx, offs_m, qmax, BLOCK_K: tl.constexpr):
    amax = tl.zeros((offs_m.shape[0],), tl.float32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_m[:, None] < m) & (offs_k[None, :] < k)
        x = tl.load(x_ptr + offs_m[:, None] * ldx + offs_k[None, :], mask=mask, other=0.0)
        amax = tl.maximum(amax, tl.max(tl.abs(x.to(tl.float32)), axis=1))
    return tl.where(amax == 0.0, 1.0, tl.math.div_rn(amax, qmax))


@triton.jit
def _quantize(x, scale, qmax):
    # div_rn: IEEE division, as reference.quantize_rowwise (not an approximate divide).
    q = round_half_even(tl.math.div_rn(x.to(tl.float32), scale[:, None]))
    return tl.minimum(tl.maximum(q, -qmax), qmax)


@triton.jit
def _quantize_rows_kernel(
    x_ptr, q_ptr, s_ptr, m, k, qmax, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    scale = _row_absmax_scale(x_ptr, m, k, k, offs_m, qmax, BLOCK_K)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_m[:, None] < m) & (offs_k[None, :] < k)
        x = tl.load(x_ptr + offs_m[:, None] * k + offs_k[None, :], mask=mask, other=0.0)
        tl.store(
            q_ptr + offs_m[:, None] * k + offs_k[None, :],
            _quantize(x, scale, qmax).to(tl.int8),
            mask=mask,
        )
    tl.store(s_ptr + offs_m, scale, mask=offs_m < m)


@triton.jit
def _int8_gemm_kernel(
    a_ptr,
    b_ptr,
    a_scale_ptr,
    b_scale_ptr,
    bias_ptr,
    out_ptr,
    m,
    n,
    k,
    QUANTIZE_A: tl.constexpr,
    DEQUANT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """acc = A @ B^T in int32 (A int8, or float quantized per row on load), then
    int32 out, or acc * a_scale * b_scale + bias in out_ptr's dtype."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    if QUANTIZE_A:
        a_scale = _row_absmax_scale(a_ptr, m, k, k, offs_m, 127.0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        amask = (offs_m[:, None] < m) & (offs_k[None, :] < k)
        a = tl.load(a_ptr + offs_m[:, None] * k + offs_k[None, :], mask=amask, other=0)
        if QUANTIZE_A:
            a = _quantize(a, a_scale, 127.0).to(tl.int8)
        bmask = (offs_k[:, None] < k) & (offs_n[None, :] < n)
        b = tl.load(b_ptr + offs_n[None, :] * k + offs_k[:, None], mask=bmask, other=0)
        acc += tl.dot(a, b, out_dtype=tl.int32)
    omask = (offs_m[:, None] < m) & (offs_n[None, :] < n)
    optrs = out_ptr + offs_m[:, None] * n + offs_n[None, :]
    if DEQUANT:
        if not QUANTIZE_A:
            a_scale = tl.load(a_scale_ptr + offs_m, mask=offs_m < m, other=0.0)
        b_scale = tl.load(b_scale_ptr + offs_n, mask=offs_n < n, other=0.0)
        out = acc.to(tl.float32) * a_scale[:, None] * b_scale[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + offs_n, mask=offs_n < n, other=0.0).to(tl.float32)[None, :]
        tl.store(optrs, out.to(out_ptr.dtype.element_ty), mask=omask)
    else:
        tl.store(optrs, acc, mask=omask)


@triton.jit
def _w8a16_kernel(
    x_ptr,
    w_ptr,
    w_scale_ptr,
    bias_ptr,
    out_ptr,
    m,
    n,
    k,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """x (fp32/bf16/fp16) @ int8 w^T, the weight widened to x's dtype in registers."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + offs_m[:, None] * k + offs_k[None, :],
            mask=(offs_m[:, None] < m) & (offs_k[None, :] < k),
            other=0.0,
        )
        w = tl.load(
            w_ptr + offs_n[None, :] * k + offs_k[:, None],
            mask=(offs_k[:, None] < k) & (offs_n[None, :] < n),
            other=0,
        )
        if UPCAST:  # see UPCAST_BF16
            x = x.to(tl.float32)
        acc += tl.dot(x, w.to(x.dtype), input_precision="ieee")
    out = acc * tl.load(w_scale_ptr + offs_n, mask=offs_n < n, other=0.0)[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=offs_n < n, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + offs_m[:, None] * n + offs_n[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=(offs_m[:, None] < m) & (offs_n[None, :] < n),
    )


@triton.jit
def _lowrank_kernel(
    x_ptr,
    a_ptr,
    b_ptr,
    bias_ptr,
    out_ptr,
    m,
    n,
    k,
    r,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """(x @ a^T) @ b^T with the [BLOCK_M, r] intermediate kept in registers."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, BLOCK_R)
    t = tl.zeros((BLOCK_M, BLOCK_R), tl.float32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + offs_m[:, None] * k + offs_k[None, :],
            mask=(offs_m[:, None] < m) & (offs_k[None, :] < k),
            other=0.0,
        )
        a = tl.load(
            a_ptr + offs_r[None, :] * k + offs_k[:, None],
            mask=(offs_k[:, None] < k) & (offs_r[None, :] < r),
            other=0.0,
        )
        if UPCAST:  # see UPCAST_BF16
            x, a = x.to(tl.float32), a.to(tl.float32)
        t += tl.dot(x, a, input_precision="ieee")
    b = tl.load(
        b_ptr + offs_n[None, :] * r + offs_r[:, None],
        mask=(offs_r[:, None] < r) & (offs_n[None, :] < n),
        other=0.0,
    )
    if UPCAST:
        b = b.to(tl.float32)
    out = tl.dot(t.to(b.dtype), b, input_precision="ieee")
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=offs_n < n, other=0.0).to(tl.float32)[None, :]
    tl.store(
        out_ptr + offs_m[:, None] * n + offs_n[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=(offs_m[:, None] < m) & (offs_n[None, :] < n),
    )


# ---- host side ----


def _grid(m: int, n: int, cfg: dict) -> tuple[int, int]:
    return triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"])


def quantize_rowwise(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    _quantize_rowwise_fake(x, bits)
    x2d = x.contiguous().reshape(-1, x.shape[-1]) if x.numel() else x.reshape(-1, x.shape[-1])
    q = torch.empty(x2d.shape, dtype=torch.int8, device=x.device)
    s = torch.ones(x2d.shape[0], dtype=torch.float32, device=x.device)
    if x2d.numel():
        cfg = gemm_configs(_arch(x))
        _quantize_rows_kernel[(triton.cdiv(x2d.shape[0], cfg["BLOCK_M"]),)](
            x2d,
            q,
            s,
            x2d.shape[0],
            x2d.shape[1],
            float(2 ** (bits - 1) - 1),
            BLOCK_M=cfg["BLOCK_M"],
            BLOCK_K=cfg["BLOCK_K"],
        )
    return q.reshape(x.shape), s.reshape(x.shape[:-1])


def _gemm(a, b, a_scale, b_scale, bias, out_dtype, quantize_a: bool, dequant: bool):
    m, k = a.shape
    n = b.shape[0]
    out = torch.empty(m, n, dtype=out_dtype if dequant else torch.int32, device=a.device)
    if m and n:
        cfg = gemm_configs(_arch(a))
        dummy = b_scale if b_scale is not None else out
        _int8_gemm_kernel[_grid(m, n, cfg)](
            a.contiguous(),
            b.contiguous(),
            a_scale.contiguous().reshape(-1) if a_scale is not None else dummy,
            b_scale.contiguous().reshape(-1) if b_scale is not None else dummy,
            bias if bias is not None else dummy,
            out,
            m,
            n,
            k,
            QUANTIZE_A=quantize_a,
            DEQUANT=dequant,
            HAS_BIAS=bias is not None,
            **cfg,
        )
    return out


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _int_mm_fake(a, b)
    return _gemm(a, b, None, None, None, None, quantize_a=False, dequant=False)


def int8_mm(a, b, a_scale, b_scale, bias=None, out_dtype=None):
    _int8_mm_fake(a, b, a_scale, b_scale, bias, out_dtype)
    return _gemm(
        a, b, a_scale, b_scale, bias, out_dtype or torch.float32, quantize_a=False, dequant=True
    )


def linear_w8a8(x, wq, w_scale, bias=None):
    """Per-token quantization of x fused into the GEMM's prologue (quantize on load)."""
    _linear_fake("linear_w8a8", x, wq, w_scale, bias)
    x2d = x.reshape(-1, x.shape[-1])
    out = _gemm(x2d.contiguous(), wq, None, w_scale, bias, x.dtype, quantize_a=True, dequant=True)
    return out.reshape(*x.shape[:-1], wq.shape[0])


def linear_w8a16(x, wq, w_scale, bias=None):
    _linear_fake("linear_w8a16", x, wq, w_scale, bias)
    x2d = x.reshape(-1, x.shape[-1]).contiguous()
    m, k = x2d.shape
    n = wq.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m and n:
        cfg = gemm_configs(_arch(x))
        _w8a16_kernel[_grid(m, n, cfg)](
            x2d,
            wq.contiguous(),
            w_scale.contiguous().reshape(-1),
            bias if bias is not None else w_scale,
            out,
            m,
            n,
            k,
            HAS_BIAS=bias is not None,
            UPCAST=UPCAST_BF16 and x.dtype == torch.bfloat16,
            **cfg,
        )
    return out.reshape(*x.shape[:-1], n)


def lowrank_mm(x, a, b, bias=None):
    """Forward only here; its autograd formula (registered with the op) calls matmuls."""
    _lowrank_mm_fake(x, a, b, bias)
    r = a.shape[0]
    if r > 256:  # the intermediate no longer fits on chip: two GEMMs
        return torch.nn.functional.linear(torch.nn.functional.linear(x, a), b, bias)
    x2d = x.reshape(-1, x.shape[-1]).contiguous()
    m, k = x2d.shape
    n = b.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m and n:
        cfg = gemm_configs(_arch(x))
        _lowrank_kernel[_grid(m, n, cfg)](
            x2d,
            a.contiguous(),
            b.contiguous(),
            bias if bias is not None else b,
            out,
            m,
            n,
            k,
            r,
            HAS_BIAS=bias is not None,
            UPCAST=UPCAST_BF16 and x.dtype == torch.bfloat16,
            BLOCK_R=max(16, triton.next_power_of_2(r)),
            **cfg,
        )
    return out.reshape(*x.shape[:-1], n)
