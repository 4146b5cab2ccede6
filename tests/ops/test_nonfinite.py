"""DESIGN.md, "Non-finite and tiny values" and "int32 accumulation", on every backend:
NaN and Inf are never turned into finite numbers, denormal rows quantize the same
everywhere, and no int8 dot product wraps around int32."""

import pytest
import torch
from backends import TRITON_DEVICE, needs_triton, triton_ops
from test_lstm import positional, quantized_layer

from qkernels import reference as ref
from qkernels._common import MAX_EXACT_K

NAN, INF = float("nan"), float("inf")
# Each case poisons row 1 of a [4, K] input; K = 53 puts positions in a SIMD body
# (0, 20) and in its scalar / masked tail (50).
ROW_CASES = {
    "nan_first": lambda r: r.index_fill_(0, torch.tensor([0]), NAN),
    "nan_body": lambda r: r.index_fill_(0, torch.tensor([20]), NAN),
    "nan_tail": lambda r: r.index_fill_(0, torch.tensor([50]), NAN),
    "inf": lambda r: r.index_fill_(0, torch.tensor([20]), INF),
    "minus_inf_tail": lambda r: r.index_fill_(0, torch.tensor([50]), -INF),
    "nan_and_inf": lambda r: r.index_fill_(0, torch.tensor([3]), INF).index_fill_(
        0, torch.tensor([40]), NAN
    ),
    "denormal_row": lambda r: r.copy_(torch.sign(r) * 1e-40),
    "tiny_row": lambda r: r.mul_(1e-37),
    "zero_row": lambda r: r.zero_(),
}
NONFINITE = {"nan_first", "nan_body", "nan_tail", "inf", "minus_inf_tail", "nan_and_inf"}


def poisoned(case: str, dtype=torch.float32, k: int = 53) -> torch.Tensor:
    x = torch.randn(4, k)
    ROW_CASES[case](x[1])
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ROW_CASES)
def test_quantize_rowwise_policy(backend, case, dtype):
    if dtype != torch.float32 and case in ("denormal_row", "tiny_row"):
        pytest.skip("not representable in half precision")
    x = poisoned(case, dtype)
    q, s = backend("quantize_rowwise", x)
    q_ref, s_ref = ref.quantize_rowwise(x)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0, equal_nan=True)
    if case in NONFINITE:
        assert s[1].isnan() and (q[1] == 0).all()
    else:
        assert s[1] == 1 and (q[1] == 0).all()


@pytest.mark.parametrize("case", ROW_CASES)
def test_linear_w8a8_row_with_nan_or_inf_is_nan(backend, case):
    x = poisoned(case)
    wq = torch.randint(-127, 128, (24, 53), dtype=torch.int8)
    ws, bias = torch.rand(24) + 0.1, torch.randn(24)
    y = backend("linear_w8a8", x, wq, ws, bias)
    torch.testing.assert_close(y, ref.linear_w8a8(x, wq, ws, bias), rtol=0, atol=0, equal_nan=True)
    assert y[1].isnan().all() == (case in NONFINITE)
    assert y[[0, 2, 3]].isfinite().all()
    if case not in NONFINITE:  # zero, tiny and denormal rows: exactly the bias
        torch.testing.assert_close(y[1], bias, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["nan_body", "inf"])
def test_float_paths_propagate(backend, case):
    """w8a16 and low-rank compute in float: IEEE arithmetic carries NaN and Inf."""
    x = poisoned(case)
    wq, ws = torch.randint(-127, 128, (24, 53), dtype=torch.int8), torch.rand(24) + 0.1
    assert not backend("linear_w8a16", x, wq, ws)[1].isfinite().any()
    a, b = torch.randn(8, 53), torch.randn(24, 8)
    assert not backend("lowrank_mm", x, a, b)[1].isfinite().any()
    assert backend("lowrank_mm", x, a, b)[[0, 2, 3]].isfinite().all()


@pytest.mark.parametrize("case", ["nan_body", "inf", "minus_inf_tail"])
@pytest.mark.parametrize("proj", [0, 5])
def test_lstm_nan_stays_in_its_sequence(backend, case, proj):
    """A non-finite input at step 2 of sequence 1 makes that sequence's outputs NaN
    from step 2 on (through x and then h); the other sequences are untouched."""
    steps, batch, inp, hidden = 5, 3, 53, 12
    args = quantized_layer(inp, hidden, proj)
    x = torch.randn(steps, batch, inp)
    h0, c0 = torch.randn(batch, proj or hidden) * 0.5, torch.randn(batch, hidden) * 0.5
    clean = backend("lstm_w8a8", *positional(x, h0, c0, args)[:-1])
    x_bad = x.clone()
    ROW_CASES[case](x_bad[2, 1])
    y, h, c = backend("lstm_w8a8", *positional(x_bad, h0, c0, args)[:-1])
    assert y[2:, 1].isnan().all() and h[1].isnan().all() and c[1].isnan().all()
    torch.testing.assert_close(y[:2], clean[0][:2], rtol=0, atol=0)
    others = [0, 2]
    torch.testing.assert_close(y[:, others], clean[0][:, others], rtol=0, atol=0)
    torch.testing.assert_close(c[others], clean[2][others], rtol=0, atol=0)


