"""Triton fake-quant kernels, on CPU through TRITON_INTERPRET=1 (set in conftest):
the same numbers as the C++ kernels, which match torch's own ops."""

import os

import pytest
import torch

from qkernels import ops

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="needs the Triton interpreter or a GPU",
)
T = pytest.importorskip("qkernels.triton")
OPS = torch.ops.qkernels
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CASES = [
    ((1,), 0, 1),
    ((17,), 0, 17),
    ((3, 5, 100), 1, 5),
    ((16, 272), 0, 16),
    ((16, 272), 1, 272),
    ((64, 40), 0, 1),
    ((2, 3, 40), -1, 40),
]


def qparams(n, float_zp=False):
    scale = torch.rand(n) * 0.05 + 0.005
    zp = (
        torch.empty(n).uniform_(-3, 3)
        if float_zp
        else torch.randint(-3, 4, (n,), dtype=torch.int32)
    )
    return scale, zp


def on(device, *ts):
    return [t.to(device) for t in ts]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,axis,n", CASES)
def test_fake_quant_forward_backward(shape, axis, n, dtype):
    x = (torch.randn(shape) * 0.3).to(dtype)
    grad = torch.randn(shape).to(dtype)
    for float_zp in (False, True):
        if float_zp and n == 1:
            continue
        scale, zp = qparams(n, float_zp)
        xd, gd, sd, zd = on(DEVICE, x, grad, scale, zp)
        torch.testing.assert_close(
            T.fake_quant(xd, sd, zd, axis, -8, 7).cpu(),
            ops.fake_quant(x, scale, zp, axis, -8, 7),
            rtol=0,
            atol=0,
        )
        torch.testing.assert_close(
            T.fake_quant_backward(gd, xd, sd, zd, axis, -8, 7).cpu(),
            OPS.fake_quant_backward(grad, x, scale, zp, axis, -8, 7),
            rtol=0,
            atol=0,
        )


@pytest.mark.parametrize("shape,group_size", [((4, 96), 32), ((2, 3, 40), 8), ((1, 17), 17)])
def test_fake_quant_group(shape, group_size):
    x = torch.randn(shape)
    gshape = (*shape[:-1], shape[-1] // group_size)
    scale, zp = torch.rand(gshape) * 0.2 + 0.01, torch.randint(-8, 8, gshape, dtype=torch.int32)
    grad = torch.randn(shape)
    xd, gd, sd, zd = on(DEVICE, x, grad, scale, zp)
    torch.testing.assert_close(
        T.fake_quant_group(xd, sd, zd, group_size, -8, 7).cpu(),
        ops.fake_quant_group(x, scale, zp, group_size, -8, 7),
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        T.fake_quant_group_backward(gd, xd, sd, zd, group_size, -8, 7).cpu(),
        OPS.fake_quant_group_backward(grad, x, scale, zp, group_size, -8, 7),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("shape,axis,n", CASES)
def test_fake_quant_lsq(shape, axis, n):
    x = torch.randn(shape) * 0.3
    grad = torch.randn(shape)
    scale, zp = qparams(n, float_zp=True)
    xd, gd, sd, zd = on(DEVICE, x, grad, scale, zp)
    torch.testing.assert_close(
        T.fake_quant_lsq(xd, sd, zd, axis, -8, 7, 0.5).cpu(),
        ops.fake_quant_lsq(x, scale, zp, axis, -8, 7, 0.5),
        rtol=0,
        atol=0,
    )
    dx, ds, dz = T.fake_quant_lsq_backward(gd, xd, sd, zd, axis, -8, 7, 0.5)
    ex, es, ez = OPS.fake_quant_lsq_backward(grad, x, scale, zp, axis, -8, 7, 0.5)
    torch.testing.assert_close(dx.cpu(), ex, rtol=0, atol=0)
    torch.testing.assert_close(ds.cpu(), es, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dz.cpu(), ez, rtol=1e-5, atol=1e-6)


def test_bad_input_same_errors():
    with pytest.raises(ValueError, match=r"qkernels\.fake_quant: qmin must be < qmax"):
        T.fake_quant(torch.randn(3), torch.rand(1), torch.zeros(1), 0, 5, 5)


@pytest.mark.cuda
def test_registered_as_cuda_kernel():
    x = torch.randn(64, 128, device="cuda")
    scale, zp = (
        torch.rand(64, device="cuda") + 0.01,
        torch.zeros(64, device="cuda", dtype=torch.int32),
    )
    torch.testing.assert_close(
        ops.fake_quant(x, scale, zp, 0, -128, 127),
        torch.fake_quantize_per_channel_affine(x, scale, zp, 0, -128, 127),
        rtol=0,
        atol=0,
    )
