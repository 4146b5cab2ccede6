"""int8 GEMM family, in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qkernels._common import GROUP_COLS, K_STEP, apply_activation, exact_int32, round_up


def quantize_rowwise(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: scale = absmax / qmax, q = round_half_even(x / scale).
    DESIGN.md, "Non-finite and tiny values": a row holding NaN or +-Inf gets scale NaN
    and q = 0 (its outputs are NaN downstream); a row whose absmax is below
    qmax * FLT_MIN (zeros, denormals) gets scale 1, so its q round to 0."""
    qmax = 2 ** (bits - 1) - 1
    xf = x.float()
    finite = torch.isfinite(xf).all(dim=-1)
    absmax = xf.abs().amax(dim=-1) if x.shape[-1] > 0 else xf.new_zeros(x.shape[:-1])
    tiny = absmax < qmax * torch.finfo(torch.float32).tiny
    scale = torch.where(tiny, torch.ones_like(absmax), absmax / qmax)
    scale = torch.where(finite, scale, torch.full_like(scale, float("nan")))
    q = torch.round(xf / scale.unsqueeze(-1)).clamp(-qmax, qmax)
    q = torch.where(finite.unsqueeze(-1), q, torch.zeros_like(q))
    return q.to(torch.int8), scale


def norm_quantize(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    rms: bool = False,
    bits: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, q, scale): y = LayerNorm (or RMSNorm: x * rsqrt(mean(x^2) + eps)) of the last dim
    times weight plus bias, computed in float64 and rounded once to x's dtype; (q, scale) =
    quantize_rowwise(y, bits), the quantization of y as returned."""
    xd = x.double()
    if rms:
        y = xd * torch.rsqrt(xd.square().mean(-1, keepdim=True) + eps)
    else:
        y = F.layer_norm(xd, (x.shape[-1],), eps=eps)
    if weight is not None:
        y = y * weight.double()
    if bias is not None:
        y = y + bias.double()
    y = y.to(x.dtype)
    return (y, *quantize_rowwise(y, bits))


def _exact_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # float64 holds every partial sum exactly while |sum| < 2**53 (K < 2**38 for int8),
    # and CPU float64 matmul is fast where int64 matmul is not.
    return a.double() @ b.double().T


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int32 a @ b.T, exact; an error where a sum does not fit int32 (K > MAX_EXACT_K)."""
    return exact_int32(_exact_dot(a, b), "int_mm", a.shape[1])


def int8_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    out = _exact_dot(a, b).float() * a_scale.reshape(-1, 1) * b_scale.reshape(1, -1)
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
    return _w8a16_fp32(x, wq, w_scale, bias).to(x.dtype)


def _w8a16_fp32(x, wq, w_scale, bias):
    w = wq.float() * w_scale.reshape(-1, 1)
    out = F.linear(x.float(), w, None if bias is None else bias.float())
    # A non-finite scale: NaN for the whole channel (dequantizing gives 0 * inf = NaN for
    # a zero weight and inf - inf in the sum; stated, not left to the signs of x).
    return out.masked_fill(~torch.isfinite(w_scale.reshape(-1)), float("nan"))


def linear_w8a8_act(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    activation_name: str,
) -> torch.Tensor:
    """activation(linear_w8a8) with the activation applied in fp32, before the output
    rounding to x's dtype."""
    q, s = quantize_rowwise(x.reshape(-1, x.shape[-1]))
    out = apply_activation(int8_mm(q, wq, s, w_scale, bias, torch.float32), activation_name)
    return out.to(x.dtype).reshape(*x.shape[:-1], wq.shape[0])


def linear_w8a16_act(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    activation_name: str,
) -> torch.Tensor:
    """activation(linear_w8a16), the activation in fp32 before the output rounding."""
    return apply_activation(_w8a16_fp32(x, wq, w_scale, bias), activation_name).to(x.dtype)


def pack_weight(wq: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] -> uint8 [ceil16(N), ceil4(K)]: groups of 16 columns, each
    [K/4][16][4] bytes, stored as w + 128 (w ^ 0x80)."""
    n, k = wq.shape
    np_, kp = round_up(n, GROUP_COLS), round_up(k, K_STEP)
    w = F.pad(wq, (0, kp - k, 0, np_ - n))
    w = w.view(np_ // GROUP_COLS, GROUP_COLS, kp // K_STEP, K_STEP).permute(0, 2, 1, 3)
    return (w.reshape(np_, kp).view(torch.uint8) ^ 0x80).contiguous()
