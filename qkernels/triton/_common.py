"""Triton helpers shared by the kernel files."""

from __future__ import annotations

import functools
from collections.abc import Callable

import triton
import triton.language as tl
from torch.library import wrap_triton


@triton.jit
def round_half_even(t):
    # Adding 2**23 to |t| < 2**23 leaves no fraction bits, so the float add rounds
    # half to even (as torch.round); larger |t| are integers already. No libdevice
    # needed, so this also runs in the interpreter.
    a = tl.abs(t)
    r = (a + 8388608.0) - 8388608.0
    r = tl.where(t < 0, -r, r)
    return tl.where(a < 8388608.0, r, t)


@functools.cache
def autotuned(
    kernel,
    configs_fn: Callable,
    *configs_args,
    key: tuple[str, ...] = ("n", "k"),
    reset_to_zero: tuple[str, ...] = (),
):
    """`kernel` autotuned over `configs_fn(*configs_args)`: one Autotuner per
    (kernel, arch, M bucket, ...), made once, so its timing cache lives as long as
    the process and torch.compile sees the same kernel object on every call."""
    return triton.autotune(
        configs=configs_fn(*configs_args), key=list(key), reset_to_zero=list(reset_to_zero) or None
    )(kernel)


def launch(kernel, grid, *args, **kwargs) -> None:
    """Launch through `torch.library.wrap_triton`, so that make_fx / torch.compile
    record the kernel in the graph instead of running it (eager: a plain launch)."""
    wrap_triton(kernel)[grid](*args, **kwargs)
