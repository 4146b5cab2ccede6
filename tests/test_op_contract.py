"""opcheck, torch.compile and the error contract of the int8 GEMM ops."""

import pytest
import torch

from qkernels import ops

OPS = torch.ops.qkernels


def rand_int8(*shape):
    return torch.randint(-127, 128, shape, dtype=torch.int8)


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
