"""The CUDA C++ kernels on a GPU (pytest -m cuda; `benchmarks/gpu_session.sh test` also
runs this file under compute-sanitizer memcheck): every tile of the CUTLASS GEMMs is
bit-exact against the reference (the epilogue is the reference's order, in fp32, no
FMA), the C++ path is the one that ran, and it agrees with Triton. The per-op tests in
tests/ops/ run every op on this backend too (the `cuda-cpp` backend)."""

import pytest
import torch

from qkernels import _backend, cuda_kernels
from qkernels import reference as ref

pytestmark = pytest.mark.cuda

SHAPES = [(1, 64, 128), (17, 256, 512), (64, 512, 256), (300, 128, 1024), (1025, 1024, 128)]


def _gemm_kernels_here() -> set[str]:
    if not torch.cuda.is_available():
        return set()
    arch = cuda_kernels.cubin_arch(torch.cuda.get_device_capability())
    return {k.split(":")[1] for k in cuda_kernels.gemm_kernels() if k.startswith(f"{arch}:")}


def _needs(out: str) -> None:
    if out not in _gemm_kernels_here():
        pytest.skip(f"no CUTLASS GEMM with {out} output for this GPU in this build")


def _problem(m, k, n):
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, device="cuda")
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda")
    a_scale = torch.rand(m, device="cuda") / 100 + 1e-4
    b_scale = torch.rand(n, device="cuda") / 100 + 1e-4
    bias = torch.randn(n, device="cuda")
    return a, b, a_scale, b_scale, bias


@pytest.mark.parametrize("out", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("tile", [0, 1, 2, 3])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_every_tile_is_bit_exact_against_the_reference(m, k, n, tile, out):
    _needs(out)
    from qkernels import _C

    dtype = getattr(torch, out)
    a, b, a_scale, b_scale, bias = _problem(m, k, n)
    got = _C.cuda_int8_gemm(a, b, a_scale, b_scale, bias, dtype, tile)
    want = ref.int8_mm(a.cpu(), b.cpu(), a_scale.cpu(), b_scale.cpu(), bias.cpu(), dtype)
    assert torch.equal(got.cpu(), want)
    no_bias = _C.cuda_int8_gemm(a, b, a_scale, b_scale, None, dtype, tile)
    want = ref.int8_mm(a.cpu(), b.cpu(), a_scale.cpu(), b_scale.cpu(), None, dtype)
    assert torch.equal(no_bias.cpu(), want + 0.0)  # a missing bias adds +0.0


@pytest.mark.parametrize("tile", [0, 1, 2, 3])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int32_gemm_is_exact(m, k, n, tile):
    _needs("int32")
    from qkernels import _C

    a, b, *_ = _problem(m, k, n)
    got = _C.cuda_int8_gemm(a, b, None, None, None, torch.int32, tile)
    assert torch.equal(got.cpu(), ref.int_mm(a.cpu(), b.cpu()))


def test_linear_w8a8_runs_the_cpp_kernels_and_agrees_with_triton(monkeypatch):
    _needs("bfloat16")
    from qkernels import _C
    from qkernels import triton as qk_triton

    calls = []
    real = _C.cuda_int8_gemm
    monkeypatch.setattr(_C, "cuda_int8_gemm", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(_backend, "_chosen", {"linear_w8a8": "cuda"})
    x = torch.randn(2, 9, 512, device="cuda", dtype=torch.bfloat16)
    wq = torch.randint(-127, 128, (256, 512), dtype=torch.int8, device="cuda")
    w_scale = torch.rand(256, device="cuda") / 100
    bias = torch.randn(256, device="cuda", dtype=torch.bfloat16)
    got = torch.ops.qkernels.linear_w8a8(x, wq, w_scale, bias)
    assert len(calls) == 1
    assert torch.equal(got, qk_triton.linear_w8a8(x, wq, w_scale, bias))
    want = ref.linear_w8a8(x.cpu(), wq.cpu(), w_scale.cpu(), bias.cpu())
    assert torch.equal(got.cpu(), want)


def test_shapes_the_cpp_gemm_does_not_take_run_on_triton(monkeypatch):
    from qkernels import _C

    monkeypatch.setattr(_backend, "_chosen", {"linear_w8a8": "cuda", "int8_mm": "cuda"})
    monkeypatch.setattr(_C, "cuda_int8_gemm", lambda *a: pytest.fail("C++ GEMM called"))
    x = torch.randn(5, 100, device="cuda")  # K = 100: not a multiple of 16
    wq = torch.randint(-127, 128, (24, 100), dtype=torch.int8, device="cuda")
    w_scale = torch.rand(24, device="cuda") / 100
    got = torch.ops.qkernels.linear_w8a8(x, wq, w_scale)
    assert torch.equal(got.cpu(), ref.linear_w8a8(x.cpu(), wq.cpu(), w_scale.cpu()))


def test_direct_call_with_a_bad_shape_is_a_clear_error():
    _needs("bfloat16")
    from qkernels import _C

    a = torch.zeros(4, 24, dtype=torch.int8, device="cuda")
    b = torch.zeros(32, 24, dtype=torch.int8, device="cuda")
    s = torch.ones(4, device="cuda")
    with pytest.raises(ValueError, match=r"qkernels.int8_gemm \(cuda\): K must be a positive"):
        _C.cuda_int8_gemm(a, b, s, torch.ones(32, device="cuda"), None, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 7), (3, 64), (17, 4096), (2, 3, 1000)])
