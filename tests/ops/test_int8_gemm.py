"""int8 GEMM family (quantize_rowwise, int_mm, int8_mm, linear_w8a8, linear_w8a16,
pack/unpack_weight) against qkernels.reference on every backend; opcheck,
torch.compile and the error contract.
"""

import pytest
import torch
from backends import TRITON_DEVICE, needs_triton, triton_ops

from qkernels import cuda_kernels, ops
from qkernels import reference as ref

# ---- every backend against qkernels.reference ----
# Output tolerances against the reference, per op and dtype. The W8A8 path
# quantizes, accumulates and dequantizes in the same order as the reference,
# so it is bit-exact everywhere. linear_w8a16 rounds x to bf16 on AVX512-BF16 CPUs
# (relative error up to 2**-8 per element); the Triton kernel computes in fp32.
# Measured as relative Frobenius error.
W8A16_REL_ERR = {torch.float32: 4e-3, torch.bfloat16: 8e-3, torch.float16: 4e-3}
TRITON_REL_ERR = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def w8a16_tol(backend, dtype):
    return (W8A16_REL_ERR if backend.name.startswith("cpu") else TRITON_REL_ERR)[dtype]


ELEMENTWISE_LIMIT = 20_000  # elements the Triton interpreter quantizes in about a second


def gemm_work(m: int, k: int, n: int) -> int:
    """GEMM work as the interpreter pays it: tiny M, N or K still cost whole tiles."""
    return max(m, 16) * max(n, 32) * max(k, 64)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def rand_int8(*shape: int, full_range: bool = True) -> torch.Tensor:
    low = -128 if full_range else -127
    return torch.randint(low, 128, shape, dtype=torch.int8)


@pytest.mark.parametrize("n", [1, 33, 512])
@pytest.mark.parametrize("k", [1, 17, 256, 1000, 1024, 4097])  # 256, 1000: rows read in place
@pytest.mark.parametrize("m", [1, 7, 64, 1025])
def test_int_mm_bit_exact(backend, m, k, n):
    backend.skip_if_slow(gemm_work(m, k, n))
    a, b = rand_int8(m, k), rand_int8(n, k)
    torch.testing.assert_close(backend("int_mm", a, b), ref.int_mm(a, b), rtol=0, atol=0)


def test_int_mm_extreme_values(backend):
    # -128 * -128 products and K large enough for big sums: the +128 shift must stay exact.
    a = torch.full((5, 3000), -128, dtype=torch.int8)
    b = torch.full((20, 3000), -128, dtype=torch.int8)
    b[::2] = 127
    torch.testing.assert_close(backend("int_mm", a, b), ref.int_mm(a, b), rtol=0, atol=0)


# The AVX2 kernel multiplies by what the activations may hold (DESIGN.md, "The AVX2
# ceiling"): any int8 (widened to int16), |a| <= 127 (vpsignb + vpmaddubsw) and |a| <= 64
# (vpmaddubsw of the +128 bytes). Each must stay exact at its range's extremes, where
# vpmaddubsw's int16 pair sums come closest to saturating.
@pytest.mark.parametrize("a_max", [128, 127, 65, 64, 63])
@pytest.mark.parametrize("m", [1, 3, 6, 17])
@pytest.mark.parametrize("k", [1000, 1001])  # rows read in place / copied to a padded buffer
def test_int_gemms_exact_at_every_activation_range(backend, m, a_max, k):
    n = 40
    backend.skip_if_slow(gemm_work(m, k, n))
    a = torch.randint(-a_max, min(a_max, 127) + 1, (m, k), dtype=torch.int8)
    a[:, :300] = -a_max if a_max < 128 else -128
    a[:, 300:600:2] = min(a_max, 127)
    b = rand_int8(n, k)
    b[0], b[1], b[2, ::2], b[3, 1::2] = -128, 127, -128, 127
    torch.testing.assert_close(backend("int_mm", a, b), ref.int_mm(a, b), rtol=0, atol=0)
    a_scale, b_scale, bias = torch.rand(m) * 0.01, torch.rand(n) * 0.01, torch.randn(n)
    torch.testing.assert_close(
        backend("int8_mm", a, b, a_scale, b_scale, bias),
        ref.int8_mm(a, b, a_scale, b_scale, bias),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (3, 5, 1025), (64, 4096)])
