"""Triton lstm_w8a8 (the CUDA implementation; CPU-testable with TRITON_INTERPRET=1).

Launches: one W8A8 GEMM for the input projection of all steps, then one fused
kernel per step (plus one projection GEMM per step when proj_size is set). The
step kernel quantizes h_prev per row on load (each program reads whole rows to
get their absmax, so no separate quantization pass or launch), runs the four
gate GEMMs on int8 tensor cores and applies the gates and the cell update in
registers. h ping-pongs between two buffers because every program reads all of
h_prev.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qkernels.meta.lstm import lstm_w8a8_fake
from qkernels.triton.int8_gemm import _gemm, _quantize, _row_absmax_scale

BLOCK_M, BLOCK_N, BLOCK_K = 16, 32, 32


@triton.jit
def _gate_dot(acc, q, w_ptr, gate, hidden, k, offs_k, offs_u):
    rows = gate * hidden + offs_u
    mask = (offs_k[:, None] < k) & (offs_u[None, :] < hidden)
    w = tl.load(w_ptr + rows[None, :] * k + offs_k[:, None], mask=mask, other=0)
    return acc + tl.dot(q, w, out_dtype=tl.int32)


@triton.jit
def _gate(acc, scale, ws_ptr, gx_ptr, gate, hidden, offs_b, offs_u, mask):
    cols = gate * hidden + offs_u
    ws = tl.load(ws_ptr + cols, mask=offs_u < hidden, other=0.0)
    gx = tl.load(gx_ptr + offs_b[:, None] * (4 * hidden) + cols[None, :], mask=mask, other=0.0)
    return acc.to(tl.float32) * scale[:, None] * ws[None, :] + gx


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _tanh(z):
    return 2.0 * _sigmoid(2.0 * z) - 1.0


@triton.jit
def _lstm_step_kernel(
    h_prev_ptr,
    w_hh_ptr,
    w_hh_scale_ptr,
    gx_ptr,
    c_ptr,
    h_out_ptr,
    rows,
    hidden,
    k,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_u = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    scale = _row_absmax_scale(h_prev_ptr, rows, k, k, offs_b, 127.0, BLOCK_K)
    acc_i = tl.zeros((BLOCK_B, BLOCK_H), tl.int32)
    acc_f = tl.zeros((BLOCK_B, BLOCK_H), tl.int32)
    acc_g = tl.zeros((BLOCK_B, BLOCK_H), tl.int32)
    acc_o = tl.zeros((BLOCK_B, BLOCK_H), tl.int32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        hmask = (offs_b[:, None] < rows) & (offs_k[None, :] < k)
        h = tl.load(h_prev_ptr + offs_b[:, None] * k + offs_k[None, :], mask=hmask, other=0.0)
        q = _quantize(h, scale, 127.0).to(tl.int8)
        acc_i = _gate_dot(acc_i, q, w_hh_ptr, 0, hidden, k, offs_k, offs_u)
        acc_f = _gate_dot(acc_f, q, w_hh_ptr, 1, hidden, k, offs_k, offs_u)
        acc_g = _gate_dot(acc_g, q, w_hh_ptr, 2, hidden, k, offs_k, offs_u)
        acc_o = _gate_dot(acc_o, q, w_hh_ptr, 3, hidden, k, offs_k, offs_u)
    mask = (offs_b[:, None] < rows) & (offs_u[None, :] < hidden)
    i = _sigmoid(_gate(acc_i, scale, w_hh_scale_ptr, gx_ptr, 0, hidden, offs_b, offs_u, mask))
    f = _sigmoid(_gate(acc_f, scale, w_hh_scale_ptr, gx_ptr, 1, hidden, offs_b, offs_u, mask))
    g = _tanh(_gate(acc_g, scale, w_hh_scale_ptr, gx_ptr, 2, hidden, offs_b, offs_u, mask))
    o = _sigmoid(_gate(acc_o, scale, w_hh_scale_ptr, gx_ptr, 3, hidden, offs_b, offs_u, mask))
    state = offs_b[:, None] * hidden + offs_u[None, :]
    c = f * tl.load(c_ptr + state, mask=mask, other=0.0) + i * g
    tl.store(c_ptr + state, c, mask=mask)
    tl.store(h_out_ptr + state, o * _tanh(c), mask=mask)


def _linear(
    x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """W8A8 linear with fp32 output, x quantized per row on load."""
    return _gemm(x, w, None, w_scale, bias, torch.float32, quantize_a=True, dequant=True)


def lstm_w8a8(
    x,
    h0,
    c0,
    w_ih,
    w_ih_scale,
    w_hh,
    w_hh_scale,
    b_ih=None,
    b_hh=None,
    reverse=False,
    w_hr=None,
    w_hr_scale=None,
    batch_sizes=None,
):
    """Same signature and numbers (up to float rounding) as ops.lstm_w8a8; weights
    in the plain int8 [4 * hidden, K] layout."""
    lstm_w8a8_fake(
        x,
        h0,
        c0,
        w_ih,
        w_ih_scale,
        w_hh,
        w_hh_scale,
        b_ih,
        b_hh,
        reverse,
        w_hr,
        w_hr_scale,
        batch_sizes,
    )  # shape and dtype checks, same messages
    steps, batch, inp = x.shape
    hidden = w_ih_scale.numel() // 4
    out_size = hidden if w_hr is None else w_hr.shape[0]
    bias = torch.zeros(4 * hidden, device=x.device)
    for b in (b_ih, b_hh):
        if b is not None:
            bias = bias + b.float()
    gx = _linear(
        x.float().reshape(steps * batch, inp).contiguous(),
        w_ih.contiguous(),
        w_ih_scale.float().contiguous(),
        bias,
    ).view(steps, batch, 4 * hidden)
    c = c0.float().clone().contiguous()
    h_prev = h0.float().clone().contiguous()
    h_next = torch.empty_like(h_prev)
    m_t = torch.empty(batch, hidden, device=x.device)  # pre-projection hidden
    y = torch.zeros(steps, batch, out_size, device=x.device)
    sizes = [batch] * steps if batch_sizes is None else [int(v) for v in batch_sizes]
    w_hh, w_hh_scale = w_hh.contiguous(), w_hh_scale.float().contiguous()
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        rows = sizes[t]
        if rows == 0:
            continue
        grid = (triton.cdiv(rows, BLOCK_M), triton.cdiv(hidden, BLOCK_N))
        target = m_t if w_hr is not None else h_next
        _lstm_step_kernel[grid](
            h_prev,
            w_hh,
            w_hh_scale,
            gx[t],
            c,
            target,
            rows,
            hidden,
            out_size,
            BLOCK_B=BLOCK_M,
            BLOCK_H=BLOCK_N,
            BLOCK_K=BLOCK_K,
        )
        if w_hr is not None:
            h_next[:rows] = _linear(
                m_t[:rows], w_hr.contiguous(), w_hr_scale.float().contiguous(), None
            )
        if rows < batch:  # finished packed sequences keep their state
            h_next[rows:] = h_prev[rows:]
        y[t, :rows] = h_next[:rows]
        h_prev, h_next = h_next, h_prev
    return y.to(x.dtype), h_prev.to(x.dtype), c.to(x.dtype)
