"""LoRA family (lora_w8a8, lora_w8a16, lora_backward) against qkernels.reference on
every backend; gradients against autograd; opcheck, torch.compile, errors."""

import pytest
import torch
import torch.nn.functional as F
from backends import lora_adapter_bound, needs_triton, triton_ops

from qkernels import ops
from qkernels import reference as ref

OPS = ("lora_w8a8", "lora_w8a16")
# The base is bit-exact with the reference; the adapter's float sums run in another
# order (BLAS / the epilogue's r-loop), so fp32 agrees to ~1e-6 relative (where the
# adapter runs in bf16, fp32 is held to lora_adapter_bound instead).
REL_ERR = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
# linear_w8a16's own tolerance vs the reference (bf16 x on AVX512-BF16 CPUs).
W8A16_REL_ERR = {torch.float32: 4e-3, torch.bfloat16: 1e-2, torch.float16: 4e-3}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def layer(n: int, k: int, r: int, with_bias: bool = True):
    wq = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    ws = torch.rand(n) * 0.01 + 0.001
    bias = torch.randn(n) if with_bias else None
    a, b = torch.randn(r, k) / k**0.5, torch.randn(n, r) * 0.1
    return wq, ws, bias, a, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "m,k,n,r",
    # M >= 128: the AVX-512 projection kernels (8 / 16-row tiles, 16-wide panels, tails of
    # both; odd K and r: the bf16 pairs' padding)
    [
        (1, 40, 24, 1),
        (17, 33, 40, 16),
        (64, 256, 48, 65),
        (5, 1, 1, 8),
        (1025, 96, 40, 256),
        (203, 333, 40, 17),
    ],  # fmt: skip
)
def test_matches_reference(backend, op, m, k, n, r, dtype):
    backend.skip_if_slow(max(m, 16) * max(n, 32) * (max(k, 64) + r))
    x = torch.randn(m, k).to(dtype)
    wq, ws, bias, a, b = layer(n, k, r)
    got = backend(op, x, wq, ws, bias, a, b, 0.75)
    expected = getattr(ref, op)(x, wq, ws, bias, a, b, 0.75)
    assert got.dtype == dtype and got.shape == expected.shape
    if backend.lora_adapter_in_bf16 and dtype == torch.float32:
        bound = lora_adapter_bound(x, a, b, 0.75) + 2**-21 * expected.abs()
        if op == "lora_w8a16":  # the base's x rounded to bf16 too
            bound += 2**-8 * (x.abs() @ (wq.float().abs() * ws[:, None]).T)
        assert ((got - expected).abs() <= bound).all()
    else:
        tol = (W8A16_REL_ERR if op == "lora_w8a16" else REL_ERR)[dtype]
        assert rel_err(got, expected) < tol


@pytest.mark.parametrize("op", OPS)
def test_float32_adapter_where_bf16_kernels_are_off(op, monkeypatch):
    """QKERNELS_CPU_BF16=0 keeps the AVX-512 adapter in float32 (the kernels a VNNI CPU
    without AVX512-BF16 runs: the 8-row projection, the per-group epilogue): the
    reference's fp32 tolerance, at M >= 128 (own projection) and below (BLAS)."""
    from conftest import available_isas

    from qkernels import _C

    if "avx512_vnni" not in available_isas():
        pytest.skip("CPU lacks avx512_vnni")
    monkeypatch.setenv("QKERNELS_CPU_ISA", "avx512_vnni")
    monkeypatch.setenv("QKERNELS_CPU_BF16", "0")
    assert _C.cpu_kernel("lora_w8a8") == "avx512_vnni"
    assert _C.cpu_kernel("linear_w8a16") != "avx512_bf16"
    for m, k, n, r in [(1025, 96, 40, 24), (203, 333, 40, 17), (17, 33, 40, 16)]:
        x = torch.randn(m, k)
        wq, ws, bias, a, b = layer(n, k, r)
        got = getattr(ops, op)(x, wq, ws, bias, a, b, 0.75)
        assert rel_err(got, getattr(ref, op)(x, wq, ws, bias, a, b, 0.75)) < REL_ERR[torch.float32]


