"""linear_w8a8_act / linear_w8a16_act: an activation fused into the int8 GEMMs' epilogue
(relu, gelu, gelu_tanh, silu), against qkernels.reference on every backend; the
activation math itself on a dense grid and at the extremes; gradients, opcheck,
torch.compile and the error contract."""

import pytest
import torch

from qkernels import ops
from qkernels import reference as ref
from qkernels._common import ACTIVATIONS, apply_activation

OPS = torch.ops.qkernels
FUSED = [a for a in ACTIVATIONS if a != "none"]
# The kernels' activations differ from torch's by a few fp32 ulp (csrc/cpu/activation_avx2.h):
# in fp32 that is the tolerance; in bf16 / fp16 one output rounding may flip.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-5),
}


def rand_weight(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 weight and scales giving outputs of about unit size, where the activations
    bend (x ~ N(0, 1): output std ~ 2)."""
    wq = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    return wq, torch.full((n,), 2.0 / (73.0 * k**0.5)) * (0.5 + torch.rand(n))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 64), (17, 100), (2, 9, 272), (1025, 768)])
def test_linear_w8a8_act_matches_reference(backend, shape, dtype, activation):
    k, n = shape[-1], 97  # N: six full column groups of 16 and a partial one
    backend.skip_if_slow(max(torch.Size(shape[:-1]).numel(), 16) * 128 * max(k, 64))
    if backend.interpreted and dtype != torch.float32 and activation != "gelu":
        pytest.skip("interpreter (CI time): every activation in fp32, the others with gelu")
    x = torch.randn(shape).to(dtype)
    wq, w_scale = rand_weight(n, k)
    bias = torch.randn(n).to(dtype)
    out = backend("linear_w8a8_act", x, wq, w_scale, bias, activation)
    assert out.shape == (*shape[:-1], n) and out.dtype == dtype
    expected = ref.linear_w8a8_act(x, wq, w_scale, bias, activation)
    if activation in ("none", "relu"):  # exact operations on a bit-exact GEMM
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    elif dtype == torch.float32:
        # Two approximations of the activation: ours is within 5e-7 of the exact value
        # (the dense-grid test); torch's own fp32 GELU on an AVX-512 CPU was found 1.1e-6
        # away from ours (H200 machine's Xeon, 1025 x 768), so atol 2e-6 here.
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=2e-6)
    else:
        torch.testing.assert_close(out, expected, **TOL[dtype])


@pytest.mark.parametrize("activation", FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 64), (17, 100), (40, 1001)])
def test_linear_w8a16_act_matches_reference(backend, shape, dtype, activation):
    k, n = shape[-1], 72
    backend.skip_if_slow(max(shape[0], 16) * 128 * max(k, 64))
    x = torch.randn(shape).to(dtype)
    wq, w_scale = rand_weight(n, k)
    bias = torch.randn(n).to(dtype)
    out = backend("linear_w8a16_act", x, wq, w_scale, bias, activation)
    # The same GEMM as linear_w8a16 (its own tolerance, test_int8_gemm.py), then the
    # activation of that result before its rounding to x's dtype (x and bias are exact
    # in fp32: the same products and sums).
    z = backend("linear_w8a16", x.float(), wq, w_scale, bias.float())
    expected = apply_activation(z.float(), activation).to(dtype)
    torch.testing.assert_close(out, expected, **TOL[dtype])


def grid() -> torch.Tensor:
    dense = torch.linspace(-30.0, 30.0, 60_001)
    wide = torch.logspace(-30, 30, 601)
    specials = [0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 87.0, -87.0, 89.0, -89.0, 3e38, -3e38]
    return torch.cat([dense, wide, -wide, torch.tensor(specials)])


@pytest.mark.parametrize("activation", FUSED)
def test_activation_math_on_a_dense_grid(backend, activation):
    """linear_w8a16_act with K = 1 and unit weights passes x through unchanged, so the
    output is the activation of x itself: every lane of the vector code (16 columns),
    then the scalar tail (column 17), against float64."""
    x = grid()
    if backend.interpreted:  # CI time: every 100th point
        x = x[::100]
    out = backend(
        "linear_w8a16_act",
        x.reshape(-1, 1),
        torch.ones(17, 1, dtype=torch.int8),
        torch.ones(17),
        None,
        activation,
    )
    if backend.w8a16_rounds_x_to_bf16:  # the activation then sees x rounded to bf16
        x = x.bfloat16().float()
    exact = apply_activation(x.double(), activation)
    err = (out.double() - exact.unsqueeze(1)).abs()
    # |error| <= 4 ulp of the result, + 2e-7 |x| for the GELUs (the vector erfc
    # approximation; the scalar path's 0.5 x (1 + erf / tanh), torch's formula, cancels
    # for negative x as torch's does), + 1e-36 (below that fp32 arithmetic underflows:
    # torch's silu(-88.5) is -0.0 too).
    bound = 4.8e-7 * exact.abs() + 1e-36
    if activation in ("gelu", "gelu_tanh"):
        bound += 2e-7 * x.double().abs()
    worst = (err - bound.unsqueeze(1)).max()
    assert worst <= 0, f"{activation}: error exceeds the bound by {worst.item():.3g}"


@pytest.mark.parametrize("op", ["linear_w8a8_act", "linear_w8a16_act"])
@pytest.mark.parametrize("activation", FUSED)
def test_nonfinite_values_propagate(backend, op, activation):
    """A NaN row stays NaN. An Inf row: w8a8 makes it NaN when quantizing it (exact, as
    the reference). w8a16 is a float GEMM, whose +-Inf or NaN per output depends on the
    summation (MKL gives NaN throughout; the H200's Triton kernels gave NaN or +Inf
    depending on the tile configuration): every output is non-finite, except relu's 0
    where the sum was -Inf."""
    x = torch.randn(4, 40)
    x[1, 3], x[2, 0] = float("nan"), float("inf")
    wq, w_scale = rand_weight(20, 40)
    out = backend(op, x, wq, w_scale, None, activation)
    expected = getattr(ref, op)(x, wq, w_scale, None, activation)
    assert out[1].isnan().all()
    if op == "linear_w8a8_act":
        assert torch.equal(out.isnan(), expected.isnan())
    else:
        finite = out[2].isfinite()
        assert not finite.any() or (activation == "relu" and (out[2][finite] == 0).all())
        # the finite rows: the activation of the base op on this backend (which may round
        # x to bf16: AVX512-BF16)
        pre = backend("linear_w8a16", x, wq, w_scale, None)
        expected = apply_activation(pre, activation)
    torch.testing.assert_close(out[[0, 3]], expected[[0, 3]], **TOL[torch.float32])


@pytest.mark.parametrize("op", ["linear_w8a8_act", "linear_w8a16_act"])
def test_non_contiguous_and_empty(backend, op):
    x = torch.randn(100, 40).T  # [40, 100], a transposed view
    wq = torch.randint(-127, 128, (100, 48), dtype=torch.int8).T  # [48, 100]
    scale, bias = (torch.rand(96) * 0.01)[::2], torch.randn(96)[::2]
    contiguous = (x.contiguous(), wq.contiguous(), scale.contiguous(), bias.contiguous())
    torch.testing.assert_close(
        backend(op, x, wq, scale, bias, "gelu"), backend(op, *contiguous, "gelu"), rtol=0, atol=0
    )
    assert backend(op, torch.randn(0, 32), wq[:, :32], scale, None, "silu").shape == (0, 48)


def test_packed_weight_and_wide_k_match_reference(isa):
    """The packed CPU layout, and K past the int32-exact limit (the epilogue then runs
    in ATen, which must apply the activation too)."""
    x = torch.randn(3, 200)
    wq, w_scale = rand_weight(33, 200)
    expected = ref.linear_w8a8_act(x, wq, w_scale, None, "gelu")
    out = ops.linear_w8a8_act(x, ops.pack_weight(wq), w_scale, None, "gelu")
    torch.testing.assert_close(out, expected, **TOL[torch.float32])
    k = 131_072 + 8
    x, wq = torch.randn(2, k), torch.randint(-127, 128, (17, k), dtype=torch.int8)
    w_scale = torch.full((17,), 2.0 / (73.0 * k**0.5))
    torch.testing.assert_close(
        ops.linear_w8a8_act(x, wq, w_scale, None, "silu"),
        ref.linear_w8a8_act(x, wq, w_scale, None, "silu"),
        **TOL[torch.float32],
    )


@pytest.mark.parametrize("activation", FUSED)
@pytest.mark.parametrize("op", ["linear_w8a8_act", "linear_w8a16_act"])
def test_gradients_match_autograd_through_the_dequantized_weight(op, activation):
    """d/dx of act(linear(x)): the activation's derivative at the op's own pre-activation
    output, then the base GEMM's straight-through gradient."""
    x = torch.randn(6, 40, requires_grad=True)
    bias = torch.randn(24, requires_grad=True)
    wq, w_scale = rand_weight(24, 40)
    g = torch.randn(6, 24)
    getattr(ops, op)(x, wq, w_scale, bias, activation).backward(g)
    base = op.removesuffix("_act")
    z = getattr(ops, base)(x.detach(), wq, w_scale, bias.detach())
    x2, b2 = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    linear = torch.nn.functional.linear(x2, wq.float() * w_scale[:, None], b2)
    ste = linear + (z - linear).detach()  # the op's forward value, the float gradient
    apply_activation(ste, activation).backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bias.grad, b2.grad, rtol=1e-5, atol=1e-6)


