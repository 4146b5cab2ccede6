"""CPU int8 GEMM family against qkernels.reference."""

import pytest
import torch

from qkernels import ops
from qkernels import reference as ref

# Output tolerances against the reference, per op and dtype. The W8A8 path
# quantizes, accumulates and dequantizes in the same order as the reference,
# so it is bit-exact; linear_w8a16 rounds x to bf16 on AVX512-BF16 CPUs
# (relative error up to 2**-9 per element), measured as relative Frobenius error.
W8A16_REL_ERR = {torch.float32: 4e-3, torch.bfloat16: 8e-3, torch.float16: 4e-3}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def rand_int8(*shape: int, full_range: bool = True) -> torch.Tensor:
    low = -128 if full_range else -127
    return torch.randint(low, 128, shape, dtype=torch.int8)


@pytest.mark.parametrize("n", [1, 33, 512])
@pytest.mark.parametrize("k", [1, 17, 256, 1000, 4097])
@pytest.mark.parametrize("m", [0, 1, 7, 64, 1025])
def test_int_mm_bit_exact(isa, m, k, n):
    a, b = rand_int8(m, k), rand_int8(n, k)
    torch.testing.assert_close(ops.int_mm(a, b), ref.int_mm(a, b), rtol=0, atol=0)


def test_int_mm_extreme_values(isa):
    # -128 * -128 products and K large enough for big sums: the +128 shift must stay exact.
    a = torch.full((5, 3000), -128, dtype=torch.int8)
    b = torch.full((20, 3000), -128, dtype=torch.int8)
    b[::2] = 127
    torch.testing.assert_close(ops.int_mm(a, b), ref.int_mm(a, b), rtol=0, atol=0)


@pytest.mark.parametrize("n,k", [(1, 1), (16, 4), (33, 17), (100, 1000)])
def test_pack_weight_matches_reference_and_roundtrips(n, k):
    w = rand_int8(n, k)
    packed = ops.pack_weight(w)
    torch.testing.assert_close(packed, ref.pack_weight(w), rtol=0, atol=0)
    torch.testing.assert_close(ops.unpack_weight(packed, n, k), w, rtol=0, atol=0)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (3, 5, 1025), (64, 4096)])
def test_quantize_rowwise_bit_exact(isa, shape, dtype, bits):
    x = (torch.randn(shape) * 3).to(dtype)
    x.view(-1, shape[-1])[0] = 0  # an all-zero row gets scale 1
    q, s = ops.quantize_rowwise(x, bits)
    q_ref, s_ref = ref.quantize_rowwise(x, bits)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0)


@pytest.mark.parametrize("out_dtype", [None, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("m,k,n", [(1, 17, 33), (17, 256, 40), (130, 1000, 512)])
def test_int8_mm_matches_reference(isa, m, k, n, with_bias, out_dtype):
    a, b = rand_int8(m, k), rand_int8(n, k, full_range=False)
    a_scale, b_scale = torch.rand(m) + 0.01, torch.rand(n) * 0.01
    bias = torch.randn(n) if with_bias else None
    out = ops.int8_mm(a, b, a_scale, b_scale, bias, out_dtype)
    expected = ref.int8_mm(a, b, a_scale, b_scale, bias, out_dtype)
    assert out.dtype == (out_dtype or torch.float32)
    # Same operation order as the reference: bit-exact, packed or not.
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    packed = ops.int8_mm(a, ops.pack_weight(b), a_scale, b_scale, bias, out_dtype)
    torch.testing.assert_close(packed, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 64), (17, 100), (2, 9, 272), (1025, 768)])
def test_linear_w8a8_matches_reference(isa, shape, dtype):
    k, n = shape[-1], 96
    x = torch.randn(shape).to(dtype)
    wq, w_scale = rand_int8(n, k, full_range=False), torch.rand(n) * 0.02
    bias = torch.randn(n).to(dtype)
    out = ops.linear_w8a8(x, ops.pack_weight(wq), w_scale, bias)
    assert out.shape == (*shape[:-1], n) and out.dtype == dtype
    torch.testing.assert_close(out, ref.linear_w8a8(x, wq, w_scale, bias), rtol=0, atol=0)
    torch.testing.assert_close(ops.linear_w8a8(x, wq, w_scale, bias), out, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 64), (17, 100), (2, 9, 272), (40, 4097)])
