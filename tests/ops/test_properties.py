"""Property-based tests: every CPU-kernel op against qkernels.reference on shapes and
values hypothesis draws, on every CPU ISA the machine has. A few examples per op in
`make test`; HYPOTHESIS_PROFILE=slow draws many more."""

import contextlib
import os

import pytest
import torch
from backends import Backend, lora_adapter_bound
from hypothesis import example, given
from hypothesis import strategies as st

from qkernels import ops
from qkernels import reference as ref

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
DTYPES = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])
dims = st.integers(min_value=1, max_value=70)


@contextlib.contextmanager
def forced_isa(isa: str):
    old = os.environ.get("QKERNELS_CPU_ISA")
    os.environ["QKERNELS_CPU_ISA"] = isa
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("QKERNELS_CPU_ISA")
        else:
            os.environ["QKERNELS_CPU_ISA"] = old


def every_isa():
    from conftest import available_isas

    return available_isas()


def tensor(seed: int, shape, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def int8(seed: int, shape, low: int = -128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, 128, shape, generator=g, dtype=torch.int8)


@given(m=dims, k=dims, n=dims, seed=st.integers(0, 2**16))
def test_int_mm(m, k, n, seed):
    a, b = int8(seed, (m, k)), int8(seed + 1, (n, k))
    for isa in every_isa():
        with forced_isa(isa):
            torch.testing.assert_close(ops.int_mm(a, b), ref.int_mm(a, b), rtol=0, atol=0)


@given(m=dims, k=dims, n=dims, seed=st.integers(0, 2**16), dtype=DTYPES, bias=st.booleans())
def test_int8_mm_and_linear_w8a8(m, k, n, seed, dtype, bias):
    a, w = int8(seed, (m, k)), int8(seed + 1, (n, k), low=-127)
    sa, sw = tensor(seed, (m,)).abs() + 0.01, tensor(seed + 1, (n,)).abs() * 0.01
    b = tensor(seed + 2, (n,)) if bias else None
    x = tensor(seed + 3, (m, k), scale=3.0, dtype=dtype)
    for isa in every_isa():
        with forced_isa(isa):
            torch.testing.assert_close(
                ops.int8_mm(a, w, sa, sw, b, dtype),
                ref.int8_mm(a, w, sa, sw, b, dtype),
                rtol=0,
                atol=0,
            )
            b_x = None if b is None else b.to(dtype)
            torch.testing.assert_close(
                ops.linear_w8a8(x, w, sw, b_x), ref.linear_w8a8(x, w, sw, b_x), rtol=0, atol=0
            )


@given(rows=dims, k=dims, seed=st.integers(0, 2**16), dtype=DTYPES, bits=st.integers(2, 8))
def test_quantize_rowwise(rows, k, seed, dtype, bits):
    x = tensor(seed, (rows, k), scale=10.0, dtype=dtype)
    for isa in every_isa():
        with forced_isa(isa):
            for got, want in zip(
                ops.quantize_rowwise(x, bits), ref.quantize_rowwise(x, bits), strict=True
            ):
                torch.testing.assert_close(got, want, rtol=0, atol=0)


@given(m=dims, k=dims, n=dims, seed=st.integers(0, 2**16), dtype=DTYPES)
def test_linear_w8a16(m, k, n, seed, dtype):
    x, w = tensor(seed, (m, k), dtype=dtype), int8(seed + 1, (n, k), low=-127)
    sw = tensor(seed + 2, (n,)).abs() * 0.01 + 1e-4
    want = ref.linear_w8a16(x, w, sw).double()
    for isa in every_isa():
        with forced_isa(isa):
            got = ops.linear_w8a16(x, w, sw).double()
            # x rounds to bf16 on AVX512-BF16 (2^-8 relative each: bounded by the sum of
            # |x| |w s|, not by the result, which may cancel: m = 1, k = 63 gave 1.4e-2
            # relative); 16-bit outputs round once more.
            terms = x.double().abs() @ (w.double().abs() * sw.double()[:, None]).T
            assert ((got - want).abs() <= 2**-8 * terms + 2**-8 * want.abs() + 1e-5).all()


def torch_fake_quant(x, scale, zp, axis, qmin, qmax):
    if scale.numel() == 1:
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zp, axis, qmin, qmax)