def test_int8_mm_nan_scale_gives_nan_row(backend):
    a, b = (
        torch.randint(-127, 128, (3, 40), dtype=torch.int8),
        torch.randint(-127, 128, (16, 40), dtype=torch.int8),
    )
    a_scale, b_scale = torch.rand(3) + 0.1, torch.rand(16) + 0.1
    a_scale[1] = NAN
    y = backend("int8_mm", a, b, a_scale, b_scale)
    assert y[1].isnan().all() and y[[0, 2]].isfinite().all()


FQ_VALUES = torch.tensor([NAN, INF, -INF, 0.3, -1e9, 1e9, 0.0, -0.25])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", ["fake_quant", "fake_quant_group", "fake_quant_lsq"])
def test_fake_quant_passes_nan_and_inf_through(backend, op, dtype):
    """NaN and +-Inf come out unchanged (torch's own ops give qmin * scale for NaN);
    finite values, huge ones included, are clamped as usual."""
    x = torch.randn(6, 64)
    x[:, :8] = FQ_VALUES
    x[3, 37] = NAN  # inside a SIMD body, off the first vector
    x = x.to(dtype)
    if op == "fake_quant_group":
        scale, zp = torch.rand(6, 4) * 0.05 + 0.01, torch.randint(-5, 5, (6, 4), dtype=torch.int32)
        args = (x, scale, zp, 16, -128, 127)
    else:
        scale, zp = torch.rand(6) * 0.05 + 0.01, torch.randint(-5, 5, (6,)).float()
        if op == "fake_quant":
            zp = zp.int()
        args = (x, scale, zp, 0, -128, 127) + ((1.0,) if op == "fake_quant_lsq" else ())
    y = backend(op, *args)
    expected = getattr(ref, op)(*args)
    torch.testing.assert_close(y, expected, rtol=0, atol=0, equal_nan=True)
    nonfinite = ~torch.isfinite(x)
    assert torch.equal(y[nonfinite].float().nan_to_num(7.0), x[nonfinite].float().nan_to_num(7.0))
    assert y[~nonfinite].isfinite().all()


def test_fake_quant_lsq_backward_ignores_nonfinite(backend):
    """Passed-through values depend on neither scale nor zero point: they add nothing
    to those gradients, and their x gradient is 0 (outside the range)."""
    x = torch.randn(4, 70) * 0.5
    x[:, :8] = FQ_VALUES
    scale, zp = torch.rand(4) * 0.02 + 0.01, torch.randint(-3, 3, (4,)).float()
    grad = torch.randn(4, 70)
    dx, ds, dz = backend("fake_quant_lsq_backward", grad, x, scale, zp, 0, -128, 127, 1.0)
    x2, s2, z2 = (t.clone().requires_grad_() for t in (x, scale, zp))
    ref.fake_quant_lsq(x2, s2, z2, 0, -128, 127, 1.0).backward(grad)
    torch.testing.assert_close(dx, x2.grad, rtol=0, atol=0)
    torch.testing.assert_close(ds, s2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dz, z2.grad, rtol=1e-5, atol=1e-6)
    assert ds.isfinite().all() and dz.isfinite().all()


# ---- int32 accumulation: K past MAX_EXACT_K (= 131068) ----

WIDE_K = 140_000  # the outside probe's K: 128 * 128 * K > 2**31 - 1


def test_max_exact_k_is_the_largest_safe_k():
    assert 128 * 128 * MAX_EXACT_K <= 2**31 - 1 < 128 * 128 * (MAX_EXACT_K + 4)
    assert MAX_EXACT_K % 4 == 0


def test_linear_w8a8_wide_k_is_exact(backend):
    """The probe's case: x = -1, w = -128 over K = 140000; the exact output is
    +1.79e7 (the wrapped int32 sum gave -1.59e7)."""
    backend.skip_if_slow(16 * 32 * WIDE_K)  # 1 min interpreted: see the K-block test below
    x = torch.full((1, WIDE_K), -1.0)
    wq = torch.full((1, WIDE_K), -128, dtype=torch.int8)
    y = backend("linear_w8a8", x, wq, torch.ones(1))
    exact = 127 * 128 * WIDE_K / 127  # q = -127, scale = 1/127
    assert y.item() == pytest.approx(exact, rel=1e-6)
    torch.testing.assert_close(y, ref.linear_w8a8(x, wq, torch.ones(1)), rtol=0, atol=0)


