"""Fake-quant family: identical to PyTorch's own ops on every backend."""

import pytest
import torch
from backends import needs_triton, triton_ops

from qkernels import ops
from qkernels import reference as ref

OPS = torch.ops.qkernels
RANGES = [(-128, 127), (0, 255), (-8, 7), (0, 15), (-2, 1)]  # 8, 4 and 2 bits
# Elementwise work the Triton interpreter gets through in well under a second.
INTERPRETER_ELEMENTS = 20_000


def qparams(n: int, qmin: int, qmax: int, float_zp: bool = False):
    scale = torch.rand(n) * 0.05 + 0.005
    if float_zp:
        return scale, torch.empty(n).uniform_(qmin, qmax)
    return scale, torch.randint(qmin, qmax + 1, (n,), dtype=torch.int32)


def torch_fake_quant(x, scale, zp, axis, qmin, qmax):
    if scale.numel() == 1:
        return torch.fake_quantize_per_tensor_affine(x, scale, zp.int(), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zp, axis % x.dim(), qmin, qmax)


def torch_forward_and_grad(x, grad, *args):
    """torch's fake-quant output and its straight-through gradient for x."""
    x_ref = x.detach().clone().requires_grad_()
    y_ref = torch_fake_quant(x_ref, *args)
    y_ref.backward(grad)
    return y_ref.detach(), x_ref.grad


CASES = [  # shape, axis, per_channel
    ((1,), 0, False),
    ((17,), 0, True),
    ((3, 5, 100), 1, True),
    ((16, 272), 1, True),
    ((3, 5, 1025), 0, True),
    ((3, 5, 1025), 1, True),
    ((3, 5, 1025), -1, True),
    ((64, 4096), 0, True),
    ((64, 4096), 1, True),
    ((64, 4096), 0, False),
    ((2, 33), 1, False),
]


# ---- every backend against torch's own ops and qkernels.reference ----


