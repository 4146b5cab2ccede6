"""Int8Linear: int8 weight with a per-output-channel scale, drop-in for nn.Linear."""

from __future__ import annotations

import torch
from torch import nn

from qkernels import ops
from qkernels._common import ACTIVATIONS, apply_activation
from qkernels.nn._packed import PackedWeights
from qkernels.nn.norm_handoff import QuantizedHandoff

MODES = ("w8a8", "w8a16")


def is_linear_like(module: nn.Module) -> bool:
    """nn.Linear, or transformers' GPT-2 Conv1D (a Linear with a transposed weight; matched
    by name so that transformers stays an optional dependency)."""
    return isinstance(module, nn.Linear) or (
        type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx")
    )


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The [out, in] weight of an nn.Linear or of transformers' GPT-2 Conv1D
    (which stores it transposed, [in, out])."""
    if isinstance(module, nn.Linear):
        return module.weight
    if is_linear_like(module):
        return module.weight.t()
    raise TypeError(f"expected nn.Linear or transformers Conv1D, got {type(module).__name__}")


def requantize(exact: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A float [out, in] weight as int8 per output channel: (q, scale, relative Frobenius
    error of dequant(q) against `exact`) — what merging an adapter into int8 costs."""
    q, scale = ops.quantize_rowwise(exact.contiguous())
    err = (q.float() * scale.reshape(-1, 1) - exact).norm() / exact.norm().clamp_min(1e-30)
    return q, scale, float(err)


def check_act_bits(owner: str, act_bits: int, mode: str, static_act: bool = False) -> None:
    """act_bits other than 8 exists for dynamic w8a8 only; a clear error elsewhere."""
    if isinstance(act_bits, bool) or not isinstance(act_bits, int) or not 2 <= act_bits <= 8:
        raise ValueError(f"{owner}: act_bits must be an int in [2, 8], got {act_bits!r}")
    if act_bits != 8 and (mode != "w8a8" or static_act):
        raise ValueError(
            f"{owner}: act_bits={act_bits} needs mode='w8a8' with dynamic activations "
            f"(got mode={mode!r}, static_act={static_act})"
        )


