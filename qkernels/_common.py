"""Leaf module: constants and the one error style every layer shares. Imports only torch."""

from __future__ import annotations

import torch

GROUP_COLS = 16  # CPU packed layout: columns in groups of 16 ...
K_STEP = 4  # ... and K in steps of 4 (see DESIGN.md, "CPU packed weights")
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def describe(t: torch.Tensor) -> str:
    return f"{t.dtype} {list(t.shape)} on {t.device}"


def check(cond: bool, op: str, msg: str) -> None:
    """Raise the one error style of qkernels: op, argument, expected, got."""
    if not cond:
        raise ValueError(f"qkernels.{op}: {msg}")


def check_same_device(op: str, ref: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None:
            check(
                t.device == ref.device,
                op,
                f"{name} must be on {ref.device} like the other arguments, got {describe(t)}",
            )
