"""LSTM family: fake kernels (also the argument checks the Triton kernel runs)."""

from __future__ import annotations

import torch

from qkernels import _library  # noqa: F401  (defines the ops first)
from qkernels._common import (
    FLOAT_DTYPES,
    K_STEP,
    MAX_EXACT_K,
    check,
    check_same_device,
    describe,
    round_up,
)

OP = "lstm_w8a8"


def _check_weight(name: str, w: torch.Tensor, hidden: int, k: int) -> None:
    if w.dtype == torch.int8:
        check(
            tuple(w.shape) == (4 * hidden, k),
            OP,
            lambda: (
                f"{name} must be int8 of shape [4 * hidden, {k}] = [{4 * hidden}, {k}], "
                f"got {describe(w)}"
            ),
        )
        return
    rows, cols = 4 * round_up(hidden, 16), round_up(k, K_STEP)
    check(
        w.dtype == torch.uint8 and tuple(w.shape) == (rows, cols),
        OP,
        lambda: (
            f"{name} must be int8 [{4 * hidden}, {k}] or from qkernels.ops.pack_lstm_weight "
            f"(uint8 [{rows}, {cols}]), got {describe(w)}"
        ),
    )


@torch.library.register_fake("qkernels::pack_lstm_weight")
def _pack_lstm_weight_fake(w):
    check(
        w.dtype == torch.int8 and w.dim() == 2 and w.shape[0] % 4 == 0,
        "pack_lstm_weight",
        lambda: f"w must be int8 of shape [4 * hidden, K], got {describe(w)}",
    )
    return w.new_empty(
        (4 * round_up(w.shape[0] // 4, 16), round_up(w.shape[1], K_STEP)), dtype=torch.uint8
    )


@torch.library.register_fake("qkernels::lstm_w8a8")
def lstm_w8a8_fake(
    x,
    h0,
    c0,
    w_ih,
    w_ih_scale,
    w_hh,
    w_hh_scale,
    b_ih,
    b_hh,
    reverse,
    w_hr=None,
    w_hr_scale=None,
    batch_sizes=None,
):
    check(
        x.dim() == 3 and x.dtype in FLOAT_DTYPES,
        OP,
        lambda: (
            f"x must be float32/bfloat16/float16 of shape [T, B, input_size], got {describe(x)}"
        ),
    )
    check(
        w_ih_scale.dim() == 1 and w_ih_scale.shape[0] % 4 == 0,
        OP,
        lambda: f"w_ih_scale must be float32 of shape [4 * hidden], got {describe(w_ih_scale)}",
    )
    hidden = w_ih_scale.shape[0] // 4
    check((w_hr is None) == (w_hr_scale is None), OP, "w_hr and w_hr_scale must be given together")
    out = hidden if w_hr_scale is None else w_hr_scale.numel()
    steps, batch = x.shape[0], x.shape[1]
    _check_weight("w_ih", w_ih, hidden, x.shape[2])
    _check_weight("w_hh", w_hh, hidden, out)
    check(
        out <= MAX_EXACT_K,
        OP,
        lambda: (
            f"the recurrent size (hidden or proj size) must be at most {MAX_EXACT_K} so that "
            f"int32 sums cannot overflow, got {out}"
        ),
    )
    for name, t, cols in (("h0", h0, out), ("c0", c0, hidden)):
        check(
            tuple(t.shape) == (batch, cols),
            OP,
            lambda name=name, t=t, cols=cols: (
                f"{name} must be float of shape [batch, {cols}] = [{batch}, {cols}], "
                f"got {describe(t)}"
            ),
        )
    check_same_device(
        OP,
        x,
        h0=h0,
        c0=c0,
        w_ih=w_ih,
        w_ih_scale=w_ih_scale,
        w_hh=w_hh,
        w_hh_scale=w_hh_scale,
        b_ih=b_ih,
        b_hh=b_hh,
        w_hr=w_hr,
        w_hr_scale=w_hr_scale,
    )
    return (
        x.new_empty((steps, batch, out)),
        x.new_empty((batch, out)),
        x.new_empty((batch, hidden)),
    )
