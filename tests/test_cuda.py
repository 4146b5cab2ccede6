"""The ops on a CUDA GPU (`pytest -m cuda`; skipped without one): the Triton kernels
with their real autotuned configurations, against qkernels.reference computed on CPU,
at the awkward shapes and at real projection sizes (split-K decode included),
plus opcheck, torch.compile and the error contract on CUDA."""

import pytest
import torch

import qkernels
from qkernels import ops
from qkernels import reference as ref

pytestmark = pytest.mark.cuda
OPS = torch.ops.qkernels
# (M, K, N): the interpreter tests' awkward shapes plus decode / prefill sizes
# that pick other M buckets (and so other autotuned configurations).
SHAPES = [
    (1, 16, 8),
    (17, 100, 40),
    (64, 272, 96),
    (1, 4096, 11008),
    (16, 11008, 4096),
    (1025, 768, 3072),
    (4096, 4096, 4096),
]


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def int8(*shape):
    return torch.randint(-127, 128, shape, dtype=torch.int8)


def cuda(*ts):
    return [t.cuda() if t is not None else None for t in ts]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int_mm_exact_and_int8_mm(m, k, n):
    a, b = int8(m, k), int8(n, k)
    sa, sb, bias = torch.rand(m) * 0.01, torch.rand(n) * 0.01, torch.randn(n)
    torch.testing.assert_close(ops.int_mm(*cuda(a, b)).cpu(), ref.int_mm(a, b), rtol=0, atol=0)
    for dtype in (torch.float32, torch.bfloat16):
        out = ops.int8_mm(*cuda(a, b, sa, sb, bias), out_dtype=dtype)
        # The GPU may fuse the epilogue's multiply-add (FMA): one rounding fewer.
        assert out.dtype == dtype
        assert rel(out, ref.int8_mm(a, b, sa, sb, bias, dtype)) < (
            1e-6 if dtype == torch.float32 else 4e-3
        )


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_quantize_exact_and_linear_w8a8(m, k, n):
    x, wq, ws = torch.randn(m, k), int8(n, k), torch.rand(n) * 0.01
    q, s = ops.quantize_rowwise(x.cuda())
    q_ref, s_ref = ref.quantize_rowwise(x)
    torch.testing.assert_close(q.cpu(), q_ref, rtol=0, atol=0)
    torch.testing.assert_close(s.cpu(), s_ref, rtol=0, atol=0)
    assert rel(ops.linear_w8a8(*cuda(x, wq, ws)), ref.linear_w8a8(x, wq, ws)) < 1e-6
    from qkernels.triton import int8_gemm

    for fn in (int8_gemm.linear_w8a8_prologue, int8_gemm.linear_w8a8_two_pass):
        assert rel(fn(*cuda(x, wq, ws)), ref.linear_w8a8(x, wq, ws)) < 1e-6


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)]
)
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_linear_w8a16(m, k, n, dtype, tol):
    x, wq, ws, bias = (
        torch.randn(m, k).to(dtype),
        int8(n, k),
        torch.rand(n) * 0.01,
        torch.randn(n).to(dtype),
    )
    out = ops.linear_w8a16(*cuda(x, wq, ws, bias))
    assert out.dtype == dtype and rel(out, ref.linear_w8a16(x, wq, ws, bias)) < tol