class Int8Linear(PackedWeights):
    """y = x @ dequant(W)^T + b with W int8 and one float32 scale per output row.

    mode="w8a8": x is quantized per token on the fly (dynamic) and the product
    runs in int8; mode="w8a16": weight-only, x stays in its float dtype.
    static_act=True (w8a8 only): x is quantized with one calibrated per-tensor
    scale, `act_scale`, as QATLinear's static modes train it.
    act_bits (dynamic w8a8 only, 2-8): the per-token activation levels, +-(2^(bits-1) - 1).
    7 trades one bit of activation precision for speed on AVX2-only CPUs, where the
    int8 GEMM's multiply is fastest for |a| <= 64 (DESIGN.md, "The AVX2 ceiling"), as
    fbgemm's reduce_range does; 8 (the default) everywhere else.
    activation ("none", "relu", "gelu", "gelu_tanh", "silu"): applied to the output in
    the GEMM's epilogue (linear_w8a8_act / linear_w8a16_act; qkernels.fusion sets it
    where a model applies that activation right after this layer).

    On CPU the `weight` buffer holds the kernel's packed layout (see
    DESIGN.md); `state_dict()` always holds the portable int8 [out, in] weight,
    and moving the module between devices re-lays it out.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        mode: str = "w8a8",
        static_act: bool = False,
        act_bits: int = 8,
        activation: str = "none",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"Int8Linear: activation must be one of {ACTIVATIONS}, got {activation!r}"
            )
        if mode not in MODES:
            raise ValueError(f"Int8Linear: mode must be one of {MODES}, got {mode!r}")
        if static_act and mode != "w8a8":
            raise ValueError("Int8Linear: static_act needs mode='w8a8'")
        check_act_bits("Int8Linear", act_bits, mode, static_act)
        self.in_features = in_features
        self.out_features = out_features
        self.mode = mode
        self.static_act = static_act
        self.act_bits = act_bits
        self.activation = activation
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer(
            "weight_scale", torch.ones(out_features, dtype=torch.float32, device=device)
        )
        if bias:
            self.register_buffer(
                "bias", torch.zeros(out_features, dtype=dtype or torch.float32, device=device)
            )
        else:
            self.bias = None
        if static_act:
            self.register_buffer("act_scale", torch.ones(1, dtype=torch.float32, device=device))
        self._relayout()

    @classmethod
    def from_float(cls, module: nn.Module, mode: str = "w8a8", act_bits: int = 8) -> Int8Linear:
        """Quantize an nn.Linear / GPT-2 Conv1D: symmetric int8 per output channel."""
        w = dense_weight(module).detach()
        out_features, in_features = w.shape
        new = cls(
            in_features,
            out_features,
            bias=module.bias is not None,
            mode=mode,
            act_bits=act_bits,
            device=w.device,
            dtype=module.bias.dtype if module.bias is not None else None,
        )
        q, scale = ops.quantize_rowwise(w.float().contiguous())
        new.load_int8(q, scale, None if module.bias is None else module.bias.detach())
        return new

    @property
    def is_packed(self) -> bool:
        return self._is_packed()

    def _packed_weights(self):
        yield (
            "weight",
            ops.pack_weight,
            lambda p: ops.unpack_weight(p, self.out_features, self.in_features),
        )

    def load_int8(
        self,
        weight: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None = None,
        act_scale: torch.Tensor | None = None,
    ) -> None:
        """Set int8 weight [out, in], float scale [out], optional bias and (static
        activations) the per-tensor activation scale."""
        if weight.dtype != torch.int8 or tuple(weight.shape) != (
            self.out_features,
            self.in_features,
        ):
            raise ValueError(
                f"Int8Linear.load_int8: weight must be int8 [{self.out_features}, "
                f"{self.in_features}], got {weight.dtype} {list(weight.shape)}"
            )
        device = self.weight_scale.device
        self.weight = weight.to(device).contiguous()
        self.weight_scale = scale.to(device=device, dtype=torch.float32).reshape(-1).contiguous()
        if bias is not None:
            self.bias = bias.to(device).contiguous()
        if act_scale is not None:
            if not self.static_act:
                raise ValueError("Int8Linear.load_int8: act_scale given but static_act=False")
            self.act_scale = act_scale.to(device=device, dtype=torch.float32).reshape(1)
        self._relayout()

    def int8_weight(self) -> torch.Tensor:
        """The portable int8 [out, in] weight, whatever the device layout."""
        if self.is_packed:
            return ops.unpack_weight(self.weight, self.out_features, self.in_features)
        return self.weight

    # The quantized output of the norm before this layer: set by qkernels.fusion's
    # connect_handoffs, only on dynamic w8a8 layers without an epilogue activation whose
    # act_bits are the handoff's.
    handoff: QuantizedHandoff | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        handoff = self.handoff
        # The activation, mode or activation bits may have changed since the handoff was
        # given: checked here, on every call (the rows are the handoff's bits, dynamic).
        if (
            handoff is not None
            and self.activation == "none"
            and self.mode == "w8a8"
            and not self.static_act
            and self.act_bits == handoff.bits
        ):
            rows = handoff.take(x)
            if rows is not None and not (x.requires_grad and torch.is_grad_enabled()):
                return self._int8_mm(x, *rows)
        if self.activation != "none" and not self.static_act and self.act_bits == 8:
            linear_act = ops.linear_w8a8_act if self.mode == "w8a8" else ops.linear_w8a16_act
            return linear_act(x, self.weight, self.weight_scale, self.bias, self.activation)
        return apply_activation(self.pre_activation(x), self.activation)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output before its epilogue activation (what an adapter adds to
        before the activation applies; qkernels.peft_lora)."""
        if self.static_act:
            return self._forward_static(x)
        if self.act_bits != 8:
            return self._forward_act_bits(x)
        linear = ops.linear_w8a8 if self.mode == "w8a8" else ops.linear_w8a16
        return linear(x, self.weight, self.weight_scale, self.bias)

    def _forward_static(self, x: torch.Tensor) -> torch.Tensor:
        # Same levels as QATLinear's static fake-quant: round(x * (1 / s)), clamped.
        x2d = x.reshape(-1, self.in_features)
        q = torch.round(x2d.float() * (1.0 / self.act_scale)).clamp(-127, 127).to(torch.int8)
        return self._int8_mm(x, q, self.act_scale.expand(x2d.shape[0]).contiguous())

    def _forward_act_bits(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)
        return self._int8_mm(x, *ops.quantize_rowwise(x2d, self.act_bits))

    def _int8_mm(self, x: torch.Tensor, q: torch.Tensor, a_scale: torch.Tensor) -> torch.Tensor:
        """The int8 GEMM of x's already-quantized rows (q, a_scale), in x's shape and dtype."""
        out = ops.int8_mm(q, self.weight, a_scale, self.weight_scale, self.bias, x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "mode": self.mode,
            "static_act": self.static_act,
            "act_bits": self.act_bits,
            "activation": self.activation,
        }

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, mode={self.mode}"
            + (", static_act=True" if self.static_act else "")
            + (f", act_bits={self.act_bits}" if self.act_bits != 8 else "")
            + (f", activation={self.activation}" if self.activation != "none" else "")
        )
