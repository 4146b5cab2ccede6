"""The one place where qkernels ops are defined: schemas, fake kernels, loading _C.

Backends register implementations elsewhere (csrc/ops.cpp for the C++ CPU
kernels); this module only says what each op is and what it returns, so that
torch.compile, torch.export and opcheck can reason about it without running it.
"""

from __future__ import annotations

import logging

import torch
from torch.library import Library

log = logging.getLogger("qkernels")

_lib = Library("qkernels", "DEF")

SCHEMAS: dict[str, str] = {
    "pack_weight": "pack_weight(Tensor wq) -> Tensor",
    "unpack_weight": "unpack_weight(Tensor packed, int n, int k) -> Tensor",
    "quantize_rowwise": "quantize_rowwise(Tensor x, int bits=8) -> (Tensor, Tensor)",
    "int_mm": "int_mm(Tensor a, Tensor b) -> Tensor",
    "int8_mm": (
        "int8_mm(Tensor a, Tensor b, Tensor a_scale, Tensor b_scale, Tensor? bias=None, "
        "ScalarType? out_dtype=None) -> Tensor"
    ),
    "linear_w8a8": "linear_w8a8(Tensor x, Tensor wq, Tensor w_scale, Tensor? bias=None) -> Tensor",
    "linear_w8a16": (
        "linear_w8a16(Tensor x, Tensor wq, Tensor w_scale, Tensor? bias=None) -> Tensor"
    ),
    "pack_lstm_weight": "pack_lstm_weight(Tensor w) -> Tensor",
    "lowrank_mm": "lowrank_mm(Tensor x, Tensor a, Tensor b, Tensor? bias=None) -> Tensor",
    "lowrank_mm_backward": (
        "lowrank_mm_backward(Tensor grad, Tensor x, Tensor a, Tensor b) -> (Tensor, Tensor, Tensor)"
    ),
    "lstm_w8a8": (
        "lstm_w8a8(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_ih_scale, Tensor w_hh, "
        "Tensor w_hh_scale, Tensor? b_ih, Tensor? b_hh, bool reverse, Tensor? w_hr=None, "
        "Tensor? w_hr_scale=None, Tensor? batch_sizes=None) -> (Tensor, Tensor, Tensor)"
    ),
    "fake_quant": (
        "fake_quant(Tensor x, Tensor scale, Tensor zero_point, int axis, int qmin, int qmax) "
        "-> Tensor"
    ),
    "fake_quant_backward": (
        "fake_quant_backward(Tensor grad, Tensor x, Tensor scale, Tensor zero_point, int axis, "
        "int qmin, int qmax) -> Tensor"
    ),
    "fake_quant_group": (
        "fake_quant_group(Tensor x, Tensor scale, Tensor zero_point, int group_size, int qmin, "
        "int qmax) -> Tensor"
    ),
    "fake_quant_group_backward": (
        "fake_quant_group_backward(Tensor grad, Tensor x, Tensor scale, Tensor zero_point, "
        "int group_size, int qmin, int qmax) -> Tensor"
    ),
    "fake_quant_lsq": (
        "fake_quant_lsq(Tensor x, Tensor scale, Tensor zero_point, int axis, int qmin, "
        "int qmax, float grad_factor) -> Tensor"
    ),
    "fake_quant_lsq_backward": (
        "fake_quant_lsq_backward(Tensor grad, Tensor x, Tensor scale, Tensor zero_point, "
        "int axis, int qmin, int qmax, float grad_factor) -> (Tensor, Tensor, Tensor)"
    ),
}
for _schema in SCHEMAS.values():
    _lib.define(_schema)

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