@pytest.mark.parametrize("op", OPS)
def test_zero_adapter_is_exactly_the_base(backend, op):
    """b = 0 (PEFT's init): the output is the base op's, bit for bit."""
    x = torch.randn(3, 7, 40)
    wq, ws, bias, a, b = layer(24, 40, 16)
    got = backend(op, x, wq, ws, bias, a, torch.zeros_like(b), 2.0)
    base = backend(op.replace("lora", "linear"), x, wq, ws, bias)
    torch.testing.assert_close(got, base, rtol=0, atol=0)


@pytest.mark.parametrize("op", OPS)
def test_packed_and_non_contiguous_arguments(op):
    x = torch.randn(9, 80)[:, ::2]  # step-sliced
    wq, ws, bias, a, b = layer(24, 40, 8)
    expected = getattr(ops, op)(x.contiguous(), wq, ws, bias, a, b, 0.5)
    got = getattr(ops, op)(x, ops.pack_weight(wq), ws, bias, a.T.contiguous().T, b[:, :], 0.5)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    a_strided = torch.randn(16, 80)[::2, ::2]
    got = getattr(ops, op)(x, wq, ws, bias, a_strided, b, 0.5)
    expected = getattr(ops, op)(x.contiguous(), wq, ws, bias, a_strided.contiguous(), b, 0.5)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", OPS)
