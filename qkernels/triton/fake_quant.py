"""Triton fake-quant kernels (same numbers as the C++ CPU kernels and torch's ops).

Layout, as in csrc/cpu/kernel_args.h: x is cut into segments of contiguous
elements. In segment mode one program covers BLOCK elements of one segment,
whose (scale, zero_point) is params[segment % n_params], so its LSQ partial
sums reduce in registers to one atomic add. In channel-last mode the params
vary along the segment (a row) and a program walks ROWS rows of BLOCK channels
(`tile` sets both).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qkernels.meta.fake_quant import (
    channel_layout,
    check_channel,
    entry_points,
    lsq_zero_point,
    param_vectors,
)
from qkernels.triton._common import finite, mul_rn, rne, round_half_even


def tile(along: bool, lsq: bool) -> tuple[int, int]:
    """(BLOCK, ROWS) of one program: 8-16 elements per thread at 4 warps, so the
    tile stays in registers on a GPU (`python tools/compile_check.py`
    shows the spills of larger ones). LSQ along the last dim takes tall, narrow
    tiles: each program ends in one atomic per column, so more rows per program
    means fewer atomics."""
    if not along:
        return 1024, 1
    return (64, 32) if lsq else (256, 4)


@triton.jit
def _store_rounded(ptr, offs, y, mask):
    """Store fp32 y into ptr's dtype, rounding half to even like torch."""
    tl.store(ptr + offs, rne(y, ptr), mask=mask)


@triton.jit
def _levels(x, inv, zp, ZP_IN_ROUND: tl.constexpr):
    if ZP_IN_ROUND:
        return round_half_even(zp + mul_rn(x, inv))
    return round_half_even(x * inv) + zp


@triton.jit
def _offsets(
    numel, seg_len, n_params, ALONG: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr
):
    """Element offsets [ROWS, BLOCK] and their mask; the param index: the columns
    ([1, BLOCK]) along the last dim, else one scalar for the whole segment (so each
    param is loaded once per program, not once per element)."""
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    if ALONG:
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        offs = rows[:, None] * seg_len + cols[None, :]
        mask = (cols[None, :] < seg_len) & (offs < numel)
        k = cols[None, :]
    else:  # ROWS == 1: one segment, one param
        seg = tl.program_id(0).to(tl.int64)
        offs = (seg * seg_len + cols)[None, :]
        mask = (cols[None, :] < seg_len) & (offs < numel)
        k = seg % n_params
    return offs, mask, k


@triton.jit
def _load_params(scale_ptr, inv_ptr, zp_ptr, k, seg_len, ALONG: tl.constexpr):
    if ALONG:
        kmask = k < seg_len
        s = tl.load(scale_ptr + k, mask=kmask, other=1.0)
        inv = tl.load(inv_ptr + k, mask=kmask, other=1.0)
        zp = tl.load(zp_ptr + k, mask=kmask, other=0.0)
    else:
        s, inv, zp = tl.load(scale_ptr + k), tl.load(inv_ptr + k), tl.load(zp_ptr + k)
    return s, inv, zp


