"""int8 GEMM family: fake (meta) kernels, which are also the argument checks that the
Triton kernels run, so every backend raises the same errors; and the autograd of
linear_w8a8 / linear_w8a16 (gradients for x and bias; the int8 weight is frozen)."""

from __future__ import annotations

import math

import torch

from qkernels import _library  # noqa: F401  (defines the ops first)
from qkernels._common import (
    ACTIVATIONS,
    FLOAT_DTYPES,
    GROUP_COLS,
    K_STEP,
    apply_activation,
    check,
    check_same_device,
    describe,
    round_up,
)


def check_scale(op: str, name: str, s: torch.Tensor, n: int, expect: str) -> None:
    shape_ok = (s.dim() == 1 and s.shape[0] == n) or (
        s.dim() == 2 and s.numel() == n and 1 in s.shape
    )
    check(
        s.dtype == torch.float32 and shape_ok,
        op,
        lambda: f"{name} must be float32 of shape {expect} (={n}), got {describe(s)}",
    )


def check_bias(op: str, bias: torch.Tensor | None, n: int) -> None:
    if bias is not None:
        check(
            bias.dtype.is_floating_point and bias.dim() == 1 and bias.shape[0] == n,
            op,
            lambda: f"bias must be a float tensor of shape [N] (={n}), got {describe(bias)}",
        )


def check_float_x(op: str, x: torch.Tensor) -> None:
    check(x.dim() >= 1, op, lambda: f"x must have at least one dimension, got {describe(x)}")
    check(
        x.dtype in FLOAT_DTYPES,
        op,
        lambda: f"x must be float32, bfloat16 or float16, got {describe(x)}",
    )


def check_weight(op: str, name: str, w: torch.Tensor, n: int, k: int) -> None:
    """int8 [N, K], or (on CPU) the packed uint8 [ceil16(N), ceil4(K)]."""
    if w.dtype == torch.int8:
        check(
            w.dim() == 2 and tuple(w.shape) == (n, k),
            op,
            lambda: f"{name} must be int8 of shape [N, K] = [{n}, {k}], got {describe(w)}",
        )
        return
    np_, kp = round_up(n, GROUP_COLS), round_up(k, K_STEP)
    check(
        w.dtype == torch.uint8 and w.dim() == 2 and tuple(w.shape) == (np_, kp),
        op,
        lambda: (
            f"{name} must be int8 [N, K] = [{n}, {k}] or a packed weight from "
            f"qkernels.ops.pack_weight (uint8 [{np_}, {kp}]), got {describe(w)}"
        ),
    )


def scale_count(op: str, name: str, s: torch.Tensor) -> int:
    check(s.dim() >= 1, op, lambda: f"{name} must be float32 of shape [N], got {describe(s)}")
    return s.numel()


@torch.library.register_fake("qkernels::pack_weight")
def pack_weight_fake(wq: torch.Tensor) -> torch.Tensor:
    check(
        wq.dtype == torch.int8 and wq.dim() == 2,
        "pack_weight",
        lambda: f"wq must be int8 of shape [N, K], got {describe(wq)}",
    )
    n, k = wq.shape
    return wq.new_empty((round_up(n, GROUP_COLS), round_up(k, K_STEP)), dtype=torch.uint8)