def test_quantize_rowwise_bit_exact(backend, shape, dtype, bits):
    backend.skip_if_slow(torch.Size(shape).numel(), ELEMENTWISE_LIMIT)
    x = (torch.randn(shape) * 3).to(dtype)
    x.view(-1, shape[-1])[0] = 0  # an all-zero row gets scale 1
    q, s = backend("quantize_rowwise", x, bits)
    q_ref, s_ref = ref.quantize_rowwise(x, bits)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0)


@pytest.mark.parametrize("bits", [8, 7])
def test_quantize_rowwise_at_every_rounding_boundary(backend, bits):
    """x / scale at, and a few ulp around, each half-integer (where rounding a reciprocal
    multiply instead of the division could differ) for many scales: bit-exact."""
    qmax = 2 ** (bits - 1) - 1
    g = torch.Generator().manual_seed(0)
    rows = 64
    absmax = torch.rand(rows, 1, generator=g, dtype=torch.float64) * 1e3 + 1e-3
    scale = (absmax.float() / qmax).double()
    halves = torch.arange(-qmax, qmax, dtype=torch.float64) + 0.5  # all inside the absmax
    centre = (halves * scale).float()  # x / scale within a rounding of a half-integer
    x = torch.cat([centre, *(centre.nextafter(centre * s) for s in (2, 0)),
                   centre.nextafter(centre * 2).nextafter(centre * 2)], dim=1)  # fmt: skip
    x[:, 0] = absmax.float().squeeze(1)  # the row's absmax: the scale above
    q, s = backend("quantize_rowwise", x, bits)
    q_ref, s_ref = ref.quantize_rowwise(x, bits)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0)


@pytest.mark.parametrize("out_dtype", [None, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("m,k,n", [(1, 17, 33), (17, 256, 40), (130, 1000, 512)])
def test_int8_mm_matches_reference(backend, m, k, n, with_bias, out_dtype):
    backend.skip_if_slow(gemm_work(m, k, n))
    a, b = rand_int8(m, k), rand_int8(n, k, full_range=False)
    a_scale, b_scale = torch.rand(m) + 0.01, torch.rand(n) * 0.01
    bias = torch.randn(n) if with_bias else None
    out = backend("int8_mm", a, b, a_scale, b_scale, bias, out_dtype)
    assert out.dtype == (out_dtype or torch.float32)
    # Same operation order as the reference (16-bit outputs round half to even): bit-exact.
    expected = ref.int8_mm(a, b, a_scale, b_scale, bias, out_dtype)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["linear_w8a16", "linear_w8a8"])
def test_decode_row_counts_and_column_group_tails(op):
    """Every row count the CPU kernels block differently (1-4 rows: four column groups
    at a time, 5-8: two, 9-16: one; then blocks of 16) over 7 full groups and a partial
    one: each row and each group of 16 columns against the reference."""
    k, n = 100, 7 * 16 + 5
    wq, w_scale = rand_int8(n, k, full_range=False), torch.rand(n) * 0.02
    bias = torch.randn(n)
    reference = getattr(ref, op)
    tol = 2.5 * W8A16_REL_ERR[torch.float32] if op == "linear_w8a16" else 0.0  # per 16 values
    for m in list(range(1, 19)) + [33]:
        x = torch.randn(m, k)
        out, expected = getattr(ops, op)(x, wq, w_scale, bias), reference(x, wq, w_scale, bias)
        for row in range(m):
            for g in range(0, n, 16):
                got, want = out[row, g : g + 16], expected[row, g : g + 16]
                assert rel_err(got, want) <= tol, (m, row, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 64), (17, 100), (2, 9, 272), (1025, 768)])
def test_linear_w8a8_matches_reference(backend, shape, dtype):
    k, n = shape[-1], 96
    backend.skip_if_slow(gemm_work(torch.Size(shape[:-1]).numel(), k, n))
    x = torch.randn(shape).to(dtype)
    wq, w_scale = rand_int8(n, k, full_range=False), torch.rand(n) * 0.02
    bias = torch.randn(n).to(dtype)
    out = backend("linear_w8a8", x, wq, w_scale, bias)
    assert out.shape == (*shape[:-1], n) and out.dtype == dtype
    torch.testing.assert_close(out, ref.linear_w8a8(x, wq, w_scale, bias), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 64), (17, 100), (2, 9, 272), (40, 4097)])
