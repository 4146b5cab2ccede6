"""Triton lowrank_mm, forward and backward (CUDA implementation; CPU-testable with
TRITON_INTERPRET=1).

Forward: out = (x a^T) b^T + bias with the [BLOCK_M, r] intermediate in registers
(r <= 256), so the [M, r] tensor never goes through memory; each row block
computes it once and sweeps its share of the N tiles.
Backward, given g = d out, with t = x a^T and dt = g b:
  dx = dt a,  da = dt^T x,  db = g^T t.
One kernel per row block recomputes t, computes dt (both in registers), writes dx
and stores t and dt ([M, r], small); `_reduce_rows_kernel` then forms da and db,
sums over M split across programs with fp32 atomics. Numerics follow the PyTorch
composition: t and dt are rounded to x's dtype where autograd would round them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qkernels._common import as_rows
from qkernels.meta.lowrank import (
    lowrank_backward_by_matmuls,
    lowrank_mm_backward_fake,
    lowrank_mm_fake,
)
from qkernels.triton._common import autotuned, launch, rne, store_output
from qkernels.triton._configs import (
    arch_of,
    lowrank_backward_configs,
    lowrank_configs,
    m_bucket,
    reduce_rows_configs,
)
from qkernels.triton.int8_gemm import upcast

MAX_FUSED_RANK = 256  # beyond this the intermediate does not fit on chip: two GEMMs


def _block_r(r: int) -> int:
    return max(16, triton.next_power_of_2(r))


@triton.jit
def _x_at(x_ptr, a_ptr, offs_m, offs_r, m, k, r, UPCAST, BLOCK_K: tl.constexpr, acc):
    """acc += x[offs_m, :] @ a[offs_r, :]^T over all of K."""
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
        if UPCAST:  # see upcast()
            x, a = x.to(tl.float32), a.to(tl.float32)
        acc += tl.dot(x, a, input_precision="ieee")
    return acc


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
    """Program (i, j): rows block i; t = x a^T once, then the j-th share of the N
    tiles, out = t b^T. Recomputing t per N tile instead would multiply the x a^T
    work by N / BLOCK_N; the grid's second axis exists only to fill the GPU when
    there are few row blocks (small M)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, BLOCK_R)
    t = tl.zeros((BLOCK_M, BLOCK_R), tl.float32)
    t = _x_at(x_ptr, a_ptr, offs_m, offs_r, m, k, r, UPCAST, BLOCK_K, t)
    n_tiles = tl.cdiv(n, BLOCK_N)
    tiles_per_program = tl.cdiv(n_tiles, tl.num_programs(1))
    first = tl.program_id(1) * tiles_per_program
    for tile in range(first, tl.minimum(first + tiles_per_program, n_tiles)):
        offs_n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        b = tl.load(
            b_ptr + offs_n[None, :] * r + offs_r[:, None],
            mask=(offs_r[:, None] < r) & (offs_n[None, :] < n),
            other=0.0,
        )
        if UPCAST:
            b = b.to(tl.float32)
        out = tl.dot(rne(t, b_ptr).to(b.dtype), b, input_precision="ieee")
        store_output(out, bias_ptr, out_ptr, offs_m, offs_n, m, n, HAS_BIAS)