@torch.library.register_fake("qkernels::unpack_weight")
def unpack_weight_fake(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    check(
        packed.dtype == torch.uint8
        and packed.dim() == 2
        and tuple(packed.shape) == (round_up(n, GROUP_COLS), round_up(k, K_STEP)),
        "unpack_weight",
        lambda: (
            f"packed must be uint8 of shape [{round_up(n, GROUP_COLS)}, {round_up(k, K_STEP)}] "
            f"for N={n}, K={k}, got {describe(packed)}"
        ),
    )
    return packed.new_empty((n, k), dtype=torch.int8)


@torch.library.register_fake("qkernels::quantize_rowwise")
def quantize_rowwise_fake(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    check(2 <= bits <= 8, "quantize_rowwise", lambda: f"bits must be in [2, 8], got {bits}")
    check_float_x("quantize_rowwise", x)
    return (
        torch.empty_like(x, dtype=torch.int8, memory_format=torch.contiguous_format),
        x.new_empty(x.shape[:-1], dtype=torch.float32),
    )


@torch.library.register_fake("qkernels::norm_quantize")
def norm_quantize_fake(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    rms: bool = False,
    bits: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    op = "norm_quantize"
    check(2 <= bits <= 8, op, lambda: f"bits must be in [2, 8], got {bits}")
    check(math.isfinite(eps) and eps >= 0, op, lambda: f"eps must be finite and >= 0, got {eps}")
    check_float_x(op, x)
    check_same_device(op, x, weight=weight, bias=bias)
    k = x.shape[-1]
    check(
        k >= 1,
        op,
        lambda: f"x must have a non-empty last dimension to normalize, got {describe(x)}",
    )
    for name, t in (("weight", weight), ("bias", bias)):
        check(
            t is None or (t.dtype.is_floating_point and t.dim() == 1 and t.shape[0] == k),
            op,
            lambda name=name, t=t: (
                f"{name} must be a float tensor of shape [K] (={k}), got {describe(t)}"
            ),
        )
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(x, dtype=torch.int8, memory_format=torch.contiguous_format),
        x.new_empty(x.shape[:-1], dtype=torch.float32),
    )


@torch.library.register_fake("qkernels::int_mm")
def int_mm_fake(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    op = "int_mm"
    check(
        a.dtype == torch.int8 and a.dim() == 2,
        op,
        lambda: f"a must be int8 of shape [M, K], got {describe(a)}",
    )
    check(
        b.dtype == torch.int8 and b.dim() == 2 and b.shape[1] == a.shape[1],
        op,
        lambda: (
            f"b must be int8 of shape [N, K] with K == a.shape[1] (={a.shape[1]}), "
            f"got {describe(b)}"
        ),
    )
    check_same_device(op, a, b=b)
    return a.new_empty((a.shape[0], b.shape[0]), dtype=torch.int32)


@torch.library.register_fake("qkernels::int8_mm")
def int8_mm_fake(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    op = "int8_mm"
    check(
        a.dtype == torch.int8 and a.dim() == 2,
        op,
        lambda: f"a must be int8 of shape [M, K], got {describe(a)}",
    )
    m, k = a.shape
    n = scale_count(op, "b_scale", b_scale)
    check_scale(op, "b_scale", b_scale, n, "[N] or [1, N]")
    check_scale(op, "a_scale", a_scale, m, "[M] or [M, 1]")
    dtype = out_dtype or torch.float32
    check(
        dtype in FLOAT_DTYPES,
        op,
        lambda: f"out_dtype must be float32, bfloat16 or float16, got {dtype}",
    )
    check_weight(op, "b", b, n, k)
    check_bias(op, bias, n)
    check_same_device(op, a, b=b, a_scale=a_scale, b_scale=b_scale, bias=bias)
    return a.new_empty((m, n), dtype=dtype)


def linear_fake(
    op: str,
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    check_float_x(op, x)
    n = scale_count(op, "w_scale", w_scale)
    check_scale(op, "w_scale", w_scale, n, "[N]")
    check_weight(op, "wq", wq, n, x.shape[-1])
    check_bias(op, bias, n)
    check_same_device(op, x, wq=wq, w_scale=w_scale, bias=bias)
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("qkernels::linear_w8a8")
def linear_w8a8_fake(x, wq, w_scale, bias=None):
    return linear_fake("linear_w8a8", x, wq, w_scale, bias)


@torch.library.register_fake("qkernels::linear_w8a16")
def linear_w8a16_fake(x, wq, w_scale, bias=None):
    return linear_fake("linear_w8a16", x, wq, w_scale, bias)


def check_activation(op: str, activation: str) -> None:
    names = ", ".join(repr(a) for a in ACTIVATIONS)
    check(
        activation in ACTIVATIONS,
        op,
        lambda: f"activation must be one of {names}, got {activation!r}",
    )


@torch.library.register_fake("qkernels::linear_w8a8_act")
def linear_w8a8_act_fake(x, wq, w_scale, bias, activation):
    check_activation("linear_w8a8_act", activation)
    return linear_fake("linear_w8a8_act", x, wq, w_scale, bias)


@torch.library.register_fake("qkernels::linear_w8a16_act")
def linear_w8a16_act_fake(x, wq, w_scale, bias, activation):
    check_activation("linear_w8a16_act", activation)
    return linear_fake("linear_w8a16_act", x, wq, w_scale, bias)


# ---- autograd: the int8 weight is frozen; x (and a float bias) get gradients ----


def _setup_linear(ctx, inputs, output):
    x, wq, w_scale, bias = inputs[:4]
    ctx.save_for_backward(wq, w_scale)
    ctx.k, ctx.x_dtype = x.shape[-1], x.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _base_grads(op: str, ctx, g2d: torch.Tensor, wq, w_scale, out_shape) -> tuple:
    """(dx, dbias) of the base GEMM for the fp32 output gradient g2d [M, N]: dx =
    g2d @ dequant(W), the straight-through gradient (x's per-token quantization counts
    as identity, as in QAT). The weight and its scales are frozen: asking for their
    gradient is an error, never a silent None."""
    needs = ctx.needs_input_grad
    check(
        not needs[2],
        op,
        "w_scale gets no gradient (the int8 weight is frozen); "
        "train a QATLinear, or detach the scale",
    )
    n = w_scale.numel()
    if wq.dtype == torch.uint8:  # the CPU packed layout
        wq = torch.ops.qkernels.unpack_weight.default(wq, n, ctx.k)
    dx = None
    if needs[0]:
        w = wq.float() * w_scale.reshape(-1, 1)
        dx = (g2d @ w).reshape(*out_shape[:-1], ctx.k).to(ctx.x_dtype)
    dbias = g2d.sum(0).to(ctx.bias_dtype) if ctx.bias_dtype is not None and needs[3] else None
    return dx, dbias


def _linear_backward(op: str):
    def backward(ctx, grad):
        wq, w_scale = ctx.saved_tensors
        g2d = grad.reshape(-1, w_scale.numel()).float()
        dx, dbias = _base_grads(op, ctx, g2d, wq, w_scale, grad.shape)
        return dx, None, None, dbias

    return backward


for _op in ("linear_w8a8", "linear_w8a16"):
    torch.library.register_autograd(
        f"qkernels::{_op}", _linear_backward(_op), setup_context=_setup_linear
    )


def _setup_linear_act(ctx, inputs, output):
    x, wq, w_scale, bias, activation = inputs
    ctx.save_for_backward(x, wq, w_scale, bias)
    ctx.k, ctx.x_dtype, ctx.activation = x.shape[-1], x.dtype, activation
    ctx.bias_dtype = None if bias is None else bias.dtype


def _linear_act_backward(op: str, base: str):
    def backward(ctx, grad):
        """The activation's gradient at the pre-activation output, recomputed by the
        base op (saving it would keep an [M, N] tensor alive for every layer), then the
        base GEMM's gradients."""
        x, wq, w_scale, bias = ctx.saved_tensors
        n = w_scale.numel()
        with torch.no_grad():
            z = getattr(torch.ops.qkernels, base).default(x, wq, w_scale, bias)
        z = z.reshape(-1, n).float().requires_grad_()
        with torch.enable_grad():
            y = apply_activation(z, ctx.activation)
        (g2d,) = torch.autograd.grad(y, z, grad.reshape(-1, n).float())
        dx, dbias = _base_grads(op, ctx, g2d, wq, w_scale, grad.shape)
        return dx, None, None, dbias, None

    return backward


for _op, _base in (("linear_w8a8_act", "linear_w8a8"), ("linear_w8a16_act", "linear_w8a16")):
    torch.library.register_autograd(
        f"qkernels::{_op}", _linear_act_backward(_op, _base), setup_context=_setup_linear_act
    )
