"""Fake-quant family: fake (meta) kernels, which are also the argument checks the Triton
kernels run, and autograd (the backward ops save x, not a mask)."""

from __future__ import annotations

import torch

from qkernels import _library  # noqa: F401  (defines the ops first)
from qkernels._common import FLOAT_DTYPES, check, describe

_ops = torch.ops.qkernels


def _check_common(
    op: str, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int
) -> None:
    check(qmin < qmax, op, lambda: f"qmin must be < qmax, got qmin={qmin}, qmax={qmax}")
    check(
        x.dtype in FLOAT_DTYPES,
        op,
        lambda: f"x must be float32, bfloat16 or float16, got {describe(x)}",
    )
    check(scale.dtype == torch.float32, op, lambda: f"scale must be float32, got {describe(scale)}")
    check(
        zp.dtype.is_floating_point or not zp.dtype.is_complex and zp.dtype != torch.bool,
        op,
        lambda: f"zero_point must be an integer or float tensor, got {describe(zp)}",
    )
    for name, t in (("scale", scale), ("zero_point", zp)):
        check(
            t.device == x.device,
            op,
            lambda name=name, t=t: (
                f"{name} must be on {x.device} like the other arguments, got {describe(t)}"
            ),
        )


def check_channel(op: str, x, scale, zp, axis: int, qmin: int, qmax: int) -> None:
    _check_common(op, x, scale, zp, qmin, qmax)
    check(
        zp.numel() == scale.numel() and zp.dim() <= 1 and scale.dim() <= 1,
        op,
        lambda: (
            "scale and zero_point must be 1-D (or scalars) of the same size, got scale "
            f"{describe(scale)} and zero_point {describe(zp)}"
        ),
    )
    n = scale.numel()
    check(n >= 1, op, lambda: f"scale must have at least one element, got {describe(scale)}")
    if n == 1:
        return
    check(
        x.dim() >= 1 and -x.dim() <= axis < x.dim(),
        op,
        lambda: (
            f"axis must be in [{-x.dim()}, {x.dim()}) for x of shape {list(x.shape)}, got {axis}"
        ),
    )
    check(
        x.shape[axis] == n,
        op,
        lambda: (
            f"scale must have one element (per tensor) or x.shape[axis] (={x.shape[axis]}) "
            f"elements (per channel), got {describe(scale)}"
        ),
    )


