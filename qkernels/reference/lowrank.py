"""Low-rank family, in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lowrank_mm(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    return F.linear(F.linear(x, a), b, bias)
