"""int8 GEMM family, in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qkernels._common import GROUP_COLS, K_STEP, round_up


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