def test_split_k_is_stable_across_runs():
    """Decode sizes split K with float atomics: the sum's order may vary, but a
    race (a tile read before every split added into it) would show as large jumps."""
    x, wq, ws = cuda(
        torch.randn(4, 11008, dtype=torch.bfloat16), int8(4096, 11008), torch.rand(4096) * 0.01
    )
    runs = [ops.linear_w8a16(x, wq, ws).float() for _ in range(20)]
    assert max(rel(r, runs[0]) for r in runs) < 1e-3


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize(
    "m,k,n,r",
    [
        (1, 16, 8, 1),
        (17, 100, 40, 8),
        (2048, 4096, 4096, 64),
        (64, 512, 256, 256),
        (8, 64, 32, 300),
    ],
)
def test_lowrank_forward_and_backward(m, k, n, r, dtype, tol):
    x = torch.randn(m, k).to(dtype)
    a, b = (torch.randn(r, k) / k**0.5).to(dtype), (torch.randn(n, r) / r**0.5).to(dtype)
    g = torch.randn(m, n).to(dtype)
    xd, ad, bd = (t.double().requires_grad_() for t in (x, a, b))
    want = (xd @ ad.T) @ bd.T
    want_grads = torch.autograd.grad(want, (xd, ad, bd), g.double())
    xc, ac, bc = (t.cuda().requires_grad_() for t in (x, a, b))
    out = ops.lowrank_mm(xc, ac, bc)
    assert rel(out, want) < tol
    out.backward(g.cuda())
    for got, expected in zip((xc.grad, ac.grad, bc.grad), want_grads, strict=True):
        assert got.dtype == dtype and rel(got, expected) < tol


def test_opcheck_on_cuda():
    x, wq, ws, bias = cuda(
        torch.randn(17, 100), int8(40, 100), torch.rand(40) * 0.01, torch.randn(40)
    )
    a8, sa = cuda(int8(17, 100), torch.rand(17))
    la, lb, g = cuda(torch.randn(8, 100), torch.randn(40, 8), torch.randn(17, 40))
    for op, args in [
        (OPS.quantize_rowwise.default, (x,)),
        (OPS.int_mm.default, (a8, wq)),
        (OPS.int8_mm.default, (a8, wq, sa, ws, bias)),
        (OPS.linear_w8a8.default, (x, wq, ws, bias)),
        (OPS.linear_w8a16.default, (x, wq, ws, bias)),
        (OPS.lowrank_mm.default, (x, la, lb, bias)),
        (OPS.lowrank_mm_backward.default, (g, x, la, lb)),
    ]:
        torch.library.opcheck(op, args)


def test_compile_runs_the_triton_kernels_inside_the_graph(monkeypatch):
    from torch._inductor.utils import run_and_get_code

    from qkernels import _backend

    monkeypatch.setattr(_backend, "_chosen", {"linear_w8a8": "triton"})  # auto: C++ here
    lin = torch.nn.Linear(512, 256).cuda()
    model = torch.nn.Sequential(qkernels.Int8Linear.from_float(lin, "w8a8"), torch.nn.GELU())
    x = torch.randn(33, 512, device="cuda")
    eager = model(x)
    compiled, code = run_and_get_code(torch.compile(model, fullgraph=True), x)
    assert rel(compiled, eager) < 1e-6
    assert "_int8_gemm_kernel" in "\n".join(code)


def test_compile_keeps_the_cpp_op_whole(monkeypatch):
    """Resolving to the C++ kernels, the op is one opaque node: compiled equals eager."""
    from qkernels import _backend, cuda_kernels

    if "linear_w8a8" not in cuda_kernels.built_ops():
        pytest.skip("no CUDA C++ linear_w8a8 in this build")
    monkeypatch.setattr(_backend, "_chosen", {"linear_w8a8": "cuda"})
    lin = torch.nn.Linear(512, 256).cuda().bfloat16()
    model = torch.nn.Sequential(qkernels.Int8Linear.from_float(lin, "w8a8"), torch.nn.GELU())
    x = torch.randn(33, 512, device="cuda", dtype=torch.bfloat16)
    assert torch.equal(torch.compile(model, fullgraph=True)(x), model(x))


def test_mixed_devices_are_a_clear_error():
    x = torch.randn(4, 16, device="cuda")
    with pytest.raises(ValueError, match=r"qkernels\.linear_w8a8: wq must be on cuda"):
        ops.linear_w8a8(x, int8(8, 16), torch.rand(8, device="cuda"))
