"""Public ops: thin typed wrappers over torch.ops.qkernels.* (contract in DESIGN.md;
the op table in `qkernels.op_table`).

Weights (`b`, `wq`) are int8 [N, K] on every device; on CPU they may also be the
packed uint8 layout returned by `pack_weight`, which skips a per-call repack.
"""

from __future__ import annotations

import torch

from qkernels import _backend, meta  # noqa: F401  (fakes, autograd, CUDA registrations)

_ops = torch.ops.qkernels


def pack_weight(wq: torch.Tensor) -> torch.Tensor:
    """CPU: int8 [N, K] -> the packed uint8 [ceil16(N), ceil4(K)] the CPU kernels read."""
    return _ops.pack_weight.default(wq)


def unpack_weight(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Inverse of `pack_weight`: back to int8 [n, k]."""
    return _ops.unpack_weight.default(packed, n, k)


def quantize_rowwise(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantization per row of the last dim -> (int8 q, float32 scale)."""
    return _ops.quantize_rowwise.default(x, bits)


def norm_quantize(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    rms: bool = False,
    bits: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm (or RMSNorm) of the last dim, and its per-token quantization, in one pass:
    (y in x's dtype, int8 q, float32 scale) with (q, scale) == quantize_rowwise(y, bits)
    exactly, so int8_mm(q, ..., scale, ...) computes linear_w8a8(y, ...) bit for bit."""
    return _ops.norm_quantize.default(x, weight, bias, eps, rms, bits)


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 a [M, K] @ int8 b [N, K]^T -> exact int32 [M, N]."""
    return _ops.int_mm.default(a, b)


def int8_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(a @ b^T) * a_scale[:, None] * b_scale[None, :] + bias, in out_dtype (default fp32)."""
    return _ops.int8_mm.default(a, b, a_scale, b_scale, bias, out_dtype)


def linear_w8a8(
    x: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Dynamic per-token int8 activations x int8 weights; output in x's dtype."""
    return _ops.linear_w8a8.default(x, wq, w_scale, bias)


def linear_w8a16(
    x: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Weight-only int8: x @ (wq * w_scale[:, None])^T + bias, dequantized in the kernel."""
    return _ops.linear_w8a16.default(x, wq, w_scale, bias)


def linear_w8a8_act(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    """activation(linear_w8a8(x, wq, w_scale, bias)), the activation ("relu", "gelu",
    "gelu_tanh", "silu" or "none") applied in the GEMM's epilogue, in fp32."""
    return _ops.linear_w8a8_act.default(x, wq, w_scale, bias, activation)


def linear_w8a16_act(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
) -> torch.Tensor:
    """activation(linear_w8a16(x, wq, w_scale, bias)), fused as in linear_w8a8_act."""
    return _ops.linear_w8a16_act.default(x, wq, w_scale, bias, activation)


def fake_quant(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    axis: int,
    qmin: int,
    qmax: int,
) -> torch.Tensor:
    """Affine quantize-dequantize, per tensor (scale of one element) or per channel
    along `axis`; straight-through gradient for x inside [qmin, qmax]. Same numbers
    as torch.fake_quantize_per_{tensor,channel}_affine."""
    return _ops.fake_quant.default(x, scale, zero_point, axis, qmin, qmax)


def fake_quant_group(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    group_size: int,
    qmin: int,
    qmax: int,
) -> torch.Tensor:
    """Per-group fake-quant along the last dim: scale / zero_point [..., K // group_size]."""
    return _ops.fake_quant_group.default(x, scale, zero_point, group_size, qmin, qmax)


def fake_quant_lsq(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    axis: int,
    qmin: int,
    qmax: int,
    grad_factor: float = 1.0,
) -> torch.Tensor:
    """Learned step size (LSQ / LSQ+): gradients for x, scale and zero_point. Same
    numbers as torch._fake_quantize_learnable_per_{tensor,channel}_affine."""
    return _ops.fake_quant_lsq.default(x, scale, zero_point, axis, qmin, qmax, grad_factor)


def pack_lstm_weight(w: torch.Tensor) -> torch.Tensor:
    """CPU: int8 [4 * hidden, K] gate weight -> the gate-interleaved packed layout."""
    return _ops.pack_lstm_weight.default(w)


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
    """One int8 LSTM layer/direction over x [T, B, I] -> (y [T, B, H], h_T, c_T).

    Gate order i, f, g, o as nn.LSTM; weights int8 with per-row scales (or
    pack_lstm_weight's layout); optional projection w_hr (proj_size); batch_sizes
    [T] (non-increasing) runs only the first batch_sizes[t] rows at step t, as a
    PackedSequence needs."""
    return _ops.lstm_w8a8.default(
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
    )


def lowrank_mm(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """(x @ a^T) @ b^T + bias with a [rank, K], b [N, rank]; gradients for x, a, b, bias."""
    return _ops.lowrank_mm.default(x, a, b, bias)


def lora_w8a8(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """linear_w8a8(x, wq, w_scale, bias) + scaling * (x @ a^T) @ b^T, with the adapter
    a [r, K], b [N, r] added in the int8 GEMM's epilogue; gradients for x, a, b, bias."""
    return _ops.lora_w8a8.default(x, wq, w_scale, bias, a, b, float(scaling))


def lora_w8a16(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """lora_w8a8 on a weight-only base: linear_w8a16(x, wq, w_scale, bias) + the adapter."""
    return _ops.lora_w8a16.default(x, wq, w_scale, bias, a, b, float(scaling))
