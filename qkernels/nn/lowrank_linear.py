"""LowRankLinear: W ~ B @ A from a truncated SVD, forward through lowrank_mm."""

from __future__ import annotations

import torch
from torch import nn

from qkernels import ops
from qkernels.nn.int8_linear import dense_weight


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank whose singular values keep `energy` of the squared sum."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"LowRankLinear: energy must be in (0, 1], got {energy}")
    power = singular_values.double().square()
    kept = power.cumsum(0) / power.sum().clamp_min(1e-300)
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype)).item()) + 1


class LowRankLinear(nn.Module):
    """y = (x @ A^T) @ B^T + bias with A [rank, in], B [out, rank], both trainable."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"LowRankLinear: rank must be in [1, {min(in_features, out_features)}], got {rank}"
            )
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.a = nn.Parameter(torch.empty(rank, in_features, **factory))
        self.b = nn.Parameter(torch.empty(out_features, rank, **factory))
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None
        nn.init.kaiming_uniform_(self.a, a=5**0.5)
        nn.init.zeros_(self.b)

    @classmethod
    def from_linear(
        cls, module: nn.Module, rank: int | None = None, energy: float | None = None
    ) -> LowRankLinear:
        """Truncated SVD of an nn.Linear / GPT-2 Conv1D weight, by rank or kept energy;
        the singular values are split evenly (sqrt) between A and B."""
        if (rank is None) == (energy is None):
            raise ValueError("LowRankLinear.from_linear: give exactly one of rank or energy")
        w = dense_weight(module).detach()
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        r = rank if rank is not None else rank_for_energy(s, energy)
        r = max(1, min(r, s.numel()))
        root = s[:r].sqrt()
        new = cls(
            w.shape[1], w.shape[0], r, bias=module.bias is not None, device=w.device, dtype=w.dtype
        )
        with torch.no_grad():
            new.a.copy_(root[:, None] * vh[:r])
            new.b.copy_(u[:, :r] * root[None, :])
            if module.bias is not None:
                new.bias.copy_(module.bias.detach())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return ops.lowrank_mm(x, self.a.to(x.dtype), self.b.to(x.dtype), bias)

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.bias is not None,
        }

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, bias={self.bias is not None}"
        )


class Int8LowRankLinear(nn.Module):
    """A LowRankLinear run as two W8A8 int8 GEMMs: x -> [.., rank] -> [.., out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        from qkernels.nn.int8_linear import Int8Linear

        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = Int8Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = Int8Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    def from_lowrank(cls, module: LowRankLinear) -> Int8LowRankLinear:
        from qkernels.nn.int8_linear import Int8Linear

        new = cls(
            module.in_features,
            module.out_features,
            module.rank,
            bias=module.bias is not None,
            device=module.a.device,
        )
        new.down = Int8Linear.from_float(_AsLinear(module.a, None))
        new.up = Int8Linear.from_float(_AsLinear(module.b, module.bias))
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.up.bias is not None,
        }

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class _AsLinear(nn.Linear):
    """A view of (weight, bias) as an nn.Linear, for Int8Linear.from_float."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
