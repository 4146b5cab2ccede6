"""Low-rank family: fake kernels, autograd of lowrank_mm (which calls the
lowrank_mm_backward op) and the Python CPU kernel of lowrank_mm_backward (BLAS)."""

from __future__ import annotations

import torch

from qkernels._common import check, check_same_device, describe
from qkernels._library import lib

_ops = torch.ops.qkernels


@torch.library.register_fake("qkernels::lowrank_mm")
def lowrank_mm_fake(x, a, b, bias=None):
    op = "lowrank_mm"
    check(x.dim() >= 1, op, lambda: f"x must have at least one dimension, got {describe(x)}")
    check(
        a.dim() == 2 and a.shape[1] == x.shape[-1] and a.dtype == x.dtype,
        op,
        lambda: (
            f"a must be [rank, K] with K == x.shape[-1] (={x.shape[-1]}) and x's dtype, "
            f"got {describe(a)}"
        ),
    )
    check(
        b.dim() == 2 and b.shape[1] == a.shape[0] and b.dtype == x.dtype,
        op,
        lambda: (
            f"b must be [N, rank] with rank == a.shape[0] (={a.shape[0]}) and x's dtype, "
            f"got {describe(b)}"
        ),
    )
    if bias is not None:
        check(
            bias.dim() == 1 and bias.shape[0] == b.shape[0] and bias.dtype == x.dtype,
            op,
            lambda: f"bias must be [N] (={b.shape[0]}) of x's dtype, got {describe(bias)}",
        )
    check_same_device(op, x, a=a, b=b, bias=bias)
    return x.new_empty((*x.shape[:-1], b.shape[0]))


@torch.library.register_fake("qkernels::lowrank_mm_backward")
def lowrank_mm_backward_fake(grad, x, a, b):
    lowrank_mm_fake(x, a, b)
    n = b.shape[0]
    check(
        grad.shape == (*x.shape[:-1], n) and grad.dtype == x.dtype,
        "lowrank_mm_backward",
        lambda: (
            f"grad must be {x.dtype} of shape {[*x.shape[:-1], n]} (the output's), "
            f"got {describe(grad)}"
        ),
    )
    check_same_device("lowrank_mm_backward", x, grad=grad)
    return torch.empty_like(x), torch.empty_like(a), torch.empty_like(b)


def lowrank_backward_by_matmuls(grad, x, a, b):
    """(dx, da, db) of lowrank_mm as five matmuls (BLAS on CPU; the Triton backward's
    fallback for ranks too wide to keep on chip)."""
    k, n = x.shape[-1], b.shape[0]
    x2d, g2d = x.reshape(-1, k), grad.reshape(-1, n)
    t = x2d @ a.T  # [M, r], recomputed from x (which autograd keeps anyway)
    dt = g2d @ b  # [M, r]
    return (dt @ a).reshape(x.shape), dt.T @ x2d, g2d.T @ t


def _lowrank_mm_backward_cpu(grad, x, a, b):
    lowrank_mm_backward_fake(grad, x, a, b)
    return lowrank_backward_by_matmuls(grad, x, a, b)


lib.impl("lowrank_mm_backward", _lowrank_mm_backward_cpu, "CPU")


def _setup(ctx, inputs, output):
    x, a, b, bias = inputs
    ctx.save_for_backward(x, a, b)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, a, b = ctx.saved_tensors
    dx, da, db = _ops.lowrank_mm_backward.default(grad.contiguous(), x, a, b)
    needs = ctx.needs_input_grad
    dbias = grad.reshape(-1, b.shape[0]).sum(0) if ctx.has_bias and needs[3] else None
    return dx if needs[0] else None, da if needs[1] else None, db if needs[2] else None, dbias


torch.library.register_autograd("qkernels::lowrank_mm", _backward, setup_context=_setup)
