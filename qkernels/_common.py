"""Leaf module: constants and the one error style every layer shares. Imports only torch."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

GROUP_COLS = 16  # CPU packed layout: columns in groups of 16 ...
K_STEP = 4  # ... and K in steps of 4 (see DESIGN.md, "CPU packed weights")
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# The activations the *_act GEMMs apply in their epilogue; the index is the kernels' code
# (csrc/cpu/activation.h, qkernels/triton/_common.py's `activate`).
ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh", "silu")


def apply_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """One of ACTIVATIONS by name, as torch computes it (the *_act ops' reference)."""
    if name == "none":
        return x
    if name == "relu":
        return torch.relu(x)
    if name in ("gelu", "gelu_tanh"):
        return torch.nn.functional.gelu(x, approximate="tanh" if name == "gelu_tanh" else "none")
    if name == "silu":
        return torch.nn.functional.silu(x)
    raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")


# The largest K (a multiple of K_STEP) at which no int8 dot product can overflow int32:
# 128 * 128 * K <= 2**31 - 1. Longer K are summed in blocks of it (DESIGN.md, "int32
# accumulation"); csrc/cpu/int8_gemm_driver.h has the same constant.
MAX_EXACT_K = (2**31 - 1) // (128 * 128) // K_STEP * K_STEP


def round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def describe(t: torch.Tensor) -> str:
    return f"{t.dtype} {list(t.shape)} on {t.device}"


def device_capability(device: torch.device) -> tuple[int, int]:
    """A CUDA device's compute capability (its current device for a bare "cuda")."""
    return _capability(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _capability(index: int) -> tuple[int, int]:
    # Asked once per device: torch's query costs microseconds, and every CUDA op call
    # routes on it, some several times (the H200 host: 79-370 us of Python per op call).
    return torch.cuda.get_device_capability(index)


def check(cond: bool, op: str, msg: str | Callable[[], str]) -> None:
    """Raise the one error style of qkernels: op, argument, expected, got. A message that
    describes tensors comes as a lambda: built on failure only (every CUDA op call runs
    these checks on the host; the eager f-strings cost ~20 us a call)."""
    if not cond:
        raise ValueError(f"qkernels.{op}: {msg() if callable(msg) else msg}")


def exact_int32(exact: torch.Tensor, op: str, k: int) -> torch.Tensor:
    """Exact integer sums (int64 or float64) as int_mm's int32 output, or the error
    every backend raises where one does not fit."""
    if exact.numel():
        lo, hi = int(exact.min()), int(exact.max())
        check(
            lo >= -(2**31) and hi < 2**31,
            op,
            lambda: (
                f"the exact result does not fit the int32 output (it reaches "
                f"{lo if lo < -(2**31) else hi} at K = {k}); int8_mm sums the same products "
                "exactly into a float output"
            ),
        )
    return exact.to(torch.int32)


def check_same_device(op: str, ref: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None:
            check(
                t.device == ref.device,
                op,
                lambda name=name, t=t: (
                    f"{name} must be on {ref.device} like the other arguments, got {describe(t)}"
                ),
            )


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """x [..., K] as a dense [M, K] (not reshape(-1, K): ambiguous when K == 0)."""
    return x.contiguous().reshape(math.prod(x.shape[:-1]), x.shape[-1])
