"""Fake-quant family, in plain PyTorch (torch's own fake-quant ops written out)."""

from __future__ import annotations

import torch


def _channel_view(t: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * x.dim()
    if t.numel() > 1:
        shape[axis] = -1
    return t.reshape(shape)


def _levels(x: torch.Tensor, s: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    """Unclamped integer levels; s and zp broadcast against x."""
    xs = x.float() * (1.0 / s.float())
    return torch.round(zp.float() + xs) if zp.is_floating_point() else torch.round(xs) + zp.float()


def _pass_nonfinite(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """NaN and +-Inf come out as they went in (DESIGN.md, "Non-finite and tiny
    values"); torch's own fake-quant ops turn NaN into qmin * scale."""
    return torch.where(torch.isfinite(x), y, x)


def _fake_quant(x, s, zp, qmin, qmax) -> torch.Tensor:
    r = _levels(x, s, zp).clamp(qmin, qmax)
    if zp.is_floating_point():  # torch computes (r - zp) * s in float64 then
        return _pass_nonfinite(x, ((r.double() - zp.double()) * s.double()).to(x.dtype))
    return _pass_nonfinite(x, ((r - zp.float()) * s.float()).to(x.dtype))


def fake_quant(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    axis: int,
    qmin: int,
    qmax: int,
) -> torch.Tensor:
    """torch.fake_quantize_per_{tensor,channel}_affine written out: 1/scale once,
    round half to even; an integer zero point is added after rounding, a float
    one before (as torch's per-channel op does)."""
    return _fake_quant(
        x, _channel_view(scale, x, axis), _channel_view(zero_point, x, axis), qmin, qmax
    )


def fake_quant_group(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    group_size: int,
    qmin: int,
    qmax: int,
) -> torch.Tensor:
    """fake_quant with one (scale, zero_point) per group of `group_size` along the last dim."""
    groups = x.reshape(*x.shape[:-1], -1, group_size)
    out = _fake_quant(groups, scale.unsqueeze(-1), zero_point.unsqueeze(-1), qmin, qmax)
    return out.reshape(x.shape)


def fake_quant_group_mask(x, scale, zero_point, group_size, qmin, qmax) -> torch.Tensor:
    """Where the straight-through gradient passes: the unclamped level is in range."""
    groups = x.reshape(*x.shape[:-1], -1, group_size)
    r = _levels(groups, scale.unsqueeze(-1), zero_point.unsqueeze(-1))
    return ((r >= qmin) & (r <= qmax)).reshape(x.shape)


def fake_quant_lsq(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    axis: int,
    qmin: int,
    qmax: int,
    grad_factor: float = 1.0,
) -> torch.Tensor:
    """PyTorch's own learnable fake-quant ops (float32), the ground truth for LSQ."""
    if scale.numel() == 1:
        y = torch._fake_quantize_learnable_per_tensor_affine(
            x, scale.reshape(1), zero_point.reshape(1), qmin, qmax, grad_factor
        )
    else:
        y = torch._fake_quantize_learnable_per_channel_affine(
            x, scale, zero_point, axis % x.dim(), qmin, qmax, grad_factor
        )
    return _pass_nonfinite(x.detach(), y)
