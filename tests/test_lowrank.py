"""lowrank_mm and LowRankLinear."""

import pytest
import torch
from torch import nn

import qkernels
from qkernels import ops
from qkernels import reference as ref
from qkernels.nn import LowRankLinear

OPS = torch.ops.qkernels


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize(
    "shape,rank,n", [((1, 16), 1, 8), ((17, 100), 8, 40), ((2, 3, 272), 64, 96)]
)
def test_matches_reference(shape, rank, n, dtype, tol):
    x = torch.randn(shape).to(dtype)
    a, b, bias = (
        torch.randn(rank, shape[-1]).to(dtype),
        torch.randn(n, rank).to(dtype),
        torch.randn(n).to(dtype),
    )
    torch.testing.assert_close(
        ops.lowrank_mm(x, a, b, bias), ref.lowrank_mm(x, a, b, bias), rtol=tol, atol=tol * 10
    )
    assert ops.lowrank_mm(x, a, b).shape == (*shape[:-1], n)


def test_gradcheck_float64_and_noncontiguous():
    x = torch.randn(20, 5, dtype=torch.float64).T.requires_grad_()  # [5, 20], transposed
    a = torch.randn(4, 20, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.lowrank_mm, (x, a, b, bias))
    assert torch.autograd.gradcheck(lambda x, a, b: ops.lowrank_mm(x, a, b), (x, a, b))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    args = [torch.randn(3, 16), torch.randn(4, 16), torch.randn(8, 4), torch.randn(8)]
    torch.library.opcheck(
        OPS.lowrank_mm.default, tuple(t.requires_grad_(requires_grad) for t in args)
    )


def test_backward_op_opcheck_and_errors():
    g, x, a, b = torch.randn(2, 3, 8), torch.randn(2, 3, 16), torch.randn(4, 16), torch.randn(8, 4)
    torch.library.opcheck(OPS.lowrank_mm_backward.default, (g, x, a, b))
    with pytest.raises(ValueError, match=r"qkernels\.lowrank_mm_backward: grad must be"):
        OPS.lowrank_mm_backward(torch.randn(3, 8), x, a, b)


def test_bad_input():
    with pytest.raises(ValueError, match=r"qkernels\.lowrank_mm: a must be \[rank, K\] with K"):
        ops.lowrank_mm(torch.randn(3, 16), torch.randn(4, 15), torch.randn(8, 4))
    with pytest.raises(ValueError, match=r"qkernels\.lowrank_mm: b must be \[N, rank\]"):
        ops.lowrank_mm(torch.randn(3, 16), torch.randn(4, 16), torch.randn(8, 5))


def test_from_linear_rank_and_energy():
    torch.manual_seed(0)
    # A weight of exact rank 6: rank 6 reproduces it, lower ranks lose.
    lin = nn.Linear(48, 32)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(32, 6) @ torch.randn(6, 48) / 10)
    x = torch.randn(10, 48)
    exact = lin(x).detach()
    full = LowRankLinear.from_linear(lin, rank=6)
    torch.testing.assert_close(full(x), exact, rtol=1e-4, atol=1e-5)
    errors = [
        ((LowRankLinear.from_linear(lin, rank=r)(x) - exact).norm()).item() for r in (1, 3, 5)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert LowRankLinear.from_linear(lin, energy=0.999999).rank == 6
    assert LowRankLinear.from_linear(lin, energy=0.5).rank < 6
    with pytest.raises(ValueError, match="exactly one of rank or energy"):
        LowRankLinear.from_linear(lin)


def test_swap_lowrank_trains_and_saves(tmp_path):
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    report = qkernels.swap(model, "lowrank", exclude=(), rank=8)
    assert [to for _, _, to in report.replaced] == ["LowRankLinear", "LowRankLinear"]
    x = torch.randn(16, 32)
    model(x).square().mean().backward()
    assert model[0].a.grad is not None and model[2].b.grad is not None
    qkernels.save(model, tmp_path)
    fresh = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    loaded = qkernels.load(tmp_path, model=fresh)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_lowrank_to_int8_convert_and_save(tmp_path):
    from qkernels.nn import Int8LowRankLinear

    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 8))
    qkernels.swap(model, "lowrank", exclude=(), rank=16)
    x = torch.randn(10, 64)
    with torch.no_grad():
        low = model(x)
        report = qkernels.convert(model, lowrank_to_int8=True)
        assert len(report.replaced) == 2 and isinstance(model[0], Int8LowRankLinear)
        int8 = model(x)
    assert ((int8 - low).norm() / low.norm()).item() < 3e-2
    qkernels.save(model, tmp_path)
    fresh = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 8))
    loaded = qkernels.load(tmp_path, model=fresh)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), int8, rtol=0, atol=0)
