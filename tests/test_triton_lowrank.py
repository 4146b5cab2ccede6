"""Triton lowrank_mm forward and backward on CPU through TRITON_INTERPRET=1 (set in
conftest), against the float64 PyTorch composition."""

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="needs the Triton interpreter or a GPU",
)
T = pytest.importorskip("qkernels.triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Relative Frobenius error vs float64: fp32 math, or 16-bit operands with t and dt
# rounded to 16 bits as autograd rounds them.
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def reference_grads(g, x, a, b):
    x, a, b = (t.double().requires_grad_() for t in (x, a, b))
    out = (x @ a.T) @ b.T
    return torch.autograd.grad(out, (x, a, b), g.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k,n,r", [(1, 16, 8, 1), (17, 100, 40, 8), (64, 272, 96, 40)])
def test_backward_matches_float64(m, k, n, r, dtype):
    x, g = torch.randn(m, k).to(dtype), torch.randn(m, n).to(dtype)
    a, b = (torch.randn(r, k) / k**0.5).to(dtype), (torch.randn(n, r) / r**0.5).to(dtype)
    grads = T.lowrank_mm_backward(*(t.to(DEVICE) for t in (g, x, a, b)))
    for got, want, like in zip(grads, reference_grads(g, x, a, b), (x, a, b), strict=True):
        assert got.shape == like.shape and got.dtype == dtype
        assert rel(got.cpu(), want) < TOL[dtype]


def test_backward_noncontiguous_3d_and_wide_rank():
    x = torch.randn(40, 3, 2).permute(2, 1, 0)  # [2, 3, 40], non-contiguous
    g = torch.randn(2, 3, 24)
    for r in (5, 300):  # 300 > MAX_FUSED_RANK: the two-GEMM path
        a, b = torch.randn(r, 40), torch.randn(24, r)
        grads = T.lowrank_mm_backward(*(t.to(DEVICE) for t in (g, x, a, b)))
        for got, want in zip(grads, reference_grads(g, x, a, b), strict=True):
            assert rel(got.cpu(), want) < 1e-5


def test_forward_wide_rank_and_noncontiguous():
    x = torch.randn(30, 7).T  # [7, 30]
    for r in (3, 257):
        a, b, bias = torch.randn(r, 30), torch.randn(9, r), torch.randn(9)
        out = T.lowrank_mm(*(t.to(DEVICE) for t in (x, a, b, bias))).cpu()
        want = (x.double() @ a.double().T) @ b.double().T + bias.double()
        assert rel(out, want) < 1e-5


def test_autograd_of_the_op_uses_the_backward_op():
    """Gradients through torch.ops.qkernels.lowrank_mm equal the float64 ones."""
    x = torch.randn(5, 32, device=DEVICE, requires_grad=True)
    a = torch.randn(4, 32, device=DEVICE, requires_grad=True)
    b = torch.randn(12, 4, device=DEVICE, requires_grad=True)
    bias = torch.randn(12, device=DEVICE, requires_grad=True)
    g = torch.randn(5, 12, device=DEVICE)
    torch.ops.qkernels.lowrank_mm(x, a, b, bias).backward(g)
    want = reference_grads(g.cpu(), *(t.detach().cpu() for t in (x, a, b)))
    for got, expected in zip((x.grad, a.grad, b.grad), want, strict=True):
        assert rel(got.cpu(), expected) < 1e-5
    torch.testing.assert_close(bias.grad, g.sum(0))
