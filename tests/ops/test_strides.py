"""Strides are honoured or normalised at every entry: each tensor argument of each op,
given as a transposed, step-sliced, stride-0 expanded or offset view holding the same
values, gives the same result as the contiguous call, on every backend."""

import pytest
import torch

from qkernels import ops


def _int8(*shape):
    return torch.randint(-127, 128, shape, dtype=torch.int8)


def samples():
    """(op, args, backends it runs on): small arguments for every op with tensor inputs."""
    x, wq, ws, b = torch.randn(5, 40), _int8(24, 40), torch.rand(24) + 0.1, torch.randn(24)
    a, a_scale = _int8(5, 40), torch.rand(5) + 0.1
    s, z = torch.rand(5) * 0.05 + 0.01, torch.randint(-4, 4, (5,), dtype=torch.int32)
    gs, gz = torch.rand(5, 5) * 0.05 + 0.01, torch.zeros(5, 5, dtype=torch.int32)
    g = torch.randn(5, 40)
    la, lb = torch.randn(8, 40), torch.randn(24, 8)
    w_ih, s_ih = ops.quantize_rowwise(torch.randn(64, 40))
    w_hh, s_hh = ops.quantize_rowwise(torch.randn(64, 16))
    h0, c0 = torch.randn(5, 16), torch.randn(5, 16)
    lx = torch.randn(3, 5, 40)
    yield "quantize_rowwise", (x,)
    yield "int_mm", (a, wq)
    yield "int8_mm", (a, wq, a_scale, ws, b)
    yield "linear_w8a8", (x, wq, ws, b)
    yield "linear_w8a16", (x, wq, ws, b)
    yield "linear_w8a8_act", (x, wq, ws, b, "gelu")
    yield "linear_w8a16_act", (x, wq, ws, b, "silu")
    yield "fake_quant", (x, s, z, 0, -8, 7)
    yield "fake_quant_backward", (g, x, s, z, 0, -8, 7)
    yield "fake_quant_group", (x, gs, gz, 8, -8, 7)
    yield "fake_quant_lsq", (x, s, z.float(), 0, -8, 7, 1.0)
    yield "fake_quant_lsq_backward", (g, x, s, z.float(), 0, -8, 7, 1.0)
    yield "lowrank_mm", (x, la, lb, b)
    yield "lowrank_mm_backward", (torch.randn(5, 24), x, la, lb)
    yield "lstm_w8a8", (lx, h0, c0, w_ih, s_ih, w_hh, s_hh, torch.randn(64), None, False)


def views(t: torch.Tensor):
    """Views holding t's values with other strides: (name, view)."""
    if t.dim() == 2:
        yield "transposed", t.T.contiguous().T
    big = torch.zeros((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype)
    big[..., ::2] = t
    yield "step-sliced", big[..., ::2]
    flat = torch.zeros(t.numel() + 3, dtype=t.dtype)
    flat[3:] = t.reshape(-1)
    yield "offset", flat[3:].view(t.shape)
    if t.dim() >= 1 and t.shape[0] > 1 and bool((t == t[:1]).all()):
        yield "expanded", t[:1].expand(t.shape)


def same_values_expanded(t: torch.Tensor) -> torch.Tensor:
    """t with every row equal to its first, so a stride-0 view can hold it."""
    return t[:1].expand(t.shape).contiguous()


CASES = [
    (op, args, i)
    for op, args in samples()
    for i, a in enumerate(args)
    if isinstance(a, torch.Tensor)
]


@pytest.mark.parametrize("op,args,i", CASES, ids=[f"{op}-arg{i}" for op, _, i in CASES])
def test_every_tensor_argument_in_every_layout(backend, op, args, i):
    # lowrank runs BLAS on CPU, whose summation order may follow the strides: float
    # tolerance there; every other op computes the same numbers in the same order.
    tol = 1e-5 if op.startswith("lowrank") else 0.0
    args = list(args)
    for variant in (args[i], same_values_expanded(args[i])):
        dense = [*args[:i], variant, *args[i + 1 :]]
        want = backend(op, *dense)
        want = want if isinstance(want, tuple) else (want,)
        for name, view in views(variant):
            got = backend(op, *[*args[:i], view, *args[i + 1 :]])
            got = got if isinstance(got, tuple) else (got,)
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=tol, atol=tol, msg=f"{op} arg {i} {name}")