def test_linear_w8a16_matches_reference(backend, shape, dtype):
    k, n = shape[-1], 72
    backend.skip_if_slow(gemm_work(torch.Size(shape[:-1]).numel(), k, n))
    x = torch.randn(shape).to(dtype)
    wq, w_scale = rand_int8(n, k, full_range=False), torch.rand(n) * 0.02
    bias = torch.randn(n).to(dtype)
    out = backend("linear_w8a16", x, wq, w_scale, bias)
    assert out.shape == (*shape[:-1], n) and out.dtype == dtype
    assert rel_err(out, ref.linear_w8a16(x, wq, w_scale, bias)) < w8a16_tol(backend, dtype)


def test_non_contiguous_inputs(backend):
    x = torch.randn(100, 40).T  # [40, 100], transposed view
    a = rand_int8(64, 30)[:, ::2]  # [64, 15], strided
    b = rand_int8(15, 20).T  # [20, 15]
    wq = rand_int8(100, 48).T  # [48, 100]
    scale = torch.rand(96)[::2]  # [48], strided
    bias = torch.randn(96)[::2]
    assert not (x.is_contiguous() or a.is_contiguous() or b.is_contiguous())
    torch.testing.assert_close(backend("int_mm", a, b), ref.int_mm(a, b), rtol=0, atol=0)
    a_scale = torch.rand(128)[::2]
    torch.testing.assert_close(
        backend("int8_mm", a, b, a_scale, scale[:20], None),
        ref.int8_mm(a.contiguous(), b.contiguous(), a_scale, scale[:20]),
        rtol=0,
        atol=0,
    )
    contiguous = (x.contiguous(), wq.contiguous(), scale.contiguous(), bias.contiguous())
    for op in ("linear_w8a8", "linear_w8a16"):
        torch.testing.assert_close(
            backend(op, x, wq, scale, bias), backend(op, *contiguous), rtol=0, atol=0
        )
    q, s = backend("quantize_rowwise", x)
    q_ref, s_ref = ref.quantize_rowwise(x)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0)
    torch.testing.assert_close(s, s_ref, rtol=0, atol=0)


def test_empty_shapes(backend):
    assert backend("int_mm", rand_int8(0, 8), rand_int8(4, 8)).shape == (0, 4)
    assert backend("int_mm", rand_int8(3, 8), rand_int8(0, 8)).shape == (3, 0)
    torch.testing.assert_close(
        backend("int_mm", rand_int8(3, 0), rand_int8(4, 0)), torch.zeros(3, 4, dtype=torch.int32)
    )
    x = torch.randn(0, 32)
    assert backend("linear_w8a8", x, rand_int8(8, 32), torch.ones(8)).shape == (0, 8)
    assert backend("linear_w8a16", x, rand_int8(8, 32), torch.ones(8)).shape == (0, 8)
    q, s = backend("quantize_rowwise", torch.randn(2, 0))
    assert q.shape == (2, 0) and torch.equal(s, torch.ones(2))


# ---- CPU only: the packed weight layout ----


@pytest.mark.parametrize("n,k", [(1, 1), (16, 4), (33, 17), (100, 1000)])
def test_pack_weight_matches_reference_and_roundtrips(n, k):
    w = rand_int8(n, k)
    packed = ops.pack_weight(w)
    torch.testing.assert_close(packed, ref.pack_weight(w), rtol=0, atol=0)
    torch.testing.assert_close(ops.unpack_weight(packed, n, k), w, rtol=0, atol=0)


