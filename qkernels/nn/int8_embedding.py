"""Int8Embedding: an embedding table in int8 with one float32 scale per row."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qkernels import ops


class Int8Embedding(nn.Module):
    """Drop-in for a frozen nn.Embedding: the table is int8 [num_embeddings, dim] with one
    symmetric scale per row (per token, `quantize_rowwise`), and a lookup dequantizes only
    the rows it gathers: y = weight[ids] * weight_scale[ids]. The output takes the scale's
    dtype (float32 unless the module is cast)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(
                f"Int8Embedding: padding_idx must be within [-{num_embeddings}, "
                f"{num_embeddings}), got {padding_idx}"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx % num_embeddings if padding_idx is not None else None
        self.register_buffer(
            "weight",
            torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device),
        )
        self.register_buffer(
            "weight_scale", torch.ones(num_embeddings, dtype=torch.float32, device=device)
        )

    @staticmethod
    def can_freeze(module: nn.Embedding) -> bool:
        """False for the tables from_float refuses: max_norm or sparse gradients."""
        return module.max_norm is None and not module.sparse

    @classmethod
    def from_float(cls, module: nn.Embedding) -> Int8Embedding:
        if not cls.can_freeze(module):
            raise ValueError(
                "Int8Embedding: an nn.Embedding with max_norm (it renormalizes its rows on "
                "lookup) or sparse gradients cannot be frozen to int8"
            )
        w = module.weight.detach()
        new = cls(*w.shape, padding_idx=module.padding_idx, device=w.device)
        q, scale = ops.quantize_rowwise(w.float().contiguous())
        new.weight = q
        new.weight_scale = scale.reshape(-1)
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(ids, self.weight)
        return rows.to(self.weight_scale.dtype) * self.weight_scale[ids].unsqueeze(-1)

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "padding_idx": self.padding_idx,
        }

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per-row scales" + (
            f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        )
