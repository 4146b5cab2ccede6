"""LayerNorm / RMSNorm that hand their per-token int8 quantization to the next int8 GEMMs.

A transformer block's norm output feeds Linears (BERT: query, key, value and the
intermediate layer; Llama: q/k/v and gate/up) that each quantize it per token again.
A HandoffLayerNorm / HandoffRMSNorm computes the norm, its int8 rows and their scales in
one pass (`ops.norm_quantize`) and publishes them in the model's QuantizedHandoff; an
Int8Linear holding the same handoff runs `int8_mm` on those rows when its input *is*
that output (the same tensor object, not modified since): bit for bit what
`linear_w8a8` computes on it, without the quantization pass. Any other input, inputs on
another device, autograd and torch.compile take the plain path.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from qkernels import ops  # noqa: F401  (registers the ops' fake kernels)
from qkernels._common import FLOAT_DTYPES

_norm_quantize = torch.ops.qkernels.norm_quantize.default  # one dispatch, no wrapper

# transformers RMSNorm classes whose forward is Llama's: x * rsqrt(mean(x^2) + eps) * weight.
LLAMA_RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")


class QuantizedHandoff:
    """The last norm output of a model with its int8 rows and scales, quantized at
    `bits` (one per model). An entry is replaced as a whole, so a reader never sees
    the rows of one output with the tensor of another; it keeps the int8 rows (not the
    float output, held by a weak reference) alive until the next norm runs."""

    def __init__(self, bits: int = 8) -> None:
        self.bits = bits
        self._entry: tuple | None = None

    def publish(self, y: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> None:
        # Shaped as int8_mm takes them once here, not in each reader.
        rows = (q.view(-1, q.shape[-1]), scale.view(-1))
        self._entry = (weakref.ref(y), y._version, rows)

    def take(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(int8 rows [M, K], scales [M]) of `x` if x is the published output, unchanged."""
        entry = self._entry
        if entry is None or entry[0]() is not x or x._version != entry[1]:
            return None
        return entry[2]


def _kernel_applies(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> bool:
    """norm_quantize runs for CPU inference on float inputs whose dtype the parameters
    share (mixed dtypes promote differently in each module's own forward). Called on every
    forward: the cheap tests first, autograd's only with grad enabled."""
    dtype = x.dtype
    if x.device.type != "cpu" or dtype not in FLOAT_DTYPES or torch.compiler.is_compiling():
        return False
    if (weight is not None and weight.dtype != dtype) or (bias is not None and bias.dtype != dtype):
        return False
    if not torch.is_grad_enabled():
        return True
    return not (
        x.requires_grad
        or (weight is not None and weight.requires_grad)
        or (bias is not None and bias.requires_grad)
    )


class HandoffLayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last dim whose output's quantization goes to `handoff`.
    Same parameters and state_dict; outputs equal nn.LayerNorm's up to float rounding
    (fp32 sums in another order)."""

    handoff: QuantizedHandoff | None = None  # set by qkernels.fusion.connect_handoffs

    @classmethod
    def from_layer_norm(cls, ln: nn.LayerNorm) -> HandoffLayerNorm:
        """Wrap `ln`'s own parameters (shared, not copied)."""
        if len(ln.normalized_shape) != 1:
            raise ValueError(
                f"HandoffLayerNorm: normalizes the last dim only, got normalized_shape "
                f"{tuple(ln.normalized_shape)}"
            )
        new = cls(
            ln.normalized_shape,
            ln.eps,
            ln.elementwise_affine,
            bias=ln.bias is not None,
            device="meta",
        )
        new.weight, new.bias = ln.weight, ln.bias
        new.train(ln.training)
        return new

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return {
            "normalized_shape": self.normalized_shape[0],
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
            "bias": self.bias is not None,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        handoff, weight, bias = self.handoff, self.weight, self.bias
        if handoff is None or not _kernel_applies(x, weight, bias):
            return super().forward(x)
        y, q, scale = _norm_quantize(x, weight, bias, self.eps, False, handoff.bits)
        handoff.publish(y, q, scale)
        return y


class HandoffRMSNorm(nn.Module):
    """Llama's RMSNorm (`weight`, `variance_epsilon`, the same state_dict) whose output's
    quantization goes to `handoff`. The plain path is Llama's forward; the kernel rounds
    once where Llama rounds x * rstd to x's dtype before the weight multiply (1 ulp)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps
        self.handoff: QuantizedHandoff | None = None  # set by fusion.connect_handoffs

    @classmethod
    def from_rms_norm(cls, norm: nn.Module) -> HandoffRMSNorm:
        """Wrap a transformers Llama-style RMSNorm's own weight (shared, not copied)."""
        with torch.device("meta"):
            new = cls(norm.weight.shape[0], norm.variance_epsilon)
        new.weight = norm.weight
        new.train(norm.training)
        return new

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return {"hidden_size": self.weight.shape[0], "eps": self.variance_epsilon}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        handoff, weight = self.handoff, self.weight
        if handoff is None or not _kernel_applies(x, weight, None):
            h = x.to(torch.float32)
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
            return weight * h.to(x.dtype)
        y, q, scale = _norm_quantize(x, weight, None, self.variance_epsilon, True, handoff.bits)
        handoff.publish(y, q, scale)
        return y

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"