@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    dtype=DTYPES,
    bits=st.sampled_from([(-128, 127), (0, 255), (-8, 7)]),
    per_channel=st.booleans(),
)
def test_fake_quant_and_its_gradient(shape, seed, dtype, bits, per_channel):
    qmin, qmax = bits
    x = tensor(seed, shape, dtype=dtype)
    axis = len(shape) - 1
    n = shape[axis] if per_channel else 1
    scale = tensor(seed + 1, (n,)).abs() * 0.05 + 0.005
    zp = int8(seed + 2, (n,)).to(torch.int32).clamp(qmin, qmax)
    grad = tensor(seed + 3, shape, dtype=dtype)
    x_ref = x.clone().requires_grad_()
    y_ref = torch_fake_quant(x_ref, scale, zp, axis, qmin, qmax)
    y_ref.backward(grad)
    for isa in every_isa():
        with forced_isa(isa):
            y = ops.fake_quant(x, scale, zp, axis, qmin, qmax)
            dx = torch.ops.qkernels.fake_quant_backward(grad, x, scale, zp, axis, qmin, qmax)
            torch.testing.assert_close(y, y_ref.detach(), rtol=0, atol=0)
            torch.testing.assert_close(dx, x_ref.grad, rtol=0, atol=0)


@given(m=dims, k=dims, n=dims, r=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_lowrank_mm(m, k, n, r, seed):
    x, a, b = tensor(seed, (m, k)), tensor(seed + 1, (r, k)), tensor(seed + 2, (n, r))
    torch.testing.assert_close(
        ops.lowrank_mm(x, a, b), ref.lowrank_mm(x, a, b), rtol=1e-4, atol=1e-4
    )


@given(
    m=dims,
    k=dims,
    n=dims,
    r=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    op=st.sampled_from(["lora_w8a8", "lora_w8a16"]),
    scaling=st.floats(0.0, 4.0),
)
# Four roundings to bf16 in one direction: 0.85% of the adapter, past a bound that took
# bf16's unit roundoff for 2^-9 (it is 2^-8).
@example(m=1, k=1, n=12, r=1, seed=0, op="lora_w8a8", scaling=4.0)
def test_lora(m, k, n, r, seed, op, scaling):
    """The adapter epilogue on every ISA: the base exact, the adapter to float rounding;
    with b = 0 exactly the base op."""
    x, w = tensor(seed, (m, k)), int8(seed + 1, (n, k), low=-127)
    ws, bias = tensor(seed + 2, (n,)).abs() * 0.01 + 1e-3, tensor(seed + 3, (n,))
    a, b = tensor(seed + 4, (r, k), 0.2), tensor(seed + 5, (n, r), 0.2)
    expected = getattr(ref, op)(x, w, ws, bias, a, b, scaling)
    base = getattr(ops, op.replace("lora", "linear"))
    for isa in every_isa():
        with forced_isa(isa):
            got = getattr(ops, op)(x, w, ws, bias, a, b, scaling)
            if Backend(f"cpu-{isa}").lora_adapter_in_bf16:
                # the adapter in bf16; lora_w8a16's base rounds x to bf16 (2^-8 relative)
                bound = lora_adapter_bound(x, a, b, scaling) + 1e-4
                if op == "lora_w8a16":
                    bound += 2**-8 * (x.abs() @ (w.float().abs() * ws[:, None]).T)
                assert ((got - expected).abs() <= bound).all()
            else:
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
            zero = getattr(ops, op)(x, w, ws, bias, a, torch.zeros_like(b), scaling)
            torch.testing.assert_close(zero, base(x, w, ws, bias), rtol=0, atol=0)
