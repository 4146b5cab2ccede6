"""Pure-PyTorch truth for every qkernels op: short and obviously right.

Tests compare the kernels with these; nothing else in the package calls them
on a hot path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qkernels._registry import GROUP_COLS, K_STEP, round_up


def quantize_rowwise(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    qmax = 2 ** (bits - 1) - 1
    xf = x.float()
    absmax = xf.abs().amax(dim=-1) if x.shape[-1] > 0 else xf.new_zeros(x.shape[:-1])
    scale = torch.where(absmax == 0, torch.ones_like(absmax), absmax / qmax)
    q = torch.round(xf / scale.unsqueeze(-1)).clamp(-qmax, qmax).to(torch.int8)
    return q, scale


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # float64 holds every partial sum exactly while |sum| < 2**53 (K < 2**38 for int8),
    # and CPU float64 matmul is fast where int64 matmul is not.
    return (a.double() @ b.double().T).to(torch.int32)


def int8_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    out = int_mm(a, b).float() * a_scale.reshape(-1, 1) * b_scale.reshape(1, -1)
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype or torch.float32)


def linear_w8a8(
    x: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    q, s = quantize_rowwise(x.reshape(-1, x.shape[-1]))
    out = int8_mm(q, wq, s, w_scale, bias, x.dtype)
    return out.reshape(*x.shape[:-1], wq.shape[0])


def linear_w8a16(
    x: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    w = wq.float() * w_scale.reshape(-1, 1)
    return F.linear(x.float(), w, None if bias is None else bias.float()).to(x.dtype)


def pack_weight(wq: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] -> uint8 [ceil16(N), ceil4(K)]: groups of 16 columns, each
    [K/4][16][4] bytes, stored as w + 128 (w ^ 0x80)."""
    n, k = wq.shape
    np_, kp = round_up(n, GROUP_COLS), round_up(k, K_STEP)
    w = F.pad(wq, (0, kp - k, 0, np_ - n))
    w = w.view(np_ // GROUP_COLS, GROUP_COLS, kp // K_STEP, K_STEP).permute(0, 2, 1, 3)
    return (w.reshape(np_, kp).view(torch.uint8) ^ 0x80).contiguous()


def _channel_view(t: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * x.dim()
    if t.numel() > 1:
        shape[axis] = -1
    return t.reshape(shape)


def _levels(x: torch.Tensor, s: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    """Unclamped integer levels; s and zp broadcast against x."""
    xs = x.float() * (1.0 / s.float())
    return torch.round(zp.float() + xs) if zp.is_floating_point() else torch.round(xs) + zp.float()


def _fake_quant(x, s, zp, qmin, qmax) -> torch.Tensor:
    r = _levels(x, s, zp).clamp(qmin, qmax)
    if zp.is_floating_point():  # torch computes (r - zp) * s in float64 then
        return ((r.double() - zp.double()) * s.double()).to(x.dtype)
    return ((r - zp.float()) * s.float()).to(x.dtype)


def fake_quant(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    axis: int,
    qmin: int,
    qmax: int,
) -> torch.Tensor:
    """torch.fake_quantize_per_{tensor,channel}_affine written out: 1/scale once,
    round half to even; an integer zero point is added after rounding, a float
    one before (as torch's per-channel op does)."""
    return _fake_quant(
        x, _channel_view(scale, x, axis), _channel_view(zero_point, x, axis), qmin, qmax
    )


def fake_quant_group(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    group_size: int,
    qmin: int,
    qmax: int,
) -> torch.Tensor:
    """fake_quant with one (scale, zero_point) per group of `group_size` along the last dim."""
    groups = x.reshape(*x.shape[:-1], -1, group_size)
    out = _fake_quant(groups, scale.unsqueeze(-1), zero_point.unsqueeze(-1), qmin, qmax)
    return out.reshape(x.shape)


def fake_quant_group_mask(x, scale, zero_point, group_size, qmin, qmax) -> torch.Tensor:
    """Where the straight-through gradient passes: the unclamped level is in range."""
    groups = x.reshape(*x.shape[:-1], -1, group_size)
    r = _levels(groups, scale.unsqueeze(-1), zero_point.unsqueeze(-1))
    return ((r >= qmin) & (r <= qmax)).reshape(x.shape)


def fake_quant_lsq(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    axis: int,
    qmin: int,
    qmax: int,
    grad_factor: float = 1.0,
) -> torch.Tensor:
    """PyTorch's own learnable fake-quant ops (float32), the ground truth for LSQ."""
    if scale.numel() == 1:
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, scale.reshape(1), zero_point.reshape(1), qmin, qmax, grad_factor
        )
    return torch._fake_quantize_learnable_per_channel_affine(
        x, scale, zero_point, axis % x.dim(), qmin, qmax, grad_factor
    )


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


def lowrank_mm(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    return F.linear(F.linear(x, a), b, bias)