def test_quantize_rowwise_kernel_is_bit_exact(shape, dtype):
    x = torch.randn(shape, device="cuda").to(dtype) * 3
    if shape[0] > 1:
        x.view(-1)[0] = float("nan")  # that row: scale NaN, q = 0
    q, s = cuda_kernels.quantize_rowwise(x)
    q_ref, s_ref = ref.quantize_rowwise(x.cpu())
    assert torch.equal(q.cpu(), q_ref)
    torch.testing.assert_close(s.cpu(), s_ref, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m", [1, 5, 16, 17, 300])
def test_linear_w8a16_runs_the_cpp_kernel(monkeypatch, m, dtype):
    from qkernels import _C

    calls = []
    real = _C.cuda_linear_w8a16
    monkeypatch.setattr(_C, "cuda_linear_w8a16", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(_backend, "_chosen", {"linear_w8a16": "cuda"})
    x = torch.randn(m, 4096, device="cuda").to(dtype)
    wq = torch.randint(-127, 128, (272, 4096), dtype=torch.int8, device="cuda")
    w_scale = torch.rand(272, device="cuda") / 100
    bias = torch.randn(272, device="cuda").to(dtype)
    got = torch.ops.qkernels.linear_w8a16(x, wq, w_scale, bias)
    assert len(calls) == 1
    want = ref.linear_w8a16(x.cpu(), wq.cpu(), w_scale.cpu(), bias.cpu())
    rel = ((got.cpu().float() - want.float()).norm() / want.float().norm()).item()
    assert rel < {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]


FQ_CASES = [  # (shape, axis or None for per-tensor, group_size or None)
    ((64, 128), None, None),
    ((64, 128), 0, None),
    ((8, 33, 128), -1, None),  # params along the last dim
    ((4, 16, 5, 7), 1, None),  # per channel with inner dims
    ((32, 256), None, 64),
]


@pytest.mark.parametrize("float_zp", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,axis,group", FQ_CASES)
def test_fake_quant_kernels_are_bit_exact_and_ran(monkeypatch, shape, axis, group, dtype, float_zp):
    from qkernels import _C

    calls = []
    for name in ("cuda_fake_quant_forward", "cuda_fake_quant_backward"):
        real = getattr(_C, name)
        monkeypatch.setattr(_C, name, lambda *a, real=real: calls.append(a) or real(*a))
    monkeypatch.setattr(_backend, "_chosen", dict.fromkeys(_backend.cuda_cpp_ops(), "cuda"))
    x = (torch.randn(shape, device="cuda") * 4).to(dtype)
    x.view(-1)[0] = float("inf")
    # group-wise: one pair per group of the last dim, [*rows, groups]
    n = (*shape[:-1], shape[-1] // group) if group else (1 if axis is None else shape[axis],)
    scale = torch.rand(n, device="cuda") / 10 + 0.01
    zp = torch.randn(n, device="cuda") * 3 if float_zp else torch.randint(-8, 8, n, device="cuda")
    grad = torch.randn(shape, device="cuda").to(dtype)
    ax = 0 if axis is None else axis
    if group:
        y = torch.ops.qkernels.fake_quant_group(x, scale, zp, group, -128, 127)
        dx = torch.ops.qkernels.fake_quant_group_backward(grad, x, scale, zp, group, -128, 127)
        want = ref.fake_quant_group(x.cpu(), scale.cpu(), zp.cpu(), group, -128, 127)
        mask = ref.fake_quant_group_mask(x.cpu(), scale.cpu(), zp.cpu(), group, -128, 127)
    else:
        y = torch.ops.qkernels.fake_quant(x, scale, zp, ax, -128, 127)
        dx = torch.ops.qkernels.fake_quant_backward(grad, x, scale, zp, ax, -128, 127)
        want = ref.fake_quant(x.cpu(), scale.cpu(), zp.cpu(), ax, -128, 127)
        from qkernels import triton as qk_triton  # the STE mask has no reference of its own

        mask = qk_triton.fake_quant_backward(torch.ones_like(x), x, scale, zp, ax, -128, 127)
        mask = mask.cpu() != 0
    assert len(calls) == 2
    assert torch.equal(y.cpu(), want)
    assert torch.equal(dx.cpu(), torch.where(mask, grad.cpu(), torch.zeros_like(grad.cpu())))


def _misaligned(shape, dtype):
    """A contiguous tensor whose data starts 1 element past a 16-byte boundary (the
    kernels' scalar path)."""
    n = 1
    for d in shape:
        n *= d
    return (torch.randn(n + 1, device="cuda") * 4).to(dtype)[1:].view(shape)


LSQ_CASES = [  # (shape, axis or None for per-tensor)
    ((64, 128), None),
    ((3, 40000), None),  # several per-tensor segments, the last one short
    ((96, 4100), 0),  # a segment longer than one block's chunk
    ((8, 33, 128), -1),  # params along the last dim
    ((700, 20), 1),  # along, more rows than one block covers, columns not a multiple of 32
    ((4, 16, 5, 7), 1),  # per channel with inner dims
]


@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,axis", LSQ_CASES)
def test_lsq_backward_matches_cpu_and_is_deterministic(monkeypatch, shape, axis, dtype, misaligned):
    """dx bit-exact against the CPU kernel; the float64-summed scale / zero-point
    gradients equal the CPU's up to the summation order, and bitwise run to run."""
    from qkernels import _C

    calls = []
    real = _C.cuda_fake_quant_lsq_backward
    monkeypatch.setattr(_C, "cuda_fake_quant_lsq_backward", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(_backend, "_chosen", dict.fromkeys(_backend.cuda_cpp_ops(), "cuda"))
    x = _misaligned(shape, dtype) if misaligned else (torch.randn(shape, device="cuda") * 4)
    x = x.to(dtype)
    x.view(-1)[1] = float("nan")
    n = 1 if axis is None else shape[axis]
    scale = torch.rand(n, device="cuda") / 10 + 0.01
    zp = torch.randn(n, device="cuda") * 3
    grad = torch.randn(shape, device="cuda").to(dtype)
    args = (0 if axis is None else axis, -128, 127, 0.5)
    got = torch.ops.qkernels.fake_quant_lsq_backward(grad, x, scale, zp, *args)
    again = torch.ops.qkernels.fake_quant_lsq_backward(grad, x, scale, zp, *args)
    want = torch.ops.qkernels.fake_quant_lsq_backward(
        grad.cpu(), x.cpu(), scale.cpu(), zp.cpu(), *args
    )
    assert len(calls) == 2
    assert torch.equal(got[0].cpu(), want[0])
    for g, a, w in zip(got[1:], again[1:], want[1:], strict=True):
        assert torch.equal(g, a)
        torch.testing.assert_close(g.cpu(), w, rtol=1e-6, atol=1e-6)