@triton.jit
def _forward_kernel(
    x_ptr,
    y_ptr,
    scale_ptr,
    inv_ptr,
    zp_ptr,
    numel,
    seg_len,
    n_params,
    qmin,
    qmax,
    ALONG: tl.constexpr,
    ZP_IN_ROUND: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    offs, mask, k = _offsets(numel, seg_len, n_params, ALONG, BLOCK, ROWS)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    s, inv, zp = _load_params(scale_ptr, inv_ptr, zp_ptr, k, seg_len, ALONG)
    r = _levels(x, inv, zp, ZP_IN_ROUND)
    rc = tl.minimum(tl.maximum(r, qmin), qmax)
    if ZP_IN_ROUND:  # fractional zero point: (rc - zp) * s in float64, as torch
        y = ((rc.to(tl.float64) - zp.to(tl.float64)) * s.to(tl.float64)).to(tl.float32)
    else:
        y = (rc - zp) * s
    y = tl.where(finite(x), y, x)  # NaN and +-Inf pass through (DESIGN.md)
    _store_rounded(y_ptr, offs, y, mask)


@triton.jit
def _backward_kernel(
    dy_ptr,
    x_ptr,
    dx_ptr,
    inv_ptr,
    zp_ptr,
    numel,
    seg_len,
    n_params,
    qmin,
    qmax,
    ALONG: tl.constexpr,
    ZP_IN_ROUND: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    offs, mask, k = _offsets(numel, seg_len, n_params, ALONG, BLOCK, ROWS)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0)
    _, inv, zp = _load_params(inv_ptr, inv_ptr, zp_ptr, k, seg_len, ALONG)
    r = _levels(x, inv, zp, ZP_IN_ROUND)
    keep = (r >= qmin) & (r <= qmax)
    tl.store(dx_ptr + offs, tl.where(keep, dy, tl.zeros_like(dy)), mask=mask)


@triton.jit
def _lsq_backward_kernel(
    dy_ptr,
    x_ptr,
    dx_ptr,
    dscale_ptr,
    dzp_ptr,
    scale_ptr,
    inv_ptr,
    zp_ptr,
    numel,
    seg_len,
    n_params,
    qmin,
    qmax,
    grad_factor,
    ALONG: tl.constexpr,
    BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):
    offs, mask, k = _offsets(numel, seg_len, n_params, ALONG, BLOCK, ROWS)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy_raw = tl.load(dy_ptr + offs, mask=mask, other=0.0)
    dy = dy_raw.to(tl.float32)
    s, inv, zp = _load_params(scale_ptr, inv_ptr, zp_ptr, k, seg_len, ALONG)
    r = _levels(x, inv, zp, True)
    inside = (r >= qmin) & (r <= qmax)
    tl.store(dx_ptr + offs, tl.where(inside, dy_raw, tl.zeros_like(dy_raw)), mask=mask)
    xfq = (r - zp) * s
    edge = tl.where(r < qmin, qmin - zp, qmax - zp)
    ds = tl.where(inside, dy * (xfq - x) * inv * grad_factor, dy * edge * grad_factor)
    dz = tl.where(inside, 0.0, -dy * s * grad_factor)
    # Masked-off lanes, and NaN / +-Inf x (passed through, so independent of s and zp).
    counted = mask & finite(x)
    ds = tl.where(counted, ds, 0.0)
    dz = tl.where(counted, dz, 0.0)
    if ALONG:
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        cmask = cols < seg_len
        tl.atomic_add(dscale_ptr + cols, tl.sum(ds, axis=0), mask=cmask)
        tl.atomic_add(dzp_ptr + cols, tl.sum(dz, axis=0), mask=cmask)
    else:
        p = tl.program_id(0) % n_params
        tl.atomic_add(dscale_ptr + p, tl.sum(tl.sum(ds, axis=1), axis=0))
        tl.atomic_add(dzp_ptr + p, tl.sum(tl.sum(dz, axis=1), axis=0))


# ---- host side: layouts, params, launches ----


def _grid(numel: int, seg_len: int, along: bool, block: int, rows: int) -> tuple[int, int]:
    segments = triton.cdiv(numel, seg_len)
    if along:
        return triton.cdiv(segments, rows), triton.cdiv(seg_len, block)
    return segments, triton.cdiv(seg_len, block)


def _launch_forward(x, layout, scale, zp, zp_in_round, qmin, qmax):
    xc = x.contiguous()
    y = torch.empty_like(xc)
    if xc.numel():
        seg_len, n_params, along = layout
        s, inv, z = param_vectors(scale, zp)
        block, rows = tile(along, lsq=False)
        _forward_kernel[_grid(xc.numel(), seg_len, along, block, rows)](
            xc,
            y,
            s,
            inv,
            z,
            xc.numel(),
            seg_len,
            n_params,
            float(qmin),
            float(qmax),
            ALONG=along,
            ZP_IN_ROUND=zp_in_round,
            BLOCK=block,
            ROWS=rows,
        )
    return y


def _launch_backward(grad, x, layout, scale, zp, zp_in_round, qmin, qmax):
    xc, gc = x.contiguous(), grad.contiguous()
    dx = torch.empty_like(xc)
    if xc.numel():
        seg_len, n_params, along = layout
        _, inv, z = param_vectors(scale, zp)
        block, rows = tile(along, lsq=False)
        _backward_kernel[_grid(xc.numel(), seg_len, along, block, rows)](
            gc,
            xc,
            dx,
            inv,
            z,
            xc.numel(),
            seg_len,
            n_params,
            float(qmin),
            float(qmax),
            ALONG=along,
            ZP_IN_ROUND=zp_in_round,
            BLOCK=block,
            ROWS=rows,
        )
    return dx


(
    fake_quant,
    fake_quant_backward,
    fake_quant_group,
    fake_quant_group_backward,
    fake_quant_lsq,
) = entry_points(_launch_forward, _launch_backward)


def fake_quant_lsq_backward(
    grad, x, scale, zero_point, axis: int, qmin: int, qmax: int, grad_factor: float = 1.0
):
    check_channel("fake_quant_lsq_backward", x, scale, zero_point, axis, qmin, qmax)
    n = scale.numel()
    seg_len, n_params, along = channel_layout(x, n, axis)
    xc, gc = x.contiguous(), grad.contiguous()
    dx = torch.empty_like(xc)
    dscale = torch.zeros(n, dtype=torch.float32, device=x.device)
    dzp = torch.zeros(n, dtype=torch.float32, device=x.device)
    if xc.numel():
        s, inv, z = param_vectors(scale, lsq_zero_point(zero_point, qmin, qmax, n == 1))
        block, rows = tile(along, lsq=True)
        _lsq_backward_kernel[_grid(xc.numel(), seg_len, along, block, rows)](
            gc,
            xc,
            dx,
            dscale,
            dzp,
            s,
            inv,
            z,
            xc.numel(),
            seg_len,
            n_params,
            float(qmin),
            float(qmax),
            float(grad_factor),
            ALONG=along,
            BLOCK=block,
            ROWS=rows,
        )
    zp_dtype = zero_point.dtype if zero_point.is_floating_point() else torch.float32
    return dx, dscale.view(scale.shape), dzp.to(zp_dtype).view(zero_point.shape)
