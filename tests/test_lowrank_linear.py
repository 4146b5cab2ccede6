"""LowRankLinear and Int8LowRankLinear: from_linear, swap, train, convert, save."""

import pytest
import torch
from torch import nn

import qkernels
from qkernels.nn import LowRankLinear


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