def test_int_mm_and_int8_mm_wide_k(backend):
    backend.skip_if_slow(16 * 32 * WIDE_K)
    a = torch.randint(-128, 128, (3, WIDE_K), dtype=torch.int8)
    b = torch.randint(-128, 128, (16, WIDE_K), dtype=torch.int8)
    a[0], b[0] = -128, -128  # one sum past int32: 128 * 128 * K
    b[1] = 127
    a_scale, b_scale = torch.rand(3) + 0.5, torch.rand(16) + 0.5
    torch.testing.assert_close(
        backend("int8_mm", a, b, a_scale, b_scale),
        ref.int8_mm(a, b, a_scale, b_scale),
        rtol=0,
        atol=0,
    )
    with pytest.raises(ValueError, match="int_mm: the exact result does not fit the int32 output"):
        backend("int_mm", a, b)
    # Where every sum fits, int_mm is exact although the partial sums of the kernel's
    # biased (w + 128) products would have wrapped.
    torch.testing.assert_close(
        backend("int_mm", a[1:], b[1:]), ref.int_mm(a[1:], b[1:]), rtol=0, atol=0
    )


@needs_triton
@pytest.mark.parametrize("op", ["int_mm", "int8_mm", "linear_w8a8"])
def test_triton_k_blocks_sum_exactly(monkeypatch, op):
    """The Triton K-block path with a small block, so the interpreter runs it fast."""
    import qkernels.triton.int8_gemm as tg

    monkeypatch.setattr(tg, "MAX_EXACT_K", 64)
    a = torch.randint(-128, 128, (5, 300), dtype=torch.int8)
    b = torch.randint(-128, 128, (20, 300), dtype=torch.int8)
    s_a, s_b, bias = torch.rand(5) + 0.5, torch.rand(20) + 0.5, torch.randn(20)
    x = torch.randn(5, 300)
    args = {"int_mm": (a, b), "int8_mm": (a, b, s_a, s_b, bias), "linear_w8a8": (x, b, s_b, bias)}
    got = getattr(triton_ops, op)(*(t.to(TRITON_DEVICE) for t in args[op])).cpu()
    torch.testing.assert_close(got, getattr(ref, op)(*args[op]), rtol=0, atol=0)


def test_lstm_recurrent_size_past_exact_k_is_a_clear_error():
    from qkernels.meta.lstm import lstm_w8a8_fake

    big = MAX_EXACT_K + 4
    with pytest.raises(ValueError, match="recurrent size .* at most 131068"):
        lstm_w8a8_fake(
            torch.empty(1, 1, 4, device="meta"),
            torch.empty(1, big, device="meta"),
            torch.empty(1, big, device="meta"),
            torch.empty(4 * big, 4, dtype=torch.int8, device="meta"),
            torch.empty(4 * big, device="meta"),
            torch.empty(4 * big, big, dtype=torch.int8, device="meta"),
            torch.empty(4 * big, device="meta"),
            None,
            None,
            False,
        )


@pytest.mark.parametrize("rows", [1, 5, 33])
@pytest.mark.parametrize("op", ["linear_w8a16", "linear_w8a16_act", "lora_w8a16"])
def test_w8a16_nonfinite_weight_scale_makes_its_channel_nan(backend, op, rows):
    """W8A16 is dequantize-then-multiply: a NaN or +-Inf weight scale makes its whole
    output channel NaN (0 * inf, inf - inf), not the +-inf of scaling the sum; the other
    channels are untouched."""
    x = torch.randn(rows, 53)
    wq = torch.randint(-127, 128, (24, 53), dtype=torch.int8)
    ws, bias = torch.rand(24) + 0.1, torch.randn(24)
    bad = [1, 17, 23]
    ws[bad] = torch.tensor([INF, -INF, NAN])
    args = (x, wq, ws, bias)
    if op == "linear_w8a16_act":
        args += ("gelu",)
    elif op == "lora_w8a16":
        args += (torch.randn(4, 53), torch.randn(24, 4), 0.5)
    y = backend(op, *args)
    assert y[:, bad].isnan().all()
    good = [i for i in range(24) if i not in bad]
    assert y[:, good].isfinite().all()
    expected = getattr(ref, op)(*args)
    assert expected[:, bad].isnan().all()
