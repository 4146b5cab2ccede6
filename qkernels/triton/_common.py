"""Triton helpers shared by the kernel files."""

import triton
import triton.language as tl


@triton.jit
def round_half_even(t):
    # Adding 2**23 to |t| < 2**23 leaves no fraction bits, so the float add rounds
    # half to even (as torch.round); larger |t| are integers already. No libdevice
    # needed, so this also runs in the interpreter.
    a = tl.abs(t)
    r = (a + 8388608.0) - 8388608.0
    r = tl.where(t < 0, -r, r)
    return tl.where(a < 8388608.0, r, t)