@pytest.mark.parametrize("m,k,n", [(1, 17, 33), (130, 1000, 512)])
def test_packed_weight_gives_the_plain_weights_result(isa, m, k, n):
    x, a, a_scale = torch.randn(m, k), rand_int8(m, k), torch.rand(m)
    w, scale, bias = rand_int8(n, k, full_range=False), torch.rand(n) * 0.01, torch.randn(n)
    packed = ops.pack_weight(w)
    torch.testing.assert_close(
        ops.int8_mm(a, packed, a_scale, scale, bias),
        ops.int8_mm(a, w, a_scale, scale, bias),
        rtol=0,
        atol=0,
    )
    for op in (ops.linear_w8a8, ops.linear_w8a16):
        torch.testing.assert_close(
            op(x, packed, scale, bias), op(x, w, scale, bias), rtol=0, atol=0
        )


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


# ---- autograd: x and bias get the straight-through gradient, the int8 weight none ----


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", ["linear_w8a8", "linear_w8a16"])
def test_linear_gradients_match_autograd_through_the_dequantized_weight(op, dtype, packed):
    x = torch.randn(2, 5, 40).to(dtype).requires_grad_()
    wq, w_scale = rand_int8(24, 40, full_range=False), torch.rand(24) * 0.02
    bias = torch.randn(24).requires_grad_()
    weight = ops.pack_weight(wq) if packed else wq
    grad = torch.randn(2, 5, 24).to(dtype)
    getattr(ops, op)(x, weight, w_scale, bias).backward(grad)
    x_ref, b_ref = x.detach().float().requires_grad_(), bias.detach().clone().requires_grad_()
    torch.nn.functional.linear(x_ref, wq.float() * w_scale[:, None], b_ref).backward(grad.float())
    assert x.grad.dtype == dtype and bias.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, x_ref.grad.to(dtype), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bias.grad, b_ref.grad, rtol=1e-5, atol=1e-5)


def test_linear_scale_gradient_is_a_clear_error():
    x = torch.randn(3, 16, requires_grad=True)
    w_scale = (torch.rand(8) * 0.02).requires_grad_()
    y = ops.linear_w8a8(x, rand_int8(8, 16), w_scale)
    with pytest.raises(ValueError, match=r"qkernels\.linear_w8a8: w_scale gets no gradient"):
        y.sum().backward()


# ---- opcheck, torch.compile and the error contract of the int8 GEMM ops. ----
OPS = torch.ops.qkernels


def samples():
    x = torch.randn(5, 40)
    wq, ws, bias = rand_int8(24, 40), torch.rand(24) + 0.1, torch.randn(24)
    a, a_scale = rand_int8(5, 40), torch.rand(5)
    yield OPS.pack_weight, (wq,)
    yield OPS.unpack_weight, (ops.pack_weight(wq), 24, 40)
    yield OPS.quantize_rowwise, (x, 8)
    yield OPS.quantize_rowwise, (torch.randn(2, 3, 17).bfloat16(), 4)
    yield OPS.int_mm, (a, wq)
    yield OPS.int8_mm, (a, wq, a_scale, ws, bias, torch.bfloat16)
    yield OPS.int8_mm, (a, ops.pack_weight(wq), a_scale, ws, None, None)
    yield OPS.linear_w8a8, (x, wq, ws, bias)
    yield OPS.linear_w8a8, (torch.randn(2, 3, 40).half(), ops.pack_weight(wq), ws, None)
    yield OPS.linear_w8a16, (x, ops.pack_weight(wq), ws, bias)
    yield OPS.linear_w8a16, (x.bfloat16(), wq, ws, None)


@pytest.mark.parametrize("op,args", list(samples()), ids=lambda v: getattr(v, "__name__", ""))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("op", [OPS.linear_w8a8, OPS.linear_w8a16], ids=str)
def test_opcheck_with_gradients(op):
    x, bias = torch.randn(5, 40, requires_grad=True), torch.randn(24, requires_grad=True)
    torch.library.opcheck(op, (x, rand_int8(24, 40), torch.rand(24) + 0.1, bias))


def test_compile_fullgraph_matches_eager():
    x = torch.randn(3, 7, 40)
    wq, ws = rand_int8(24, 40), torch.rand(24) + 0.1
    packed = ops.pack_weight(wq)

    def f(x):
        y = ops.linear_w8a8(torch.relu(x), packed, ws) + 1
        return ops.linear_w8a16(y[..., : 40 - 16].repeat(1, 1, 2)[..., :40], wq, ws)

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x), rtol=0, atol=0)


