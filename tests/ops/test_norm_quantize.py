"""norm_quantize: LayerNorm / RMSNorm and the per-token quantization of its output in one
op, on every CPU ISA: y against the float64 reference, (q, scale) bit-exact with
quantize_rowwise(y), and int8_mm on them bit-exact with linear_w8a8(y)."""

from __future__ import annotations

import pytest
import torch

from qkernels import ops
from qkernels import reference as ref

OPS = torch.ops.qkernels
# y's rounding: fp32 sums in another order than float64 (1e-5); one ulp of a 16-bit dtype.
Y_TOL = {torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def affine(k: int, kind: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    weight = torch.randn(k) if kind in ("weight", "both") else None
    bias = torch.randn(k) if kind == "both" else None
    return weight, bias


def check_against_reference(x, weight, bias, eps, rms, bits=8):
    y, q, scale = ops.norm_quantize(x, weight, bias, eps, rms, bits)
    y_ref, _, _ = ref.norm_quantize(x, weight, bias, eps, rms, bits)
    assert y.shape == x.shape and y.dtype == x.dtype and q.dtype == torch.int8
    assert scale.shape == x.shape[:-1] and scale.dtype == torch.float32
    tol = Y_TOL[x.dtype]
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=tol, atol=tol, equal_nan=True)
    q_ref, s_ref = ref.quantize_rowwise(y, bits)  # the quantization of y as returned
    torch.testing.assert_close(scale, s_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0)
    return y, q, scale


@pytest.mark.parametrize("kind", ["none", "weight", "both"])
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (3, 5, 1025), (64, 384)])
def test_matches_reference(isa, shape, dtype, rms, kind):
    x = (torch.randn(shape) * 3 + 1).to(dtype)
    weight, bias = affine(shape[-1], kind)
    check_against_reference(x, weight, bias, 1e-5, rms)


@pytest.mark.parametrize("bits", [8, 7, 4])
def test_bits(isa, bits):
    x = torch.randn(9, 100)
    check_against_reference(x, torch.randn(100), torch.randn(100), 1e-6, False, bits)


def test_non_contiguous_and_half_precision_parameters(isa):
    x = torch.randn(40, 2, 96)[:, 1]
    assert not x.is_contiguous()
    check_against_reference(x, torch.randn(96).bfloat16(), torch.randn(96).half(), 1e-5, False)


def test_non_finite_rows(isa):
    """A row with NaN or Inf normalizes to NaN: scale NaN, q 0, as quantize_rowwise rules."""
    x = torch.randn(4, 50)
    x[1, 3], x[2, 7] = float("nan"), float("inf")
    y, q, scale = check_against_reference(x, torch.randn(50), torch.randn(50), 1e-5, False)
    assert scale[1:3].isnan().all() and (q[1:3] == 0).all()
    assert scale[[0, 3]].isfinite().all()


def test_constant_row_is_the_bias(isa):
    """var = 0: y = bias exactly (x - mean = 0), for any eps > 0."""
    x = torch.full((3, 64), 2.5)
    bias = torch.randn(64)
    y, _, _ = ops.norm_quantize(x, torch.randn(64), bias, 1e-5)
    torch.testing.assert_close(y, bias.expand(3, 64), rtol=0, atol=0)


@pytest.mark.parametrize("rms", [False, True])
def test_int8_mm_on_the_output_is_linear_w8a8(isa, rms):
    """The handoff contract: the norm's (q, scale) through int8_mm is bit for bit what
    linear_w8a8 computes from its float output (DESIGN.md, "Norm handoff")."""
    m, k, n = 70, 384, 48
    x = torch.randn(m, k) * 2
    y, q, scale = ops.norm_quantize(x, torch.randn(k), None if rms else torch.randn(k), 1e-5, rms)
    wq = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    w_scale, bias = torch.rand(n) * 0.01, torch.randn(n)
    packed = ops.pack_weight(wq)
    torch.testing.assert_close(
        ops.int8_mm(q, packed, scale, w_scale, bias),
        ops.linear_w8a8(y, packed, w_scale, bias),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize(
    "args",
    [
        (torch.randn(5, 40), torch.randn(40), torch.randn(40), 1e-5, False, 8),
        (torch.randn(2, 3, 17).bfloat16(), torch.randn(17).bfloat16(), None, 1e-6, True, 8),
        (torch.randn(4, 9).half(), None, None, 0.0, False, 4),
    ],
)
def test_opcheck(args):
    torch.library.opcheck(OPS.norm_quantize, args)


BAD_INPUTS = [
    (
        (torch.randn(4, 8), torch.randn(7), None, 1e-5),
        r"weight must be a float tensor of shape \[K\] \(=8\)",
    ),
    (
        (torch.randn(4, 8), None, torch.randn(8, 1), 1e-5),
        r"bias must be a float tensor of shape \[K\]",
    ),
    ((torch.randn(4, 0), None, None, 1e-5), r"x must have a non-empty last dimension"),
    ((torch.randn(4, 8).double(), None, None, 1e-5), r"x must be float32, bfloat16 or float16"),
    ((torch.randn(4, 8), None, None, -1.0), r"eps must be finite and >= 0, got -1"),
    ((torch.randn(4, 8), None, None, 1e-5, False, 9), r"bits must be in \[2, 8\], got 9"),
    (
        (torch.randn(4, 8), torch.randn(8, device="meta"), None, 1e-5),
        r"weight must be on cpu",
    ),
]


@pytest.mark.parametrize("args,match", BAD_INPUTS)
def test_bad_input_raises_clear_error(args, match):
    with pytest.raises(ValueError, match=r"qkernels\.norm_quantize: " + match):
        ops.norm_quantize(*args)
