"""LoRA family, in plain PyTorch: an int8 base plus scaling * (x a^T) b^T."""

from __future__ import annotations

import torch

from qkernels.reference.int8_gemm import linear_w8a8, linear_w8a16


def _with_adapter(base, x, wq, w_scale, bias, a, b, scaling: float) -> torch.Tensor:
    """base(x) in float32 plus scaling * (x a^T) b^T, rounded once to x's dtype."""
    out = base(x.float(), wq, w_scale, bias)
    out = out + scaling * ((x.float() @ a.float().T) @ b.float().T)
    return out.to(x.dtype)


def lora_w8a8(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    return _with_adapter(linear_w8a8, x, wq, w_scale, bias, a, b, scaling)


def lora_w8a16(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    return _with_adapter(linear_w8a16, x, wq, w_scale, bias, a, b, scaling)