def test_gradients_match_autograd(backend, op, dtype):
    """dx is the straight-through gradient, grad @ dequant(W) + scaling (grad b) a, so it
    is checked against autograd through the dequantized weight; da, db and dbias against
    autograd through the reference (the adapter path is differentiable as written).
    Checked on the backend's lora_backward, and (where autograd dispatches to the
    backend: not the interpreted Triton functions) through the op's autograd."""
    m, k, n, r, scaling = 6, 40, 24, 8, 1.5
    wq, ws, bias, a, b = layer(n, k, r)
    x = torch.randn(2, m // 2, k).to(dtype)
    grad = torch.randn(2, m // 2, n).to(dtype)
    x2, b2, a2, bb2 = (t.clone().requires_grad_() for t in (x, bias, a, b))
    getattr(ref, op)(x2, wq, ws, b2, a2, bb2, scaling).backward(grad)
    x3 = x.clone().float().requires_grad_()
    w = wq.float() * ws[:, None]
    (F.linear(x3, w, bias) + scaling * (x3 @ a.T) @ b.T).backward(grad.float())
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    dx_tol = 1e-2 if backend.lora_dx_in_bf16 else tol  # grad * scale rounded to bf16

    dx, da, db = backend("lora_backward", grad, x, wq, ws, a, b, scaling)
    assert dx.dtype == dtype and rel_err(dx, x3.grad) < dx_tol
    assert rel_err(da, a2.grad) < tol and rel_err(db, bb2.grad) < tol
    if backend.name == "triton":
        return
    dev = backend.device
    xg, bg, ag, bbg = (t.to(dev).requires_grad_() for t in (x, bias, a, b))
    out = getattr(torch.ops.qkernels, op)(xg, wq.to(dev), ws.to(dev), bg, ag, bbg, scaling)
    out.backward(grad.to(dev))
    assert rel_err(xg.grad.cpu(), x3.grad) < dx_tol and xg.grad.dtype == dtype
    if backend.lora_adapter_in_bf16 and dtype == torch.float32:
        # the autograd keeps x rounded to bf16, as the forward's adapter read it: da and db
        # are the gradients of that forward (x as bf16), not of the float32 one
        xr = x.bfloat16().float()
        a4, b4 = (t.detach().clone().requires_grad_() for t in (a, b))
        (scaling * (xr @ a4.T) @ b4.T).backward(grad)
        assert rel_err(ag.grad.cpu(), a2.grad) > tol  # the rounding is visible at this tol
        a2, bb2 = a4, b4
    assert rel_err(ag.grad.cpu(), a2.grad) < tol
    assert rel_err(bbg.grad.cpu(), bb2.grad) < tol
    assert rel_err(bg.grad.cpu(), b2.grad) < tol


def test_frozen_base_scale_gradient_is_a_clear_error():
    wq, ws, bias, a, b = layer(24, 40, 4)
    ws.requires_grad_()
    out = ops.lora_w8a8(torch.randn(3, 40), wq, ws, bias, a.requires_grad_(), b, 1.0)
    with pytest.raises(ValueError, match=r"qkernels\.lora_w8a8: w_scale gets no gradient"):
        out.sum().backward()


def test_backward_keeps_one_bf16_copy_of_a_shared_input(monkeypatch):
    """Where the adapter runs in bf16 the autograd keeps x as bf16 (half the bytes): one
    copy for all the ops that read the same x (Q, K, V), a fresh one after an in-place
    write; with QKERNELS_CPU_BF16=0 it keeps x itself."""
    from qkernels.meta.lora import adapter_in_bf16

    x = torch.randn(6, 40)
    layers = [layer(24, 40, 4) for _ in range(3)]

    def saved_x(op="lora_w8a8"):
        outs = []
        for wq, ws, bias, a, b in layers:
            y = getattr(ops, op)(x, wq, ws, bias, a.requires_grad_(), b.requires_grad_(), 1.0)
            outs.append(y.grad_fn.saved_tensors[0])
        return outs

    if not adapter_in_bf16(x):
        pytest.skip("the CPU adapter runs in float32 here")
    q, k, v = saved_x()
    assert q.dtype == torch.bfloat16 and torch.equal(q, x.bfloat16())
    assert q.data_ptr() == k.data_ptr() == v.data_ptr()
    assert saved_x("lora_w8a16")[0].data_ptr() == q.data_ptr()
    x.mul_(2)
    fresh = saved_x()[0]
    assert fresh.data_ptr() != q.data_ptr() and torch.equal(fresh, x.bfloat16())
    monkeypatch.setenv("QKERNELS_CPU_BF16", "0")
    assert saved_x()[0] is x


def test_reduced_precision_x_is_converted_in_blocks(monkeypatch):
    """lora_backward on a bf16 x (the saved copy) with a float32 grad: dx float32, and the
    adapter's gradients those of float32 math on the same values, whether x is converted
    in one block or several (with a tail)."""
    import qkernels.meta.lora as lora

    wq, ws, _, a, b = layer(24, 40, 8)
    x, grad = torch.randn(2, 37, 40).bfloat16(), torch.randn(2, 37, 24)
    whole = lora.lora_backward_by_matmuls(grad, x, wq, ws, a, b, 0.5)
    expected = lora.lora_backward_by_matmuls(grad, x.float(), wq, ws, a, b, 0.5)
    monkeypatch.setattr(lora, "_FLOAT_BLOCK", 40 * 10)  # 10 rows a block: 8 blocks
    blocks = lora.lora_backward_by_matmuls(grad, x, wq, ws, a, b, 0.5)
    assert whole[0].dtype == blocks[0].dtype == torch.float32
    for got in (whole, blocks):
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["lora_w8a8", "lora_w8a16"])
def test_only_the_adapter_trains(op, monkeypatch):
    """With x, the base and the bias frozen, backward computes da and db only (no dx
    GEMM: lora_backward is not called), and they equal those of a backward that also
    computes dx."""
    wq, ws, bias, a, b = layer(24, 40, 4)
    x, g = torch.randn(3, 40), torch.randn(3, 24)
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    getattr(ops, op)(x2, wq, ws, bias, a2, b2, 0.5).backward(g)
    monkeypatch.setattr(torch.ops.qkernels.lora_backward, "default", None)  # any call fails
    getattr(ops, op)(x, wq, ws, bias, a1, b1, 0.5).backward(g)
    assert a1.grad.abs().sum() > 0 and b1.grad.abs().sum() > 0
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-6, atol=1e-6)


def samples():
    wq, ws, bias, a, b = layer(24, 40, 8)
    x = torch.randn(5, 40, requires_grad=True)
    ag, bg = a.clone().requires_grad_(), b.clone().requires_grad_()
    for op in (torch.ops.qkernels.lora_w8a8, torch.ops.qkernels.lora_w8a16):
        yield op, (x, wq, ws, bias, ag, bg, 0.5)
        yield op, (x.detach().bfloat16(), ops.pack_weight(wq), ws, None, a, b, 2.0)
    grad = torch.randn(5, 24)
    yield torch.ops.qkernels.lora_backward, (grad, x.detach(), wq, ws, a, b, 0.5)
    yield torch.ops.qkernels.lora_backward, (grad, x.detach().bfloat16(), wq, ws, a, b, 0.5)


@pytest.mark.parametrize("op,args", list(samples()), ids=lambda v: getattr(v, "__name__", ""))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


