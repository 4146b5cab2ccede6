"""The "torch" CUDA backend: ops written as a few torch calls (cuBLAS), for the ops where
that was measured faster on a GPU than their fused kernels (`_backend.auto_backend`
says where). Each checks its arguments as the op's other backends do."""

from __future__ import annotations

import torch

from qkernels.meta.lowrank import (
    lowrank_backward_by_matmuls,
    lowrank_mm_backward_fake,
    lowrank_mm_fake,
)
from qkernels.reference import lowrank as reference


def lowrank_mm(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """(x a^T) b^T + bias as two matmuls, the [M, rank] intermediate in x's dtype."""
    lowrank_mm_fake(x, a, b, bias)
    return reference.lowrank_mm(x, a, b, bias)


def lowrank_mm_backward(
    grad: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, da, db) as five matmuls."""
    lowrank_mm_backward_fake(grad, x, a, b)
    return lowrank_backward_by_matmuls(grad.contiguous(), x, a, b)
