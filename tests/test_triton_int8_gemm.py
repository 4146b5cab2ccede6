"""Triton int8 GEMM family and lowrank_mm on CPU through TRITON_INTERPRET=1 (set in
conftest), against reference.py: bit-exact for integer results, and for the W8A8
paths whose quantization and epilogue follow the reference's arithmetic."""

import os

import pytest
import torch

from qkernels import reference as ref

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="needs the Triton interpreter or a GPU",
)
T = pytest.importorskip("qkernels.triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(m, k, n) for m in (1, 17, 64) for k in (16, 100, 272) for n in (8, 40, 96)]
# Float tolerances (relative Frobenius error vs the fp32 reference), per dtype.
FLOAT_TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def dev(*ts):
    return [t.to(DEVICE) for t in ts]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int_and_int8_mm(m, k, n):
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    sa, sb, bias = torch.rand(m) * 0.1, torch.rand(n) * 0.1, torch.randn(n)
    da, db, dsa, dsb, dbias = dev(a, b, sa, sb, bias)
    torch.testing.assert_close(T.int_mm(da, db).cpu(), ref.int_mm(a, b), rtol=0, atol=0)
    for dtype in (None, torch.bfloat16, torch.float16):  # 16-bit outputs round half to even
        torch.testing.assert_close(
            T.int8_mm(da, db, dsa, dsb, dbias, dtype).cpu(),
            ref.int8_mm(a, b, sa, sb, bias, dtype),
            rtol=0,
            atol=0,
        )


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_quantize_and_linear_w8a8(m, k, n):
    x = torch.randn(m, k)
    wq, ws = torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n) * 0.01
    bias = torch.randn(n)
    dx, dwq, dws, dbias = dev(x, wq, ws, bias)
    q, s = T.quantize_rowwise(dx)
    q_ref, s_ref = ref.quantize_rowwise(x)
    torch.testing.assert_close(q.cpu(), q_ref, rtol=0, atol=0)
    torch.testing.assert_close(s.cpu(), s_ref, rtol=0, atol=0)
    torch.testing.assert_close(
        T.linear_w8a8(dx, dwq, dws, dbias).cpu(), ref.linear_w8a8(x, wq, ws, bias), rtol=0, atol=0
    )
    xb = x.to(torch.bfloat16)
    torch.testing.assert_close(
        T.linear_w8a8(*dev(xb, wq, ws, bias)).cpu(),
        ref.linear_w8a8(xb, wq, ws, bias),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m,k,n", [(1, 16, 8), (17, 100, 40), (64, 272, 96)])
def test_linear_w8a16_and_lowrank(m, k, n, dtype):
    x = torch.randn(2, m, k).to(dtype)
    wq, ws = torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n) * 0.01
    bias = torch.randn(n).to(dtype)
    dx, dwq, dws, dbias = dev(x, wq, ws, bias)
    out = T.linear_w8a16(dx, dwq, dws, dbias).cpu()
    assert out.shape == (2, m, n) and out.dtype == dtype
    assert rel(out, ref.linear_w8a16(x, wq, ws, bias)) < FLOAT_TOL[dtype]
    a, b = torch.randn(8, k).to(dtype), torch.randn(n, 8).to(dtype)
    da, db = dev(a, b)
    low = T.lowrank_mm(dx, da, db, dbias).cpu()
    expected = ref.lowrank_mm(x.float(), a.float(), b.float(), bias.float())
    assert low.shape == (2, m, n) and rel(low, expected) < FLOAT_TOL[dtype]


@pytest.mark.parametrize("m", [1, 5, 16, 17])
@pytest.mark.parametrize("k", [16, 100, 272])
def test_linear_w8a16_split_k_decode(m, k):
    """M <= 16 runs split-K (2 splits under the interpreter): the K slices, their
    atomic sum and the last program's epilogue must give the unsplit result."""
    x = torch.randn(m, k)
    wq, ws = torch.randint(-127, 128, (40, k), dtype=torch.int8), torch.rand(40) * 0.01
    bias = torch.randn(40)
    out = T.linear_w8a16(*dev(x, wq, ws, bias)).cpu()
    assert rel(out, ref.linear_w8a16(x, wq, ws, bias)) < FLOAT_TOL[torch.float32]
    out = T.linear_w8a16(*dev(x, wq, ws)).cpu()  # no bias: the split path without it
    assert rel(out, ref.linear_w8a16(x, wq, ws)) < FLOAT_TOL[torch.float32]


@pytest.mark.parametrize("m", [1, 17, 64])
def test_w8a8_quantize_strategies_agree_bit_exactly(m):
    """Quantize-on-load and the separate quantize pass compute the same numbers."""
    x, wq = torch.randn(m, 100), torch.randint(-127, 128, (40, 100), dtype=torch.int8)
    ws, bias = torch.rand(40) * 0.01, torch.randn(40)
    expected = ref.linear_w8a8(x, wq, ws, bias)
    for fn in (T.linear_w8a8, T.int8_gemm.linear_w8a8_prologue, T.int8_gemm.linear_w8a8_two_pass):
        torch.testing.assert_close(fn(*dev(x, wq, ws, bias)).cpu(), expected, rtol=0, atol=0)


def test_grouped_tile_order_covers_every_tile():
    """More row blocks than one group (GROUP_M = 8 blocks of 16 rows), with a
    partial last group and a partial last block: every output tile is written once."""
    a, b = (
        torch.randint(-128, 128, (200, 48), dtype=torch.int8),
        torch.randint(-128, 128, (72, 48), dtype=torch.int8),
    )
    torch.testing.assert_close(T.int_mm(*dev(a, b)).cpu(), ref.int_mm(a, b), rtol=0, atol=0)


def test_noncontiguous_inputs():
    x = torch.randn(100, 17).T  # [17, 100], transposed view
    wq = torch.randint(-127, 128, (100, 40), dtype=torch.int8).T  # [40, 100]
    ws = torch.rand(40) * 0.01
    torch.testing.assert_close(
        T.linear_w8a8(*dev(x, wq, ws)).cpu(), ref.linear_w8a8(x, wq, ws), rtol=0, atol=0
    )
    assert rel(T.linear_w8a16(*dev(x, wq, ws)).cpu(), ref.linear_w8a16(x, wq, ws)) < 1e-5
    a = torch.randint(-128, 128, (100, 17), dtype=torch.int8).T
    torch.testing.assert_close(T.int_mm(*dev(a, wq)).cpu(), ref.int_mm(a, wq), rtol=0, atol=0)


def test_same_errors_as_the_ops():
    with pytest.raises(ValueError, match=r"qkernels\.int_mm: b must be int8 of shape \[N, K\]"):
        T.int_mm(torch.zeros(2, 4, dtype=torch.int8), torch.zeros(3, 5, dtype=torch.int8))


@pytest.mark.cuda
def test_ops_dispatch_to_triton_on_cuda():
    import qkernels

    assert qkernels.get_backend("linear_w8a8") == "triton"
    lin = torch.nn.Linear(256, 128).cuda()
    q = qkernels.Int8Linear.from_float(lin)
    x = torch.randn(4, 256, device="cuda")
    assert ((q(x) - lin(x)).norm() / lin(x).norm()).item() < 1e-2