def check_group(op: str, x, scale, zp, group_size: int, qmin: int, qmax: int) -> None:
    _check_common(op, x, scale, zp, qmin, qmax)
    k = x.shape[-1] if x.dim() else 0
    check(
        x.dim() >= 1 and group_size >= 1 and k % group_size == 0,
        op,
        lambda: f"group_size must be >= 1 and divide x.shape[-1] (={k}), got {group_size}",
    )
    expect = [*x.shape[:-1], k // group_size]
    check(
        list(scale.shape) == expect,
        op,
        lambda: f"scale must be float32 of shape {expect}, got {describe(scale)}",
    )
    check(
        list(zp.shape) == expect,
        op,
        lambda: (
            f"zero_point must be an integer or float tensor of shape {expect}, got {describe(zp)}"
        ),
    )


# ---- the layout the CUDA kernels (Triton and C++) walk x in ----
# x is cut into segments of contiguous elements. Not `along`: segment i has the params
# [i % n_params] (per tensor: one param, segments of PER_TENSOR_SEGMENT elements; per
# channel with inner dims: a segment per (outer, channel); groups: a segment per
# group). `along`: the params vary along each segment (a row of the last dim).

PER_TENSOR_SEGMENT = 1 << 14


def channel_layout(x: torch.Tensor, n_params: int, axis: int) -> tuple[int, int, bool]:
    """(seg_len, n_params, along) of per-tensor / per-channel fake-quant."""
    if n_params == 1:
        return max(1, min(x.numel(), PER_TENSOR_SEGMENT)), 1, False
    inner = 1
    for d in range(axis % x.dim() + 1, x.dim()):
        inner *= x.shape[d]
    return (n_params, n_params, True) if inner == 1 else (inner, n_params, False)


def group_layout(x: torch.Tensor, group_size: int) -> tuple[int, int, bool]:
    """(seg_len, n_params, along) of per-group fake-quant."""
    return group_size, max(1, x.numel() // group_size), False


def param_vectors(scale: torch.Tensor, zp: torch.Tensor):
    """float32 scale, 1/scale (computed once, as torch) and zero point, flat."""
    s = scale.float().contiguous().reshape(-1)
    return s, (1.0 / s).contiguous(), zp.float().contiguous().reshape(-1)


def lsq_zero_point(zp: torch.Tensor, qmin: int, qmax: int, per_tensor_bwd: bool):
    """The zero point torch's learnable ops use: the forward rounds half to even; the
    per-tensor backward adds 0.5 and truncates; the per-channel backward rounds half to
    even."""
    z = zp.float()
    return (z + 0.5).clamp(qmin, qmax).trunc() if per_tensor_bwd else z.round().clamp(qmin, qmax)


def entry_points(launch_forward, launch_backward) -> tuple:
    """The argument-checked fake_quant, fake_quant_backward, fake_quant_group,
    fake_quant_group_backward and fake_quant_lsq (forward) of a CUDA backend (Triton, C++),
    given its launchers in the segment layout:
    launch_forward(x, layout, scale, zp, zp_in_round, qmin, qmax) and
    launch_backward(grad, x, layout, scale, zp, zp_in_round, qmin, qmax)."""

    def fake_quant(x, scale, zero_point, axis: int, qmin: int, qmax: int):
        check_channel("fake_quant", x, scale, zero_point, axis, qmin, qmax)
        layout = channel_layout(x, scale.numel(), axis)
        fp_zp = zero_point.is_floating_point()
        return launch_forward(x, layout, scale, zero_point, fp_zp, qmin, qmax)

    def fake_quant_backward(grad, x, scale, zero_point, axis: int, qmin: int, qmax: int):
        check_channel("fake_quant_backward", x, scale, zero_point, axis, qmin, qmax)
        layout = channel_layout(x, scale.numel(), axis)
        fp_zp = zero_point.is_floating_point()
        return launch_backward(grad, x, layout, scale, zero_point, fp_zp, qmin, qmax)

    def fake_quant_group(x, scale, zero_point, group_size: int, qmin: int, qmax: int):
        check_group("fake_quant_group", x, scale, zero_point, group_size, qmin, qmax)
        layout = group_layout(x, group_size)
        fp_zp = zero_point.is_floating_point()
        return launch_forward(x, layout, scale, zero_point, fp_zp, qmin, qmax)

    def fake_quant_group_backward(
        grad, x, scale, zero_point, group_size: int, qmin: int, qmax: int
    ):
        check_group("fake_quant_group_backward", x, scale, zero_point, group_size, qmin, qmax)
        layout = group_layout(x, group_size)
        fp_zp = zero_point.is_floating_point()
        return launch_backward(grad, x, layout, scale, zero_point, fp_zp, qmin, qmax)

    def fake_quant_lsq(
        x, scale, zero_point, axis: int, qmin: int, qmax: int, grad_factor: float = 1.0
    ):
        check_channel("fake_quant_lsq", x, scale, zero_point, axis, qmin, qmax)
        layout = channel_layout(x, scale.numel(), axis)
        zp = lsq_zero_point(zero_point, qmin, qmax, per_tensor_bwd=False)
        return launch_forward(x, layout, scale, zp, False, qmin, qmax)

    return (
        fake_quant,
        fake_quant_backward,
        fake_quant_group,
        fake_quant_group_backward,
        fake_quant_lsq,
    )


def _like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("qkernels::fake_quant")
def _fake_quant_fake(x, scale, zero_point, axis, qmin, qmax):
    check_channel("fake_quant", x, scale, zero_point, axis, qmin, qmax)
    return _like(x)


@torch.library.register_fake("qkernels::fake_quant_backward")
def _fake_quant_backward_fake(grad, x, scale, zero_point, axis, qmin, qmax):
    check_channel("fake_quant_backward", x, scale, zero_point, axis, qmin, qmax)
    return _like(x)


@torch.library.register_fake("qkernels::fake_quant_group")
def _fake_quant_group_fake(x, scale, zero_point, group_size, qmin, qmax):
    check_group("fake_quant_group", x, scale, zero_point, group_size, qmin, qmax)
    return _like(x)


@torch.library.register_fake("qkernels::fake_quant_group_backward")
def _fake_quant_group_backward_fake(grad, x, scale, zero_point, group_size, qmin, qmax):
    check_group("fake_quant_group_backward", x, scale, zero_point, group_size, qmin, qmax)
    return _like(x)


@torch.library.register_fake("qkernels::fake_quant_lsq")
def _fake_quant_lsq_fake(x, scale, zero_point, axis, qmin, qmax, grad_factor):
    check_channel("fake_quant_lsq", x, scale, zero_point, axis, qmin, qmax)
    return _like(x)


@torch.library.register_fake("qkernels::fake_quant_lsq_backward")
def _fake_quant_lsq_backward_fake(grad, x, scale, zero_point, axis, qmin, qmax, grad_factor):
    check_channel("fake_quant_lsq_backward", x, scale, zero_point, axis, qmin, qmax)
    zp_dtype = zero_point.dtype if zero_point.dtype.is_floating_point else torch.float32
    return _like(x), torch.empty_like(scale), torch.empty_like(zero_point, dtype=zp_dtype)


# ---- autograd: save x (not a mask); the backward recomputes the mask in one pass ----


def _setup_saving_x(ctx, inputs, output):
    x, scale, zero_point, *rest = inputs
    ctx.save_for_backward(x, scale, zero_point)
    ctx.rest = rest


def _fake_quant_backward(ctx, grad):
    x, scale, zero_point = ctx.saved_tensors
    dx = _ops.fake_quant_backward(grad, x, scale, zero_point, *ctx.rest)
    return dx, None, None, None, None, None


def _fake_quant_group_backward(ctx, grad):
    x, scale, zero_point = ctx.saved_tensors
    dx = _ops.fake_quant_group_backward(grad, x, scale, zero_point, *ctx.rest)
    return dx, None, None, None, None, None


def _fake_quant_lsq_backward(ctx, grad):
    x, scale, zero_point = ctx.saved_tensors
    dx, dscale, dzp = _ops.fake_quant_lsq_backward(grad, x, scale, zero_point, *ctx.rest)
    needs = ctx.needs_input_grad
    return (
        dx if needs[0] else None,
        dscale if needs[1] else None,
        dzp if needs[2] else None,
        None,
        None,
        None,
        None,
    )


torch.library.register_autograd(
    "qkernels::fake_quant", _fake_quant_backward, setup_context=_setup_saving_x
)
torch.library.register_autograd(
    "qkernels::fake_quant_group", _fake_quant_group_backward, setup_context=_setup_saving_x
)
torch.library.register_autograd(
    "qkernels::fake_quant_lsq", _fake_quant_lsq_backward, setup_context=_setup_saving_x
)