def test_compile_fullgraph_matches_eager():
    wq, ws, bias, a, b = layer(24, 40, 8)
    packed = ops.pack_weight(wq)

    def f(x):
        return ops.lora_w8a8(torch.relu(x), packed, ws, bias, a, b, 2.0) * 2 + 1

    x = torch.randn(3, 7, 40)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x), rtol=0, atol=0)


def test_compiled_training_step_matches_eager():
    """Under torch.compile the autograd's saved input (a bf16 copy shared by the two ops
    reading x, where the adapter runs in bf16) is traced like any tensor: the adapters'
    and x's gradients equal eager's."""
    layers = [layer(24, 40, 8) for _ in range(2)]

    def loss(x, adapters):
        out = sum(
            ops.lora_w8a8(x, wq, ws, bias, a, b, 2.0)
            for (wq, ws, bias, _, _), (a, b) in zip(layers, adapters, strict=True)
        )
        return out.square().sum()

    grads = []
    for fn in (loss, torch.compile(loss, fullgraph=True)):
        torch.manual_seed(0)
        x = torch.randn(3, 7, 40).requires_grad_()
        adapters = [(a.clone().requires_grad_(), b.clone().requires_grad_()) for *_, a, b in layers]
        fn(x, adapters).backward()
        grads.append([x.grad, *(t.grad for pair in adapters for t in pair)])
    for eager, compiled in zip(*grads, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def bad_calls():
    wq, ws, bias, a, b = layer(24, 40, 8)
    x = torch.randn(3, 40)
    return [
        (
            (x, wq, ws, bias, a[:, :39], b),
            r"a must be \[r, K\] with r >= 1 and K == x.shape\[-1\] \(=40\)",
        ),
        ((x, wq, ws, bias, a[:0], b[:, :0]), r"a must be \[r, K\] with r >= 1"),
        ((x, wq, ws, bias, a, b[:, :7]), r"b must be \[N, r\] = \[24, 8\]"),
        ((x, wq, ws, bias, a, b.T), r"b must be \[N, r\] = \[24, 8\]"),
        ((x, wq, ws, bias, a.int(), b), r"a must be float32, bfloat16 or float16, got torch.int32"),
        ((x, wq, ws, bias, a, b.double()), r"b must be float32, bfloat16 or float16"),
        ((x, wq[:, :39], ws, bias, a, b), r"wq must be int8 of shape \[N, K\] = \[24, 40\]"),
        ((x.int(), wq, ws, bias, a, b), r"x must be float32, bfloat16 or float16"),
        ((x, wq, ws, bias[:3], a, b), r"bias must be a float tensor of shape \[N\] \(=24\)"),
    ]


@pytest.mark.parametrize("op", OPS)
def test_bad_input_raises_the_same_clear_error_everywhere(backend, op):
    for args, match in bad_calls():
        with pytest.raises(ValueError, match=rf"qkernels\.{op}: {match}"):
            backend(op, *args, 1.0)


@pytest.mark.parametrize("op", OPS)
def test_adapter_on_another_device_is_a_clear_error(op):
    wq, ws, bias, a, b = layer(24, 40, 8)
    with pytest.raises(ValueError, match=rf"qkernels\.{op}: a must be on"):
        getattr(ops, op)(torch.randn(3, 40), wq, ws, bias, a.to("meta"), b, 1.0)


@needs_triton
def test_triton_exports_the_family():
    for name in (*OPS, "lora_backward"):
        assert callable(getattr(triton_ops, name))


@needs_triton
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("m", [1, 16, 17])
def test_triton_lora_w8a16_adapter_in_the_split_k_epilogue(m, with_bias):
    """M <= 16 splits K (2 splits under the interpreter): the program that stores the
    finished sum adds the bias, then the adapter; M = 17 is the unsplit epilogue."""
    from backends import TRITON_DEVICE

    x = torch.randn(m, 272)
    wq, ws, bias, a, b = layer(40, 272, 8, with_bias)
    args = [x, wq, ws, bias, a, b]
    got = triton_ops.lora_w8a16(*[t if t is None else t.to(TRITON_DEVICE) for t in args], 0.5)
    expected = ref.lora_w8a16(*args, 0.5)
    assert rel_err(got.cpu(), expected) < 1e-5