def samples():
    x = torch.randn(5, 40)
    wq, ws, bias = torch.randint(-127, 128, (24, 40), dtype=torch.int8), torch.rand(24), None
    yield OPS.linear_w8a8_act, (x, wq, ws, torch.randn(24), "gelu")
    yield OPS.linear_w8a8_act, (torch.randn(2, 3, 40).bfloat16(), ops.pack_weight(wq), ws, bias,
                                "silu")  # fmt: skip
    yield OPS.linear_w8a16_act, (x, ops.pack_weight(wq), ws, bias, "gelu_tanh")
    yield OPS.linear_w8a16_act, (x.requires_grad_(), wq, ws, bias, "relu")


@pytest.mark.parametrize("op,args", list(samples()), ids=lambda v: getattr(v, "__name__", ""))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_compile_fullgraph_matches_eager():
    wq, ws = rand_weight(64, 40)
    packed = ops.pack_weight(wq)

    def f(x):
        h = ops.linear_w8a8_act(x, packed, ws, None, "gelu")
        return ops.linear_w8a16_act(h[..., :40], wq, ws, None, "silu")

    x = torch.randn(3, 7, 40)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x), rtol=0, atol=0)


@pytest.mark.parametrize("op", ["linear_w8a8_act", "linear_w8a16_act"])
def test_unknown_activation_is_a_clear_error(backend, op):
    wq, ws = rand_weight(8, 16)
    with pytest.raises(ValueError, match=rf"qkernels\.{op}: activation must be one of .*'tanh'"):
        backend(op, torch.randn(2, 16), wq, ws, None, "tanh")
