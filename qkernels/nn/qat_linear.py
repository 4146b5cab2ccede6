"""QATLinear: quantization-aware training of a Linear layer, with an exact
hand-off to Int8Linear.

Weights are fake-quantized per output channel, symmetric int8 ([-127, 127]),
from their absmax (or from learned LSQ scales). Activations are fake-quantized
either per token, dynamically, with the arithmetic of `linear_w8a8`
("dynamic"), or per tensor with one static scale that is calibrated from the
running absmax ("minmax"), its moving average ("ema"), or learned ("lsq").
`to_int8()` quantizes with the same formulas, so the Int8Linear it returns
computes what the QAT module trained against, up to float accumulation order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qkernels import ops
from qkernels.nn.int8_linear import Int8Linear, dense_weight

QMAX = 127
ACT_MODES = ("dynamic", "minmax", "ema", "lsq")


def _straight_through(x: torch.Tensor, fq: torch.Tensor) -> torch.Tensor:
    """fq in the forward, identity gradient to x (every element is in range)."""
    return x + (fq - x).detach()


def weight_scale_from_absmax(w: torch.Tensor) -> torch.Tensor:
    absmax = w.detach().float().abs().amax(dim=1)
    return torch.where(absmax == 0, torch.ones_like(absmax), absmax / QMAX)


def positive(scale: torch.Tensor) -> torch.Tensor:
    """A learned scale as the kernels take it: |scale|, at least 1e-8. An optimizer
    step can push a learned scale through zero; |.| keeps it usable and trainable."""
    return scale.abs().clamp_min(1e-8)


def quantize_with_scale(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 levels with fake_quant's arithmetic: round(w * (1 / scale)), clamped."""
    inv = 1.0 / scale.float().reshape(-1, *([1] * (w.dim() - 1)))
    return torch.round(w.detach().float() * inv).clamp(-QMAX, QMAX).to(torch.int8)


class QATLinear(nn.Module):
    """Drop-in for nn.Linear that trains against int8 rounding (see module doc)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        act: str = "dynamic",
        weight_lsq: bool = False,
        ema_momentum: float = 0.9,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if act not in ACT_MODES:
            raise ValueError(f"QATLinear: act must be one of {ACT_MODES}, got {act!r}")
        if not 0.0 <= ema_momentum < 1.0:
            raise ValueError(f"QATLinear: ema_momentum must be in [0, 1), got {ema_momentum}")
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.act, self.weight_lsq, self.ema_momentum = act, weight_lsq, ema_momentum
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(in_features) if in_features else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        if weight_lsq:
            self.weight_scale = nn.Parameter(weight_scale_from_absmax(self.weight))
            self.register_buffer("weight_zero_point", torch.zeros(out_features, device=device))
        if act != "dynamic":
            # act_scale: float32 [1]; 0 until calibrated / initialised from data.
            scale = torch.zeros(1, device=device)
            if act == "lsq":
                self.act_scale = nn.Parameter(scale)
                self._lsq_ready = False  # a Python flag: no per-step data-dependent check
            else:
                self.register_buffer("act_scale", scale)
            self.register_buffer("act_zero_point", torch.zeros(1, device=device))

    @classmethod
    def from_float(
        cls,
        module: nn.Module,
        act: str = "dynamic",
        weight_lsq: bool = False,
        ema_momentum: float = 0.9,
    ) -> QATLinear:
        """From a trained nn.Linear or GPT-2 Conv1D (weights copied, not shared)."""
        w = dense_weight(module).detach()
        new = cls(
            w.shape[1],
            w.shape[0],
            bias=module.bias is not None,
            act=act,
            weight_lsq=weight_lsq,
            ema_momentum=ema_momentum,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(w)
            if new.bias is not None:
                new.bias.copy_(module.bias.detach())
            if weight_lsq:
                new.weight_scale.copy_(weight_scale_from_absmax(w))
        return new

    # ---- fake quantization ----

    def weight_scale_value(self) -> torch.Tensor:
        if self.weight_lsq:
            return positive(self.weight_scale.detach().float())
        return weight_scale_from_absmax(self.weight)

    def fake_quant_weight(self) -> torch.Tensor:
        if self.weight_lsq:
            g = 1.0 / math.sqrt(self.weight.numel() / self.out_features * QMAX)
            return ops.fake_quant_lsq(
                self.weight, positive(self.weight_scale), self.weight_zero_point, 0, -QMAX, QMAX, g
            )
        scale = weight_scale_from_absmax(self.weight)
        zero = torch.zeros(self.out_features, dtype=torch.int32, device=scale.device)
        return ops.fake_quant(self.weight, scale, zero, 0, -QMAX, QMAX)

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        absmax = x.detach().float().abs().amax()
        scale = torch.where(absmax == 0, torch.ones_like(absmax), absmax / QMAX).reshape(1)
        fresh = self.act_scale == 0
        if self.act == "minmax":
            self.act_scale.copy_(torch.where(fresh, scale, torch.maximum(self.act_scale, scale)))
        elif self.act == "ema":
            m = self.ema_momentum
            self.act_scale.copy_(torch.where(fresh, scale, m * self.act_scale + (1 - m) * scale))
        elif not self._lsq_ready:  # initialise once from data (LSQ paper: 2 mean|x| / sqrt(qmax))
            init = (2 * x.detach().float().abs().mean() / math.sqrt(QMAX)).clamp_min(1e-8)
            self.act_scale.copy_(torch.where(fresh, init.reshape(1), self.act_scale))
            self._lsq_ready = True

    def fake_quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:  # an empty batch: nothing to quantize or to calibrate from
            return x
        if self.act == "dynamic":
            # The arithmetic of linear_w8a8's fused per-token quantization.
            q, s = ops.quantize_rowwise(x.detach())
            return _straight_through(x, (q.float() * s.unsqueeze(-1)).to(x.dtype))
        if self.training:
            self._observe(x)
        if self.act == "lsq":
            g = 1.0 / math.sqrt(x.numel() * QMAX)
            return ops.fake_quant_lsq(
                x, positive(self.act_scale), self.act_zero_point, 0, -QMAX, QMAX, g
            )
        zero = self.act_zero_point.to(torch.int32)
        return ops.fake_quant(x, self.act_scale.detach(), zero, 0, -QMAX, QMAX)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.act == "lsq":
            self._lsq_ready = bool((self.act_scale != 0).all())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fake_quant_weight().to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(self.fake_quant_input(x), w, bias)

    # ---- hand-off ----

    @torch.no_grad()
    def to_int8(self) -> Int8Linear:
        """The Int8Linear (w8a8) computing what this module's forward computes."""
        static = self.act != "dynamic"
        if static and bool(self.act_scale == 0):
            raise RuntimeError(
                "QATLinear.to_int8: the activation scale was never calibrated; "
                "run some batches through the module first"
            )
        scale = self.weight_scale_value()
        out = Int8Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            mode="w8a8",
            static_act=static,
            device=self.weight.device,
            dtype=None if self.bias is None else self.bias.dtype,
        )
        out.load_int8(
            quantize_with_scale(self.weight, scale),
            scale,
            None if self.bias is None else self.bias.detach().clone(),
            act_scale=positive(self.act_scale.detach()) if static else None,
        )
        return out

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "act": self.act,
            "weight_lsq": self.weight_lsq,
            "ema_momentum": self.ema_momentum,
        }

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, act={self.act}, weight_lsq={self.weight_lsq}"
        )
