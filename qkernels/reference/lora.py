"""LoRA family, in plain PyTorch: an int8 base plus scaling * (x a^T) b^T."""

from __future__ import annotations

import torch

from qkernels.reference.int8_gemm import linear_w8a8, linear_w8a16


def _adapter(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    return scaling * ((x.float() @ a.float().T) @ b.float().T)


def lora_w8a8(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    base = linear_w8a8(x.float(), wq, w_scale, bias)
    return (base + _adapter(x, a, b, scaling)).to(x.dtype)


def lora_w8a16(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    b: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    base = linear_w8a16(x.float(), wq, w_scale, bias)
    return (base + _adapter(x, a, b, scaling)).to(x.dtype)