@triton.jit
def _lowrank_backward_rows_kernel(
    g_ptr,
    x_ptr,
    a_ptr,
    b_ptr,
    dx_ptr,
    t_ptr,
    dt_ptr,
    m,
    n,
    k,
    r,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, BLOCK_R)
    row_ok = offs_m[:, None] < m
    t = _x_at(
        x_ptr,
        a_ptr,
        offs_m,
        offs_r,
        m,
        k,
        r,
        UPCAST,
        BLOCK_K,
        tl.zeros((BLOCK_M, BLOCK_R), tl.float32),
    )
    dt = tl.zeros((BLOCK_M, BLOCK_R), tl.float32)
    for n0 in range(0, n, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        g = tl.load(
            g_ptr + offs_m[:, None] * n + offs_n[None, :],
            mask=row_ok & (offs_n[None, :] < n),
            other=0.0,
        )
        b = tl.load(
            b_ptr + offs_n[:, None] * r + offs_r[None, :],
            mask=(offs_n[:, None] < n) & (offs_r[None, :] < r),
            other=0.0,
        )
        if UPCAST:
            g, b = g.to(tl.float32), b.to(tl.float32)
        dt += tl.dot(g, b, input_precision="ieee")
    rmask = row_ok & (offs_r[None, :] < r)
    tl.store(t_ptr + offs_m[:, None] * r + offs_r[None, :], rne(t, t_ptr), mask=rmask)
    dt = rne(dt, dt_ptr)  # rounded like autograd's dt, before dx uses it
    tl.store(dt_ptr + offs_m[:, None] * r + offs_r[None, :], dt, mask=rmask)
    if UPCAST:
        dt = dt.to(tl.float32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(
            a_ptr + offs_r[:, None] * k + offs_k[None, :],
            mask=(offs_r[:, None] < r) & (offs_k[None, :] < k),
            other=0.0,
        )
        if UPCAST:
            a = a.to(tl.float32)
        dx = tl.dot(dt, a, input_precision="ieee")
        tl.store(
            dx_ptr + offs_m[:, None] * k + offs_k[None, :],
            rne(dx, dx_ptr),
            mask=row_ok & (offs_k[None, :] < k),
        )


@triton.jit
def _reduce_rows_kernel(
    p_ptr,
    q_ptr,
    c_ptr,
    m,
    p,
    q,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_M: tl.constexpr,
):
    """c[p, q] (+)= P[rows, p]^T Q[rows, q] over this program's share of the M rows;
    tile BLOCK_M x BLOCK_N of c, BLOCK_K rows per step. c is fp32 and zeroed."""
    offs_p = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_q = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows_per_split = tl.cdiv(tl.cdiv(m, SPLIT_M), BLOCK_K) * BLOCK_K
    lo = tl.program_id(2) * rows_per_split
    hi = tl.minimum(lo + rows_per_split, m)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for m0 in range(lo, hi, BLOCK_K):
        rows = m0 + tl.arange(0, BLOCK_K)
        pt = tl.load(
            p_ptr + rows[None, :] * p + offs_p[:, None],
            mask=(rows[None, :] < hi) & (offs_p[:, None] < p),
            other=0.0,
        )
        qt = tl.load(
            q_ptr + rows[:, None] * q + offs_q[None, :],
            mask=(rows[:, None] < hi) & (offs_q[None, :] < q),
            other=0.0,
        )
        if UPCAST:
            pt, qt = pt.to(tl.float32), qt.to(tl.float32)
        acc += tl.dot(pt, qt, input_precision="ieee")
    cmask = (offs_p[:, None] < p) & (offs_q[None, :] < q)
    cptrs = c_ptr + offs_p[:, None] * q + offs_q[None, :]
    if SPLIT_M > 1:
        tl.atomic_add(cptrs, acc, mask=cmask)
    else:
        tl.store(cptrs, acc, mask=cmask)


# ---- host side ----


def _program_target(x: torch.Tensor) -> int:
    """How many programs keep the device busy: one per SM (a few under the
    interpreter, so the CPU tests split the N tiles too, and when tracing fake
    CUDA tensors without a GPU)."""
    if x.device.type != "cuda" or not torch.cuda.is_available():
        return 4
    return torch.cuda.get_device_properties(x.device).multi_processor_count


def lowrank_mm(x, a, b, bias=None):
    lowrank_mm_fake(x, a, b, bias)
    r = a.shape[0]
    if r > MAX_FUSED_RANK:
        return torch.nn.functional.linear(torch.nn.functional.linear(x, a), b, bias)
    x2d = as_rows(x)
    m, k = x2d.shape
    n = b.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m and n:
        kernel = autotuned(_lowrank_kernel, lowrank_configs, arch_of(x), m_bucket(m), r)
        programs = _program_target(x)

        def grid(meta):
            row_blocks, n_tiles = triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"])
            return row_blocks, min(n_tiles, triton.cdiv(programs, row_blocks))

        launch(
            kernel,
            grid,
            x2d,
            a.contiguous(),
            b.contiguous(),
            bias.contiguous() if bias is not None else None,  # kernels read dense rows
            out,
            m,
            n,
            k,
            r,
            HAS_BIAS=bias is not None,
            UPCAST=upcast(x),
            BLOCK_R=_block_r(r),
        )
    return out.reshape(*x.shape[:-1], n)


def _reduce_rows(p_rows: torch.Tensor, q_rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """p_rows^T @ q_rows ([M, P]^T [M, Q] -> [P, Q]) in fp32, returned in dtype."""
    m, p = p_rows.shape
    q = q_rows.shape[1]
    c = torch.zeros(p, q, dtype=torch.float32, device=p_rows.device)
    if m and p and q:
        kernel = autotuned(
            _reduce_rows_kernel,
            reduce_rows_configs,
            arch_of(p_rows),
            key=("m", "p", "q"),
            reset_to_zero=("c_ptr",),
        )
        launch(
            kernel,
            lambda meta: (
                triton.cdiv(p, meta["BLOCK_M"]),
                triton.cdiv(q, meta["BLOCK_N"]),
                meta["SPLIT_M"],
            ),
            p_rows,
            q_rows,
            c,
            m,
            p,
            q,
            UPCAST=upcast(p_rows),
        )
    return c.to(dtype)


def lowrank_mm_backward(grad, x, a, b):
    """(dx, da, db) of lowrank_mm; the bias gradient is grad summed over rows."""
    lowrank_mm_backward_fake(grad, x, a, b)
    r, k = a.shape
    n = b.shape[0]
    if r > MAX_FUSED_RANK:
        return lowrank_backward_by_matmuls(grad, x, a, b)
    x2d = as_rows(x)
    g2d = as_rows(grad)
    m = x2d.shape[0]
    dx = torch.empty_like(x2d)
    t = torch.empty(m, r, dtype=x.dtype, device=x.device)
    dt = torch.empty_like(t)
    if m:
        kernel = autotuned(_lowrank_backward_rows_kernel, lowrank_backward_configs, arch_of(x), r)
        launch(
            kernel,
            lambda meta: (triton.cdiv(m, meta["BLOCK_M"]),),
            g2d,
            x2d,
            a.contiguous(),
            b.contiguous(),
            dx,
            t,
            dt,
            m,
            n,
            k,
            r,
            UPCAST=upcast(x),
            BLOCK_R=_block_r(r),
        )
    return dx.reshape(x.shape), _reduce_rows(dt, x2d, a.dtype), _reduce_rows(g2d, t, b.dtype)
