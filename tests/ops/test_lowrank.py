"""Low-rank family (lowrank_mm and its backward) against the reference on every backend."""

import pytest
import torch
from backends import TRITON_DEVICE, needs_triton

from qkernels import ops
from qkernels import reference as ref

OPS = torch.ops.qkernels
# Relative Frobenius error vs float64: fp32 math, or 16-bit operands with t and dt
# rounded to 16 bits as autograd rounds them.
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def reference_grads(g, x, a, b):
    x, a, b = (t.double().requires_grad_() for t in (x, a, b))
    out = (x @ a.T) @ b.T
    return torch.autograd.grad(out, (x, a, b), g.double())


# ---- every backend against the reference ----


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "shape,rank,n", [((1, 16), 1, 8), ((17, 100), 8, 40), ((2, 3, 272), 64, 96)]
)
def test_forward_matches_reference(backend, shape, rank, n, dtype):
    x = torch.randn(shape).to(dtype)
    a, b = (torch.randn(rank, shape[-1]) / shape[-1] ** 0.5).to(dtype), torch.randn(n, rank)
    b, bias = (b / rank**0.5).to(dtype), torch.randn(n).to(dtype)
    out = backend("lowrank_mm", x, a, b, bias)
    assert out.shape == (*shape[:-1], n) and out.dtype == dtype
    want = ref.lowrank_mm(x.double(), a.double(), b.double(), bias.double())
    assert rel(out, want) < TOL[dtype]
    assert backend("lowrank_mm", x, a, b).shape == (*shape[:-1], n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k,n,r", [(1, 16, 8, 1), (17, 100, 40, 8), (64, 272, 96, 40)])
def test_backward_matches_float64(backend, m, k, n, r, dtype):
    x, g = torch.randn(m, k).to(dtype), torch.randn(m, n).to(dtype)
    a, b = (torch.randn(r, k) / k**0.5).to(dtype), (torch.randn(n, r) / r**0.5).to(dtype)
    grads = backend("lowrank_mm_backward", g, x, a, b)
    for got, want, like in zip(grads, reference_grads(g, x, a, b), (x, a, b), strict=True):
        assert got.shape == like.shape and got.dtype == dtype
        assert rel(got, want) < TOL[dtype]


def test_backward_noncontiguous_3d_and_wide_rank(backend):
    x = torch.randn(40, 3, 2).permute(2, 1, 0)  # [2, 3, 40], non-contiguous
    g = torch.randn(2, 3, 24)
    for r in (5, 300):  # 300 > the Triton kernels' on-chip rank: their two-GEMM path
        a, b = torch.randn(r, 40), torch.randn(24, r)
        grads = backend("lowrank_mm_backward", g, x, a, b)
        for got, want in zip(grads, reference_grads(g, x, a, b), strict=True):
            assert rel(got, want) < 1e-5


def test_forward_wide_rank_and_noncontiguous(backend):
    x = torch.randn(30, 7).T  # [7, 30]
    for r in (3, 257):
        a, b, bias = torch.randn(r, 30), torch.randn(9, r), torch.randn(18)[::2]
        out = backend("lowrank_mm", x, a, b, bias)
        want = (x.double() @ a.double().T) @ b.double().T + bias.double()
        assert rel(out, want) < 1e-5


# ---- autograd, opcheck and errors of the ops ----


def test_gradcheck_float64_and_noncontiguous():
    x = torch.randn(20, 5, dtype=torch.float64).T.requires_grad_()  # [5, 20], transposed
    a = torch.randn(4, 20, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.lowrank_mm, (x, a, b, bias))
    assert torch.autograd.gradcheck(lambda x, a, b: ops.lowrank_mm(x, a, b), (x, a, b))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    args = [torch.randn(3, 16), torch.randn(4, 16), torch.randn(8, 4), torch.randn(8)]
    torch.library.opcheck(
        OPS.lowrank_mm.default, tuple(t.requires_grad_(requires_grad) for t in args)
    )


def test_backward_op_opcheck_and_errors():
    g, x, a, b = torch.randn(2, 3, 8), torch.randn(2, 3, 16), torch.randn(4, 16), torch.randn(8, 4)
    torch.library.opcheck(OPS.lowrank_mm_backward.default, (g, x, a, b))
    with pytest.raises(ValueError, match=r"qkernels\.lowrank_mm_backward: grad must be"):
        OPS.lowrank_mm_backward(torch.randn(3, 8), x, a, b)


def test_bad_input():
    with pytest.raises(ValueError, match=r"qkernels\.lowrank_mm: a must be \[rank, K\] with K"):
        ops.lowrank_mm(torch.randn(3, 16), torch.randn(4, 15), torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"qkernels\.lowrank_mm: b must be \[N, rank\]"):
        ops.lowrank_mm(torch.randn(3, 16), torch.randn(4, 16), torch.randn(8, 5))
    with pytest.raises(ValueError, match=r"qkernels\.lowrank_mm: b must be on cpu like the other"):
        ops.lowrank_mm(torch.randn(3, 16), torch.randn(4, 16), torch.randn(8, 4, device="meta"))


@needs_triton
def test_autograd_of_the_op_uses_the_backward_op():
    """Gradients through torch.ops.qkernels.lowrank_mm equal the float64 ones (on the
    Triton kernels on a GPU; on the CPU kernels under the interpreter)."""
    x = torch.randn(5, 32, device=TRITON_DEVICE, requires_grad=True)
    a = torch.randn(4, 32, device=TRITON_DEVICE, requires_grad=True)
    b = torch.randn(12, 4, device=TRITON_DEVICE, requires_grad=True)
    bias = torch.randn(12, device=TRITON_DEVICE, requires_grad=True)
    g = torch.randn(5, 12, device=TRITON_DEVICE)
    torch.ops.qkernels.lowrank_mm(x, a, b, bias).backward(g)
    want = reference_grads(g.cpu(), *(t.detach().cpu() for t in (x, a, b)))
    for got, expected in zip((x.grad, a.grad, b.grad), want, strict=True):
        assert rel(got.cpu(), expected) < 1e-5
    torch.testing.assert_close(bias.grad, g.sum(0))