def test_linear_w8a16_matches_reference(isa, shape, dtype):
    k, n = shape[-1], 72
    x = torch.randn(shape).to(dtype)
    wq, w_scale = rand_int8(n, k, full_range=False), torch.rand(n) * 0.02
    out = ops.linear_w8a16(x, ops.pack_weight(wq), w_scale)
    assert out.shape == (*shape[:-1], n) and out.dtype == dtype
    assert rel_err(out, ref.linear_w8a16(x, wq, w_scale)) < W8A16_REL_ERR[dtype]


def test_linear_w8a16_bias_and_plain_weight(isa):
    x = torch.randn(5, 64)
    wq, w_scale, bias = rand_int8(24, 64, full_range=False), torch.rand(24), torch.randn(24)
    out = ops.linear_w8a16(x, wq, w_scale, bias)
    assert rel_err(out, ref.linear_w8a16(x, wq, w_scale, bias)) < W8A16_REL_ERR[torch.float32]


def test_linear_error_vs_float_is_small():
    """Per-token x per-channel int8 stays close to fp32. Gaussian data is the
    hard case for absmax scaling: each operand's rounding costs about
    absmax / 127 / sqrt(12) / std ~ 0.8% at K=1024, so ~1.1% for both."""
    x, w = torch.randn(64, 1024), torch.randn(512, 1024) / 32
    wq, w_scale = ops.quantize_rowwise(w)
    exact = x @ w.T
    assert rel_err(ops.linear_w8a8(x, wq, w_scale), exact) < 1.3e-2
    assert rel_err(ops.linear_w8a16(x, wq, w_scale), exact) < 1e-2
    # nn.Linear's own init (uniform weights) leaves only the activation error.
    lin = torch.nn.Linear(1024, 512)
    wq, w_scale = ops.quantize_rowwise(lin.weight.detach())
    exact = lin(x).detach()
    assert rel_err(ops.linear_w8a8(x, wq, w_scale, lin.bias.detach()), exact) < 1e-2


def test_non_contiguous_inputs(isa):
    x = torch.randn(100, 40).T  # [40, 100], transposed view
    a = rand_int8(64, 30)[:, ::2]  # [64, 15], strided
    b = rand_int8(15, 20).T  # [20, 15]
    wq = rand_int8(100, 48).T  # [48, 100]
    scale = torch.rand(96)[::2]  # [48], strided
    bias = torch.randn(96)[::2]
    assert not (x.is_contiguous() or a.is_contiguous() or b.is_contiguous())
    torch.testing.assert_close(ops.int_mm(a, b), ref.int_mm(a, b), rtol=0, atol=0)
    a_scale = torch.rand(128)[::2]
    torch.testing.assert_close(
        ops.int8_mm(a, b, a_scale, scale[:20], None),
        ref.int8_mm(a.contiguous(), b.contiguous(), a_scale, scale[:20]),
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        ops.linear_w8a8(x, wq, scale, bias),
        ops.linear_w8a8(x.contiguous(), wq.contiguous(), scale.contiguous(), bias.contiguous()),
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        ops.linear_w8a16(x, wq, scale, bias),
        ops.linear_w8a16(x.contiguous(), wq.contiguous(), scale.contiguous(), bias.contiguous()),
        rtol=0,
        atol=0,
    )
    q, s = ops.quantize_rowwise(x)
    q_ref, s_ref = ref.quantize_rowwise(x)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0)


def test_empty_shapes():
    assert ops.int_mm(rand_int8(0, 8), rand_int8(4, 8)).shape == (0, 4)
    assert ops.int_mm(rand_int8(3, 8), rand_int8(0, 8)).shape == (3, 0)
    torch.testing.assert_close(
        ops.int_mm(rand_int8(3, 0), rand_int8(4, 0)), torch.zeros(3, 4, dtype=torch.int32)
    )
    x = torch.randn(0, 32)
    assert ops.linear_w8a8(x, rand_int8(8, 32), torch.ones(8)).shape == (0, 8)
    assert ops.linear_w8a16(x, rand_int8(8, 32), torch.ones(8)).shape == (0, 8)
    q, s = ops.quantize_rowwise(torch.randn(2, 0))
    assert q.shape == (2, 0) and torch.equal(s, torch.ones(2))
