"""LSTM family, in plain PyTorch."""

from __future__ import annotations

import torch

from qkernels.reference.int8_gemm import linear_w8a8


def lstm_w8a8(
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    w_ih: torch.Tensor,
    w_ih_scale: torch.Tensor,
    w_hh: torch.Tensor,
    w_hh_scale: torch.Tensor,
    b_ih: torch.Tensor | None = None,
    b_hh: torch.Tensor | None = None,
    reverse: bool = False,
    w_hr: torch.Tensor | None = None,
    w_hr_scale: torch.Tensor | None = None,
    batch_sizes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer/direction with W8A8 products: the input projection of all
    steps (both biases folded in) and each recurrent product quantize x / h per row."""
    steps, batch, _ = x.shape
    hidden = w_ih_scale.numel() // 4
    bias = torch.zeros(4 * hidden)
    for b in (b_ih, b_hh):
        if b is not None:
            bias = bias + b.float()
    gx = linear_w8a8(x.float().reshape(steps * batch, -1), w_ih, w_ih_scale, bias)
    gx = gx.reshape(steps, batch, 4 * hidden)
    h, c = h0.float().clone(), c0.float().clone()
    y = torch.zeros(steps, batch, h.shape[1])
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        n = batch if batch_sizes is None else int(batch_sizes[t])
        if n == 0:
            continue
        gates = linear_w8a8(h[:n], w_hh, w_hh_scale) + gx[t, :n]
        i, f, g, o = gates.chunk(4, dim=1)
        c[:n] = torch.sigmoid(f) * c[:n] + torch.sigmoid(i) * torch.tanh(g)
        out = torch.sigmoid(o) * torch.tanh(c[:n])
        if w_hr is not None:
            out = linear_w8a8(out, w_hr, w_hr_scale)
        h[:n] = out
        y[t, :n] = out
    return y.to(x.dtype), h.to(x.dtype), c.to(x.dtype)