@pytest.mark.parametrize("qmin,qmax", RANGES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,axis,per_channel", CASES)
def test_fake_quant_matches_torch(backend, shape, axis, per_channel, dtype, qmin, qmax):
    backend.skip_if_slow(torch.Size(shape).numel(), INTERPRETER_ELEMENTS)
    x = (torch.randn(shape) * 0.5).to(dtype)
    n = shape[axis] if per_channel else 1
    scale, zp = qparams(n, qmin, qmax)
    grad = torch.randn(shape).to(dtype)
    y = backend("fake_quant", x, scale, zp, axis, qmin, qmax)
    dx = backend("fake_quant_backward", grad, x, scale, zp, axis, qmin, qmax)
    y_ref, dx_ref = torch_forward_and_grad(x, grad, scale, zp, axis, qmin, qmax)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(y, ref.fake_quant(x, scale, zp, axis, qmin, qmax), rtol=0, atol=0)
    torch.testing.assert_close(dx, dx_ref, rtol=0, atol=0)


@pytest.mark.parametrize("axis", [0, 1])
def test_fake_quant_float_zero_point_matches_torch(backend, axis):
    x, grad = torch.randn(8, 100), torch.randn(8, 100)
    scale, zp = qparams(x.shape[axis], 0, 255, float_zp=True)
    y_ref, dx_ref = torch_forward_and_grad(x, grad, scale, zp, axis, 0, 255)
    torch.testing.assert_close(backend("fake_quant", x, scale, zp, axis, 0, 255), y_ref)
    dx = backend("fake_quant_backward", grad, x, scale, zp, axis, 0, 255)
    torch.testing.assert_close(dx, dx_ref, rtol=0, atol=0)


def test_fake_quant_non_contiguous(backend):
    x = torch.randn(300, 40).T  # [40, 300] transposed view
    scale, zp = qparams(80, -128, 127)
    scale, zp = scale[::2], zp[::2]  # strided parameters too
    torch.testing.assert_close(
        backend("fake_quant", x, scale, zp, 0, -128, 127),
        torch.fake_quantize_per_channel_affine(
            x.contiguous(), scale.contiguous(), zp.contiguous(), 0, -128, 127
        ),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "shape,group_size",
    [((4, 128), 32), ((3, 2, 96), 96), ((2, 3, 40), 8), ((1, 17), 17), ((64, 4096), 128)],
)
def test_fake_quant_group_matches_reference(backend, shape, group_size, dtype):
    backend.skip_if_slow(torch.Size(shape).numel(), INTERPRETER_ELEMENTS)
    x = torch.randn(shape).to(dtype)
    gshape = (*shape[:-1], shape[-1] // group_size)
    scale = torch.rand(gshape) * 0.2 + 0.01
    zp = torch.randint(-8, 8, gshape, dtype=torch.int32)
    y = backend("fake_quant_group", x, scale, zp, group_size, -8, 7)
    expected = ref.fake_quant_group(x, scale, zp, group_size, -8, 7)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    grad = torch.randn(shape).to(dtype)
    dx = backend("fake_quant_group_backward", grad, x, scale, zp, group_size, -8, 7)
    mask = ref.fake_quant_group_mask(x, scale, zp, group_size, -8, 7)
    torch.testing.assert_close(dx, grad * mask, rtol=0, atol=0)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


LSQ_CASES = [
    ((64, 300), 0, True),
    ((64, 300), 1, True),
    ((64, 300), 0, False),
    ((3, 5, 100), 1, True),
    ((2, 3, 1025), 1, True),
    ((4096,), 0, False),
    ((256, 1024), 0, True),
]


@pytest.mark.parametrize("qmin,qmax", [(-128, 127), (0, 255), (-8, 7)])
@pytest.mark.parametrize("shape,axis,per_channel", LSQ_CASES)
def test_fake_quant_lsq_matches_torch(backend, shape, axis, per_channel, qmin, qmax):
    backend.skip_if_slow(torch.Size(shape).numel(), INTERPRETER_ELEMENTS)
    x = torch.randn(shape) * 0.6
    n = shape[axis] if per_channel else 1
    scale = torch.rand(n) * 0.02 + 0.004
    # Zero points with fractions, halves included: torch rounds them differently in
    # the per-tensor backward (half up) than elsewhere (half to even).
    zp = (
        torch.randint(qmin, qmax, (n,)).float()
        + torch.tensor([0.5, 0.3, -0.2])[torch.randint(0, 3, (n,))]
    ).clamp(qmin, qmax)
    grad = torch.randn(shape)
    y = backend("fake_quant_lsq", x, scale, zp, axis, qmin, qmax, 0.7)
    dx, dscale, dzp = backend("fake_quant_lsq_backward", grad, x, scale, zp, axis, qmin, qmax, 0.7)
    x2, s2, z2 = (t.clone().requires_grad_() for t in (x, scale, zp))
    y2 = ref.fake_quant_lsq(x2, s2, z2, axis, qmin, qmax, 0.7)
    y2.backward(grad)
    torch.testing.assert_close(y, y2.detach(), rtol=0, atol=0)
    torch.testing.assert_close(dx, x2.grad, rtol=0, atol=0)
    assert rel(dscale.reshape(s2.shape), s2.grad) < 1e-5
    assert rel(dzp.reshape(z2.shape), z2.grad) < 1e-5


# ---- autograd through the ops (CPU) ----


@pytest.mark.parametrize("per_channel", [False, True])
def test_autograd_calls_the_backward_ops(per_channel):
    x = torch.randn(16, 40, requires_grad=True)
    n = 16 if per_channel else 1
    scale, zp = qparams(n, -8, 7)
    grad = torch.randn(16, 40)
    ops.fake_quant(x, scale, zp, 0, -8, 7).backward(grad)
    expected = OPS.fake_quant_backward(grad, x.detach(), scale, zp, 0, -8, 7)
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)
    s = (torch.rand(n) * 0.02 + 0.01).requires_grad_()
    z = torch.zeros(n, requires_grad=True)
    x.grad = None
    ops.fake_quant_lsq(x, s, z, 0, -8, 7, 0.5).backward(grad)
    dx, ds, dz = OPS.fake_quant_lsq_backward(
        grad, x.detach(), s.detach(), z.detach(), 0, -8, 7, 0.5
    )
    torch.testing.assert_close(x.grad, dx, rtol=0, atol=0)
    torch.testing.assert_close(s.grad, ds, rtol=0, atol=0)
    torch.testing.assert_close(z.grad, dz, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fake_quant_lsq_half_precision(isa, dtype):
    """Half inputs compute in fp32: the same as the fp32 op on the upcast input."""
    x = (torch.randn(32, 256) * 0.5).to(dtype)
    scale = (torch.rand(32) * 0.02 + 0.005).requires_grad_()
    zp = torch.zeros(32, requires_grad=True)
    xh = x.clone().requires_grad_()
    yh = ops.fake_quant_lsq(xh, scale, zp, 0, -128, 127)
    grad = torch.randn(32, 256).to(dtype)
    yh.backward(grad)
    xf = x.float().requires_grad_()
    s2, z2 = scale.detach().clone().requires_grad_(), zp.detach().clone().requires_grad_()
    yf = ops.fake_quant_lsq(xf, s2, z2, 0, -128, 127)
    yf.backward(grad.float())
    assert yh.dtype == dtype
    torch.testing.assert_close(yh, yf.to(dtype), rtol=0, atol=0)
    torch.testing.assert_close(xh.grad, xf.grad.to(dtype), rtol=0, atol=0)
    assert rel(scale.grad, s2.grad) < 1e-5


def opcheck_samples():
    x = torch.randn(6, 40)
    s, z = qparams(6, -128, 127)
    yield OPS.fake_quant, (x, s, z, 0, -128, 127)
    yield OPS.fake_quant, (x.bfloat16(), torch.tensor([0.02]), torch.tensor([3]), 0, 0, 255)
    yield OPS.fake_quant_backward, (torch.randn(6, 40), x, s, z, 0, -128, 127)
    gs, gz = torch.rand(6, 5) + 0.01, torch.zeros(6, 5, dtype=torch.int32)
    yield OPS.fake_quant_group, (x, gs, gz, 8, -8, 7)
    yield OPS.fake_quant_group_backward, (torch.randn(6, 40), x, gs, gz, 8, -8, 7)
    yield OPS.fake_quant_lsq, (x, torch.rand(40) * 0.02 + 0.01, torch.zeros(40), 1, -128, 127, 0.5)
    yield (
        OPS.fake_quant_lsq_backward,
        (torch.randn(6, 40), x, torch.tensor([0.02]), torch.tensor([1.0]), 0, -128, 127, 1.0),
    )


OPCHECK = [
    (op, args, grad)
    for op, args in opcheck_samples()
    for grad in (False, True)
    if not (grad and op.__name__.endswith("_backward"))  # backward ops are not differentiated
]


@pytest.mark.parametrize(
    # ids name the op and the grad flag only: tensor reprs differ between pytest-xdist
    # workers (random data), which makes their collections differ
    "op,args,requires_grad",
    OPCHECK,
    ids=lambda v: getattr(v, "__name__", str(v) if isinstance(v, bool) else ""),
)
def test_opcheck(op, args, requires_grad):
    if requires_grad:
        args = tuple(
            a.detach().clone().requires_grad_()
            if isinstance(a, torch.Tensor) and a.is_floating_point()
            else a
            for a in args
        )
    torch.library.opcheck(op, args)


BAD = [
    (
        lambda: ops.fake_quant(torch.randn(4, 8), torch.tensor([0.0]), torch.tensor([0]), 0, -8, 7),
        r"qkernels\.fake_quant: scale must be finite and > 0",
    ),
    (
        lambda: ops.fake_quant(
            torch.randn(4, 8), torch.tensor([-0.1]), torch.tensor([0]), 0, -8, 7
        ),
        r"qkernels\.fake_quant: scale must be finite and > 0",
    ),
    (
        lambda: ops.fake_quant(
            torch.randn(4, 8), torch.rand(5), torch.zeros(5, dtype=torch.int32), 0, -8, 7
        ),
        r"qkernels\.fake_quant: scale must have one element \(per tensor\) or "
        r"x.shape\[axis\] \(=4\)",
    ),
    (
        lambda: ops.fake_quant(
            torch.randn(4, 8), torch.rand(4), torch.zeros(3, dtype=torch.int32), 0, -8, 7
        ),
        r"qkernels\.fake_quant: scale and zero_point must be 1-D \(or scalars\) of the same size",
    ),
    (
        lambda: ops.fake_quant(
            torch.randn(4, 8), torch.rand(4), torch.zeros(4, dtype=torch.int32), 2, -8, 7
        ),
        r"qkernels\.fake_quant: axis must be in \[-2, 2\) for x of shape \[4, 8\], got 2",
    ),
    (
        lambda: ops.fake_quant(torch.randn(4, 8), torch.rand(1), torch.zeros(1), 0, 7, 7),
        r"qkernels\.fake_quant: qmin must be < qmax, got qmin=7, qmax=7",
    ),
    (
        lambda: ops.fake_quant(torch.randn(4, 8), torch.rand(1), torch.tensor([9]), 0, -8, 7),
        r"qkernels\.fake_quant: zero_point must lie in \[qmin, qmax\] = \[-8, 7\]",
    ),
    (
        lambda: ops.fake_quant(
            torch.randn(4, 8).double(), torch.rand(1), torch.tensor([0]), 0, -8, 7
        ),
        r"qkernels\.fake_quant: x must be float32, bfloat16 or float16, got torch.float64",
    ),
    (
        lambda: ops.fake_quant_group(
            torch.randn(4, 8), torch.rand(4, 3), torch.zeros(4, 3), 3, -8, 7
        ),
        r"qkernels\.fake_quant_group: group_size must be >= 1 and divide x.shape\[-1\] \(=8\)",
    ),
    (
        lambda: ops.fake_quant_group(
            torch.randn(4, 8), torch.rand(4, 3), torch.zeros(4, 3), 4, -8, 7
        ),
        r"qkernels\.fake_quant_group: scale must be float32 of shape \[4, 2\]",
    ),
    (
        lambda: ops.fake_quant_lsq(
            torch.randn(4, 8), torch.tensor([0.0]), torch.zeros(1), 0, -8, 7, 1.0
        ),
        r"qkernels\.fake_quant_lsq: scale must be finite and > 0",
    ),
    (
        lambda: ops.fake_quant_lsq(
            torch.randn(4, 8), torch.ones(1), torch.tensor([float("nan")]), 0, -8, 7, 1.0
        ),
        r"qkernels\.fake_quant_lsq: zero_point must be finite, got nan at index 0",
    ),
    (
        lambda: torch.ops.qkernels.fake_quant_lsq_backward(
            torch.ones(4, 8),
            torch.randn(4, 8),
            torch.ones(8),
            torch.full((8,), float("inf")),
            1,
            -8,
            7,
            1.0,
        ),
        r"qkernels\.fake_quant_lsq_backward: zero_point must be finite, got inf at index 0",
    ),  # fmt: skip
    (
        lambda: ops.fake_quant(
            torch.randn(4, 8), torch.rand(1, device="meta"), torch.zeros(1), 0, -8, 7
        ),
        r"qkernels\.fake_quant: scale must be on cpu",
    ),
]


@pytest.mark.parametrize("call,match", BAD)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- Triton only ----


@needs_triton
def test_bad_input_same_errors():
    with pytest.raises(ValueError, match=r"qkernels\.fake_quant: qmin must be < qmax"):
        triton_ops.fake_quant(torch.randn(3), torch.rand(1), torch.zeros(1), 0, 5, 5)


@needs_triton
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