BAD_INPUTS = [
    # (call, error fragment naming the op and the argument)
    (lambda: ops.int_mm(torch.randn(4, 8), rand_int8(3, 8)), r"qkernels\.int_mm: a must be int8"),
    (
        lambda: ops.int_mm(rand_int8(4, 8), rand_int8(3, 9)),
        r"qkernels\.int_mm: b must be int8 of shape \[N, K\] with K == a.shape\[1\] \(=8\), "
        r"got torch.int8 \[3, 9\]",
    ),
    (
        lambda: ops.int8_mm(rand_int8(4, 8), rand_int8(3, 8), torch.rand(5), torch.rand(3)),
        r"qkernels\.int8_mm: a_scale must be float32 of shape \[M\] or \[M, 1\] \(=4\)",
    ),
    (
        lambda: ops.int8_mm(
            rand_int8(4, 8), rand_int8(3, 8), torch.rand(4).double(), torch.rand(3)
        ),
        r"qkernels\.int8_mm: a_scale must be float32",
    ),
    (
        lambda: ops.int8_mm(
            rand_int8(4, 8), rand_int8(3, 8), torch.rand(4), torch.rand(3), None, torch.int32
        ),
        r"qkernels\.int8_mm: out_dtype must be",
    ),
    (
        lambda: ops.linear_w8a8(torch.randn(4, 8), rand_int8(3, 9), torch.rand(3)),
        r"qkernels\.linear_w8a8: wq must be int8 of shape \[N, K\] = \[3, 8\], "
        r"got torch.int8 \[3, 9\]",
    ),
    (
        lambda: ops.linear_w8a8(torch.randn(4, 8).double(), rand_int8(3, 8), torch.rand(3)),
        r"qkernels\.linear_w8a8: x must be float32, bfloat16 or float16, got torch.float64",
    ),
    (
        lambda: ops.linear_w8a8(torch.randn(4, 8), rand_int8(3, 8).float(), torch.rand(3)),
        r"qkernels\.linear_w8a8: wq must be int8",
    ),
    (
        lambda: ops.linear_w8a16(torch.randn(4, 8), rand_int8(3, 8), torch.rand(3), torch.randn(4)),
        r"qkernels\.linear_w8a16: bias must be a float tensor of shape \[N\] \(=3\)",
    ),
    (
        lambda: ops.linear_w8a16(torch.randn(4, 8), rand_int8(3, 8), torch.rand(3, 2)),
        r"qkernels\.linear_w8a16: w_scale must be float32 of shape \[N\]",
    ),
    (
        lambda: ops.linear_w8a16(
            torch.randn(4, 8), torch.zeros(16, 4, dtype=torch.uint8), torch.rand(3)
        ),
        r"qkernels\.linear_w8a16: wq must be int8 \[N, K\] = \[3, 8\] or a packed weight",
    ),
    (lambda: ops.quantize_rowwise(torch.randn(4, 8), 9), r"qkernels\.quantize_rowwise: bits"),
    (
        lambda: ops.unpack_weight(torch.zeros(16, 8, dtype=torch.uint8), 3, 9),
        r"qkernels\.unpack_weight: packed must be uint8 of shape \[16, 12\]",
    ),
    # Wrong device: a meta tensor among CPU tensors is caught by the fake kernel.
    (
        lambda: ops.linear_w8a8(torch.randn(4, 8), rand_int8(3, 8).to("meta"), torch.rand(3)),
        r"qkernels\.linear_w8a8: wq must be on cpu like the other arguments, got torch.int8 "
        r"\[3, 8\] on meta",
    ),
    (
        lambda: ops.int8_mm(
            rand_int8(4, 8), rand_int8(3, 8), torch.rand(4), torch.rand(3, device="meta")
        ),
        r"qkernels\.int8_mm: b_scale must be on cpu",
    ),
]


