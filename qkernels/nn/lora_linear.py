"""LoRAInt8Linear: a frozen int8 base (W8A8 or W8A16) with a trainable LoRA adapter, in
PEFT's parameter names and initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn

from qkernels import ops
from qkernels.nn.int8_linear import Int8Linear, requantize


class LoRAInt8Linear(Int8Linear):
    """y = base(x) + scaling * lora_B(lora_A(dropout(x))), base an Int8Linear (frozen:
    its weight, scales and bias are buffers), lora_A [r, in] and lora_B [out, r] the
    only parameters. scaling = alpha / r, or alpha / sqrt(r) with use_rslora (PEFT's
    rsLoRA). Initialised as PEFT does: lora_A Kaiming-uniform(a=sqrt(5)), lora_B zero,
    so a fresh adapter leaves the base's output unchanged bit for bit.

    Forward: one fused op (ops.lora_w8a8 / lora_w8a16) whenever the adapter sees the
    same x as the base — always in eval mode or with dropout=0; in training with
    dropout > 0 the adapter reads dropout(x), so base and adapter run as two ops."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int = 16,
        alpha: float = 32.0,
        dropout: float = 0.0,
        use_rslora: bool = False,
        bias: bool = True,
        mode: str = "w8a8",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not (isinstance(r, int) and r >= 1):
            raise ValueError(f"LoRAInt8Linear: r must be an int >= 1, got {r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRAInt8Linear: dropout must be in [0, 1), got {dropout!r}")
        super().__init__(
            in_features, out_features, bias=bias, mode=mode, device=device, dtype=dtype
        )
        self.r, self.alpha, self.use_rslora = r, float(alpha), use_rslora
        self.scaling = self.alpha / (math.sqrt(r) if use_rslora else r)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        try:
            self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device))
            self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device))
        except (RuntimeError, MemoryError) as e:  # the allocator's own message names no r
            gb = r * (in_features + out_features) * 4 / 1e9
            raise ValueError(
                f"LoRAInt8Linear: r={r} needs lora_A [{r}, {in_features}] and lora_B "
                f"[{out_features}, {r}] ({gb:.3g} GB), which could not be allocated"
            ) from e
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    @classmethod
    def from_float(  # type: ignore[override]
        cls,
        module: nn.Module,
        mode: str = "w8a8",
        r: int = 16,
        alpha: float = 32.0,
        dropout: float = 0.0,
        use_rslora: bool = False,
    ) -> LoRAInt8Linear:
        """Quantize an nn.Linear / GPT-2 Conv1D per output channel and attach a fresh
        adapter."""
        return cls.from_int8(Int8Linear.from_float(module, mode), r, alpha, dropout, use_rslora)

    @classmethod
    def from_int8(
        cls,
        base: Int8Linear,
        r: int = 16,
        alpha: float = 32.0,
        dropout: float = 0.0,
        use_rslora: bool = False,
    ) -> LoRAInt8Linear:
        """A fresh adapter on an existing Int8Linear (dynamic activations only, no fused
        activation: qkernels.fusion.unfuse_activations puts one back as a module)."""
        if base.static_act or base.act_bits != 8:
            raise ValueError(
                "LoRAInt8Linear.from_int8: the base must quantize activations dynamically at "
                f"8 bits (got static_act={base.static_act}, act_bits={base.act_bits})"
            )
        if base.activation != "none":
            raise ValueError(
                f"LoRAInt8Linear.from_int8: the base applies activation={base.activation!r} "
                "in its epilogue, which the lora ops do not; unfuse it first "
                "(qkernels.fusion.unfuse_activations)"
            )
        device = base.weight_scale.device
        new = cls(
            base.in_features,
            base.out_features,
            r=r,
            alpha=alpha,
            dropout=dropout,
            use_rslora=use_rslora,
            bias=base.bias is not None,
            mode=base.mode,
            device=device,
            dtype=None if base.bias is None else base.bias.dtype,
        )
        if base.weight.device == device and base.is_packed == new.is_packed:
            # Same layout: share the base's buffers (no unpack / re-pack of the matrix).
            new.weight, new.weight_scale, new.bias = base.weight, base.weight_scale, base.bias
        else:
            new.load_int8(base.int8_weight(), base.weight_scale, base.bias)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = ops.lora_w8a8 if self.mode == "w8a8" else ops.lora_w8a16
        if not (self.training and isinstance(self.lora_dropout, nn.Dropout)):
            return fused(
                x, self.weight, self.weight_scale, self.bias, self.lora_A, self.lora_B, self.scaling
            )
        base = (ops.linear_w8a8 if self.mode == "w8a8" else ops.linear_w8a16)(
            x, self.weight, self.weight_scale, self.bias
        )
        xd = self.lora_dropout(x).to(self.lora_A.dtype)
        adapter = ops.lowrank_mm(xd, self.lora_A, self.lora_B * self.scaling)
        return base + adapter.to(base.dtype)

    def merged_float_weight(self) -> torch.Tensor:
        """dequant(W) + scaling * B A, float32 [out, in]: what merge() re-quantizes."""
        w = self.int8_weight().float() * self.weight_scale.reshape(-1, 1)
        return w + self.scaling * (self.lora_B.detach().float() @ self.lora_A.detach().float())

    def merge(self) -> Int8Linear:
        """An Int8Linear holding W + scaling * B A re-quantized per output channel. The
        merged module's `merge_error` is the relative Frobenius error of its weight
        against that float weight (what merging cost on top of the base's own int8
        rounding)."""
        q, scale, err = requantize(self.merged_float_weight())
        merged = Int8Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            mode=self.mode,
            device=self.weight_scale.device,
            dtype=None if self.bias is None else self.bias.dtype,
        )
        merged.load_int8(q, scale, self.bias)
        merged.merge_error = err
        return merged

    def spec(self) -> dict:
        spec = super().spec()
        # the fused lora ops quantize at 8 bits and apply no activation
        del spec["static_act"], spec["act_bits"], spec["activation"]
        dropout = self.lora_dropout.p if isinstance(self.lora_dropout, nn.Dropout) else 0.0
        return {
            **spec,
            "r": self.r,
            "alpha": self.alpha,
            "dropout": dropout,
            "use_rslora": self.use_rslora,
        }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}"