def _check_same_device(op: str, ref: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None:
            check(
                t.device == ref.device,
                op,
                f"{name} must be on {ref.device} like the other arguments, got {describe(t)}",
            )


def _check_scale(op: str, name: str, s: torch.Tensor, n: int, expect: str) -> None:
    shape_ok = (s.dim() == 1 and s.shape[0] == n) or (
        s.dim() == 2 and s.numel() == n and 1 in s.shape
    )
    check(
        s.dtype == torch.float32 and shape_ok,
        op,
        f"{name} must be float32 of shape {expect} (={n}), got {describe(s)}",
    )


def _check_bias(op: str, bias: torch.Tensor | None, n: int) -> None:
    if bias is not None:
        check(
            bias.dtype.is_floating_point and bias.dim() == 1 and bias.shape[0] == n,
            op,
            f"bias must be a float tensor of shape [N] (={n}), got {describe(bias)}",
        )


def _check_float_x(op: str, x: torch.Tensor) -> None:
    check(x.dim() >= 1, op, f"x must have at least one dimension, got {describe(x)}")
    check(
        x.dtype in FLOAT_DTYPES,
        op,
        f"x must be float32, bfloat16 or float16, got {describe(x)}",
    )


def check_weight(op: str, name: str, w: torch.Tensor, n: int, k: int) -> None:
    """int8 [N, K], or (on CPU) the packed uint8 [ceil16(N), ceil4(K)]."""
    if w.dtype == torch.int8:
        check(
            w.dim() == 2 and tuple(w.shape) == (n, k),
            op,
            f"{name} must be int8 of shape [N, K] = [{n}, {k}], got {describe(w)}",
        )
        return
    np_, kp = round_up(n, GROUP_COLS), round_up(k, K_STEP)
    check(
        w.dtype == torch.uint8 and w.dim() == 2 and tuple(w.shape) == (np_, kp),
        op,
        f"{name} must be int8 [N, K] = [{n}, {k}] or a packed weight from "
        f"qkernels.ops.pack_weight (uint8 [{np_}, {kp}]), got {describe(w)}",
    )


def _scale_count(op: str, name: str, s: torch.Tensor) -> int:
    check(s.dim() >= 1, op, f"{name} must be float32 of shape [N], got {describe(s)}")
    return s.numel()


@torch.library.register_fake("qkernels::pack_weight")
def _pack_weight_fake(wq: torch.Tensor) -> torch.Tensor:
    check(
        wq.dtype == torch.int8 and wq.dim() == 2,
        "pack_weight",
        f"wq must be int8 of shape [N, K], got {describe(wq)}",
    )
    n, k = wq.shape
    return wq.new_empty((round_up(n, GROUP_COLS), round_up(k, K_STEP)), dtype=torch.uint8)


@torch.library.register_fake("qkernels::unpack_weight")
def _unpack_weight_fake(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    check(
        packed.dtype == torch.uint8
        and packed.dim() == 2
        and tuple(packed.shape) == (round_up(n, GROUP_COLS), round_up(k, K_STEP)),
        "unpack_weight",
        f"packed must be uint8 of shape [{round_up(n, GROUP_COLS)}, {round_up(k, K_STEP)}] "
        f"for N={n}, K={k}, got {describe(packed)}",
    )
    return packed.new_empty((n, k), dtype=torch.int8)


@torch.library.register_fake("qkernels::quantize_rowwise")
def _quantize_rowwise_fake(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    check(2 <= bits <= 8, "quantize_rowwise", f"bits must be in [2, 8], got {bits}")
    _check_float_x("quantize_rowwise", x)
    return (
        torch.empty_like(x, dtype=torch.int8, memory_format=torch.contiguous_format),
        x.new_empty(x.shape[:-1], dtype=torch.float32),
    )


@torch.library.register_fake("qkernels::int_mm")
def _int_mm_fake(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    op = "int_mm"
    check(
        a.dtype == torch.int8 and a.dim() == 2,
        op,
        f"a must be int8 of shape [M, K], got {describe(a)}",
    )
    check(
        b.dtype == torch.int8 and b.dim() == 2 and b.shape[1] == a.shape[1],
        op,
        f"b must be int8 of shape [N, K] with K == a.shape[1] (={a.shape[1]}), got {describe(b)}",
    )
    _check_same_device(op, a, b=b)
    return a.new_empty((a.shape[0], b.shape[0]), dtype=torch.int32)


@torch.library.register_fake("qkernels::int8_mm")
def _int8_mm_fake(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    op = "int8_mm"
    check(
        a.dtype == torch.int8 and a.dim() == 2,
        op,
        f"a must be int8 of shape [M, K], got {describe(a)}",
    )
    m, k = a.shape
    n = _scale_count(op, "b_scale", b_scale)
    _check_scale(op, "b_scale", b_scale, n, "[N] or [1, N]")
    _check_scale(op, "a_scale", a_scale, m, "[M] or [M, 1]")
    dtype = out_dtype or torch.float32
    check(
        dtype in FLOAT_DTYPES,
        op,
        f"out_dtype must be float32, bfloat16 or float16, got {dtype}",
    )
    check_weight(op, "b", b, n, k)
    _check_bias(op, bias, n)
    _check_same_device(op, a, b=b, a_scale=a_scale, b_scale=b_scale, bias=bias)
    return a.new_empty((m, n), dtype=dtype)


def _linear_fake(
    op: str,
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    _check_float_x(op, x)
    n = _scale_count(op, "w_scale", w_scale)
    _check_scale(op, "w_scale", w_scale, n, "[N]")
    check_weight(op, "wq", wq, n, x.shape[-1])
    _check_bias(op, bias, n)
    _check_same_device(op, x, wq=wq, w_scale=w_scale, bias=bias)
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("qkernels::linear_w8a8")
def _linear_w8a8_fake(x, wq, w_scale, bias=None):
    return _linear_fake("linear_w8a8", x, wq, w_scale, bias)


@torch.library.register_fake("qkernels::linear_w8a16")
def _linear_w8a16_fake(x, wq, w_scale, bias=None):
    return _linear_fake("linear_w8a16", x, wq, w_scale, bias)


# Ops whose CPU implementation is Python over torch ops (BLAS), not qkernels._C.
PYTHON_CPU_OPS = ("lowrank_mm_backward",)


def _load_extension() -> Exception | None:
    """Import qkernels._C (registers the C++ kernels). Never raises: a broken
    build is logged and each CPU op then raises the reason when called."""
    try:
        from qkernels import _C  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure must not break `import qkernels`
        log.warning("qkernels: C++ extension failed to load (%s); CPU ops will raise", e)
        for name in SCHEMAS:
            if name not in PYTHON_CPU_OPS:
                _lib.impl(name, _raiser(name, e), "CPU")
        return e
    return None


def _raiser(name: str, err: Exception):
    def fail(*args, **kwargs):
        raise RuntimeError(
            f"qkernels.{name}: the C++ extension qkernels._C is not available ({err}). "
            "Rebuild it with `pip install -e . --no-build-isolation` (or `make test`)."
        )

    return fail


EXTENSION_ERROR = _load_extension()

# Fake kernels (and autograd) of the other op families, which import from here; then
# the CUDA implementations and the backend choice (_backend, which needs all of them).
from qkernels import _fake_quant_registry, _lowrank_registry, _lstm_registry  # noqa: E402, F401, I001
from qkernels import _backend  # noqa: E402, F401, I001
