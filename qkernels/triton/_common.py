"""Triton helpers shared by the kernel files."""

from __future__ import annotations

import os
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


if os.environ.get("TRITON_INTERPRET") == "1":

    @triton.jit
    def mul_rn(a, b):
        """a * b in fp32, rounded on its own (numpy never fuses it with an add)."""
        return a * b

else:

    @triton.jit
    def mul_rn(a, b):
        """a * b in fp32, rounded on its own. Triton compiles with FP fusion on, so
        `a * b + c` becomes one FMA (one rounding) where the reference and the C++
        kernels round twice; a PTX multiply with an explicit rounding mode is never
        fused, by LLVM or by ptxas."""
        a, b = tl.broadcast(a.to(tl.float32), b.to(tl.float32))
        return tl.inline_asm_elementwise(
            "mul.rn.f32 $0, $1, $2;", "=f,f,f", [a, b], dtype=tl.float32, is_pure=True, pack=1
        )


@triton.jit
def finite(x):
    """|x| <= FLT_MAX: false for NaN and +-Inf alike."""
    return tl.abs(x) <= 3.4028234663852886e38


@triton.jit
def rne(y, like_ptr):
    """fp32 y in like_ptr's element type, rounded half to even like torch. bf16 is
    rounded by hand: the interpreter's fp32 -> bf16 cast truncates (GPUs round
    already; by hand it is a few integer ops, and inf / NaN stay inf / NaN)."""
    if like_ptr.dtype.element_ty == tl.bfloat16:
        bits = y.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        # A NaN with a full mantissa would carry into the sign: canonical NaN instead.
        bits = tl.where(y != y, 0x7FC00000, bits)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return y.to(like_ptr.dtype.element_ty)


@triton.jit
def exp_accurate(z):
    """e^z in fp32 within ~2 ulp over the whole range. Trap: on a GPU tl.exp is
    ex2.approx(z * log2(e)), and rounding that product costs up to |z| 2^-24 relative
    (the H200 run found SiLU ~17 ulp off near x = -12). Here z = n ln2 + r first, with ln2
    in two parts (n ln2_hi is exact), so ex2.approx only sees |r log2(e)| <= 1/2, and
    2^n is built from its exponent bits."""
    n = tl.floor(z * 1.4426950408889634 + 0.5)
    n = tl.where(n == n, n, 0.0)  # NaN: r below is NaN anyway; no NaN -> int cast
    n = tl.minimum(tl.maximum(n, -126.0), 127.0)  # beyond: r grows, the product saturates
    r = (z - n * 0.693145751953125) - n * 1.4286068202862268e-06
    two_n = ((n.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)
    return tl.exp2(r * 1.4426950408889634) * two_n


@triton.jit
def activate(x, ACT: tl.constexpr):
    """The epilogue activation with code ACT (an index of qkernels._common.ACTIVATIONS:
    none, relu, gelu, gelu_tanh, silu), in fp32. tanh-GELU and SiLU as x * sigmoid(.),
    as the CPU kernels (no cancellation for negative x); IEEE division (div_rn: a plain
    `/` is div.full.f32 on a GPU, 2 ulp)."""
    if ACT == 1:
        x = tl.where(x < 0.0, 0.0, x)  # NaN stays NaN
    elif ACT == 2:
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACT == 3:
        z = -1.5957691216057308 * (x + 0.044715 * x * x * x)
        x = tl.math.div_rn(x, 1.0 + exp_accurate(z))
    elif ACT == 4:
        x = tl.math.div_rn(x, 1.0 + exp_accurate(-x))
    return x


@triton.jit
def store_output(
    out, bias_ptr, out_ptr, offs_m, offs_n, m, n, HAS_BIAS: tl.constexpr, ACT: tl.constexpr = 0
):
    """The float GEMM epilogue: out (+ bias over columns, then the activation ACT) into
    the row-major [m, n] out_ptr at (offs_m, offs_n), rounded to out_ptr's dtype."""
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=offs_n < n, other=0.0).to(tl.float32)[None, :]
    out = activate(out, ACT)
    tl.store(
        out_ptr + offs_m[:, None] * n + offs_n[None, :],
        rne(out, out_ptr),
        mask=(offs_m[:, None] < m) & (offs_n[None, :] < n),
    )


@triton.jit
def grouped_tile(m, n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(row block, column block) of this program on a 1-D grid, visiting GROUP_M
    row blocks per column block before moving on, so that the programs running
    together share B's column blocks (and A's rows) in L2 instead of each
    streaming its own."""
    pid = tl.program_id(0)
    blocks_n = tl.cdiv(n, BLOCK_N)
    per_group = GROUP_M * blocks_n
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = tl.minimum(tl.cdiv(m, BLOCK_M) - first_m, GROUP_M)
    return first_m + (pid % per_group) % rows_in_group, (pid % per_group) // rows_in_group


# (kernel name, config-function arguments) -> its Autotuner, made once per process,
# so timings are cached for the process and torch.compile sees one kernel object.
TUNERS: dict[tuple, triton.runtime.Autotuner] = {}


def autotuned(
    kernel,
    configs_fn: Callable,
    *configs_args,
    key: tuple[str, ...] = ("n", "k"),
    reset_to_zero: tuple[str, ...] = (),
):
    """`kernel` autotuned over `configs_fn(*configs_args)` (arch, M bucket, ...)."""
    name = (kernel.__name__, *configs_args)
    if name not in TUNERS:
        TUNERS[name] = triton.autotune(
            configs=configs_fn(*configs_args),
            key=list(key),
            reset_to_zero=list(reset_to_zero) or None,
        )(kernel)
    return TUNERS[name]


def chosen_configs() -> dict[str, dict[str, str]]:
    """What autotuning picked so far: {kernel/arch/bucket: {tuning key: config}}."""
    chosen = {}
    for name, tuner in TUNERS.items():
        picks = {str(key): str(cfg) for key, cfg in tuner.cache.items()}
        if len(tuner.configs) == 1:  # nothing to time: the one configuration runs
            picks = {"any": str(tuner.configs[0])}
        chosen["/".join(map(str, name))] = picks
    return chosen


def launch(kernel, grid, *args, **kwargs) -> None:
    """Launch through `torch.library.wrap_triton`, so that make_fx / torch.compile
    record the kernel in the graph instead of running it (eager: a plain launch)."""
    wrap_triton(kernel)[grid](*args, **kwargs)