@pytest.mark.parametrize("call,match", BAD_INPUTS)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_forced_isa_errors(monkeypatch):
    monkeypatch.setenv("QKERNELS_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match=r"qkernels\.int_mm: QKERNELS_CPU_ISA must be one of"):
        ops.int_mm(rand_int8(2, 4), rand_int8(2, 4))


def test_forced_isa_unsupported(monkeypatch):
    from conftest import ALL_ISAS, available_isas

    missing = [i for i in ALL_ISAS if i not in available_isas()]
    if not missing:
        pytest.skip("this CPU supports every ISA path")
    monkeypatch.setenv("QKERNELS_CPU_ISA", missing[0])
    with pytest.raises(ValueError, match="is not supported by this CPU"):
        ops.int_mm(rand_int8(2, 4), rand_int8(2, 4))


# ---- Triton only: split-K, the two W8A8 strategies, tile order, CUDA dispatch ----


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def dev(*ts):
    return [t.to(TRITON_DEVICE) for t in ts]


@needs_triton
@pytest.mark.parametrize("m", [1, 5, 16, 17])
@pytest.mark.parametrize("k", [16, 100, 272])
def test_linear_w8a16_split_k_decode(m, k):
    """M <= 16 runs split-K (2 splits under the interpreter): the K slices, their
    atomic sum and the last program's epilogue must give the unsplit result."""
    x = torch.randn(m, k)
    wq, ws = torch.randint(-127, 128, (40, k), dtype=torch.int8), torch.rand(40) * 0.01
    bias = torch.randn(40)
    out = triton_ops.linear_w8a16(*dev(x, wq, ws, bias)).cpu()
    assert rel(out, ref.linear_w8a16(x, wq, ws, bias)) < TRITON_REL_ERR[torch.float32]
    out = triton_ops.linear_w8a16(*dev(x, wq, ws)).cpu()  # no bias: the split path without it
    assert rel(out, ref.linear_w8a16(x, wq, ws)) < TRITON_REL_ERR[torch.float32]


@needs_triton
@pytest.mark.parametrize("m", [1, 17, 64])
def test_w8a8_quantize_strategies_agree_bit_exactly(m):
    """Quantize-on-load and the separate quantize pass compute the same numbers."""
    x, wq = torch.randn(m, 100), torch.randint(-127, 128, (40, 100), dtype=torch.int8)
    ws, bias = torch.rand(40) * 0.01, torch.randn(40)
    expected = ref.linear_w8a8(x, wq, ws, bias)
    for fn in (
        triton_ops.linear_w8a8,
        triton_ops.int8_gemm.linear_w8a8_prologue,
        triton_ops.int8_gemm.linear_w8a8_two_pass,
    ):
        torch.testing.assert_close(fn(*dev(x, wq, ws, bias)).cpu(), expected, rtol=0, atol=0)


@needs_triton
def test_grouped_tile_order_covers_every_tile():
    """More row blocks than one group (GROUP_M = 8 blocks of 16 rows), with a
    partial last group and a partial last block: every output tile is written once."""
    a, b = (
        torch.randint(-128, 128, (200, 48), dtype=torch.int8),
        torch.randint(-128, 128, (72, 48), dtype=torch.int8),
    )
    torch.testing.assert_close(
        triton_ops.int_mm(*dev(a, b)).cpu(), ref.int_mm(a, b), rtol=0, atol=0
    )


@needs_triton
def test_same_errors_as_the_ops():
    with pytest.raises(ValueError, match=r"qkernels\.int_mm: b must be int8 of shape \[N, K\]"):
        triton_ops.int_mm(torch.zeros(2, 4, dtype=torch.int8), torch.zeros(3, 5, dtype=torch.int8))


@needs_triton
@pytest.mark.cuda
def test_ops_dispatch_on_cuda():
    import qkernels
    from qkernels import _backend

    assert qkernels.get_backend("linear_w8a8") == "auto"
    arch = cuda_kernels.cubin_arch(torch.cuda.get_device_capability())
    expected = "cuda" if arch and "linear_w8a8" in cuda_kernels.built_ops() else "triton"
    assert _backend.resolve_backend("linear_w8a8", torch.device("cuda")) == expected
    lin = torch.nn.Linear(256, 128).cuda()
    q = qkernels.Int8Linear.from_float(lin)
    x = torch.randn(4, 256, device="cuda")
    assert ((q(x) - lin(x)).norm() / lin(x).norm()).item() < 1e-2
