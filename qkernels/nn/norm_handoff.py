"""LayerNorm / RMSNorm that hand their per-token int8 quantization to the next int8 GEMMs.

A transformer block's norm output feeds Linears (BERT: query, key, value and the
intermediate layer; Llama: q/k/v and gate/up) that each quantize it per token again.
A HandoffLayerNorm / HandoffRMSNorm computes the norm, its int8 rows and their scales in
one pass (`ops.norm_quantize`) and publishes them in the model's QuantizedHandoff; an
Int8Linear holding the same handoff runs `int8_mm` on those rows when its input *is*
that output (the same tensor object, its version counter unchanged): bit for bit what
`linear_w8a8` computes on it, without the quantization pass.

Opt-in (`fuse_norms=True`), because the handoff trusts the version counter: a write
that bypasses it (`y.data.mul_`, a numpy or DLPack view of y) leaves stale rows that a
Linear would read. Under inference_mode (no version counters), with autograd, on other
devices and under torch.compile nothing is published and each Linear quantizes itself.

The norm's output does not depend on the mode: on CPU the kernel computes it whether or
not autograd records (the backward is torch's norm backward, recomputed), so a model
gives bit-identical outputs in grad mode, under no_grad and under inference_mode.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.nn import functional as F

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
        if y.is_inference():  # no version counter to vouch for the rows later
            self._entry = None
            return
        # Shaped as int8_mm takes them once here, not in each reader.
        rows = (q.view(-1, q.shape[-1]), scale.view(-1))
        self._entry = (weakref.ref(y), y._version, rows)

    def take(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(int8 rows [M, K], scales [M]) of `x` if x is the published output, unchanged."""
        entry = self._entry
        if entry is None or entry[0]() is not x or x.is_inference() or x._version != entry[1]:
            return None
        return entry[2]


def _kernel_applies(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> bool:
    """norm_quantize computes the norm on CPU for float inputs whose dtype the parameters
    share (mixed dtypes promote differently in each module's own forward), in every
    grad mode. Called on every forward: cheap tests only."""
    dtype = x.dtype
    if x.device.type != "cpu" or dtype not in FLOAT_DTYPES or torch.compiler.is_compiling():
        return False
    return (weight is None or weight.dtype == dtype) and (bias is None or bias.dtype == dtype)


def _records_autograd(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _KernelNorm(torch.autograd.Function):
    """The kernel's norm output with torch's norm gradients: the forward values are the
    kernel's in every grad mode; the backward recomputes the module's plain forward."""

    @staticmethod
    def forward(ctx, module, x, weight, bias, eps, rms):  # noqa: ANN001
        ctx.module = module
        ctx.save_for_backward(x, weight, bias)
        return _norm_quantize(x, weight, bias, eps, rms, 8)[0]

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        x, weight, bias = ctx.saved_tensors
        inputs = [
            t.detach().requires_grad_(t.requires_grad) if t is not None else None
            for t in (x, weight, bias)
        ]
        with torch.enable_grad():
            y = ctx.module.plain_forward(*inputs)
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        grads = iter(torch.autograd.grad(y, wanted, grad))
        out = [next(grads) if t is not None and t.requires_grad else None for t in inputs]
        return None, *out, None, None


def _norm(module, x, weight, bias, eps: float, rms: bool) -> torch.Tensor:  # noqa: ANN001
    """The norm of x by the kernel, publishing its int8 rows where nothing records
    autograd; torch's plain forward where the module has no handoff (no Linear takes its
    rows) or the kernel does not apply. Either way the same in every grad mode."""
    handoff = module.handoff
    if handoff is None or not _kernel_applies(x, weight, bias):
        return module.plain_forward(x, weight, bias)
    if _records_autograd(x, weight, bias):
        return _KernelNorm.apply(module, x, weight, bias, eps, rms)
    y, q, scale = _norm_quantize(x, weight, bias, eps, rms, handoff.bits)
    handoff.publish(y, q, scale)
    return y


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

    def plain_forward(self, x, weight, bias) -> torch.Tensor:  # noqa: ANN001
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm(self, x, self.weight, self.bias, self.eps, False)


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

    def plain_forward(self, x, weight, bias=None) -> torch.Tensor:  # noqa: ANN001
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return weight * h.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm(self, x, self.weight, None, self.variance_epsilon, True)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"
