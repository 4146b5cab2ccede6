"""Triton kernels of the int8 GEMM family (the CUDA implementation; CPU-testable with
TRITON_INTERPRET=1). Same signatures and numbers as the ops.

Every launch goes through `launch` (torch.library.wrap_triton), so torch.compile
sees these kernels inside the ops (see qkernels/_backend.py). Block sizes come
from the named config functions in `_configs.py`, autotuned per M bucket.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qkernels._common import ACTIVATIONS, MAX_EXACT_K, apply_activation, as_rows, exact_int32
from qkernels.meta.int8_gemm import (
    int8_mm_fake,
    int_mm_fake,
    linear_fake,
    linear_w8a8_act_fake,
    linear_w8a16_act_fake,
    quantize_rowwise_fake,
)
from qkernels.triton._common import (
    autotuned,
    finite,
    grouped_tile,
    launch,
    mul_rn,
    round_half_even,
    store_output,
)
from qkernels.triton._configs import (
    INTERPRET,
    arch_of,
    int8_gemm_configs,
    m_bucket,
    quantize_configs,
    w8a8_quantize_in_prologue,
    w8a16_configs,
)


def upcast(t: torch.Tensor) -> bool:
    """Trap: the interpreter's bf16 tl.dot returns garbage (fp16 is fine), so under
    the interpreter bf16 operands are widened to fp32 first (a kernel's UPCAST);
    GPUs run the native bf16 dot."""
    return INTERPRET and t.dtype == torch.bfloat16


@triton.jit
def _row_absmax_scale(x_ptr, m, k, ldx, offs_m, qmax, BLOCK_K: tl.constexpr):
    """The per-row scale rule of DESIGN.md ("Non-finite and tiny values"), as the C++
    row_scale: NaN for a row holding NaN or +-Inf, 1 below qmax * FLT_MIN."""
    amax = tl.zeros((offs_m.shape[0],), tl.float32)
    bad = tl.zeros((offs_m.shape[0],), tl.int32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_m[:, None] < m) & (offs_k[None, :] < k)
        x = tl.load(x_ptr + offs_m[:, None] * ldx + offs_k[None, :], mask=mask, other=0.0)
        x = x.to(tl.float32)
        # Trap: tl.max may drop NaN, so non-finite values are counted on their own.
        bad += tl.sum(tl.where(finite(x), 0, 1), axis=1)
        amax = tl.maximum(amax, tl.max(tl.where(finite(x), tl.abs(x), 0.0), axis=1))
    scale = tl.where(amax < qmax * 1.1754943508222875e-38, 1.0, tl.math.div_rn(amax, qmax))
    nan = tl.full(scale.shape, float("nan"), tl.float32)
    return tl.where(bad > 0, nan, scale)


@triton.jit
def _quantize(x, scale, qmax):
    # div_rn: IEEE division, as reference.quantize_rowwise (not an approximate divide).
    q = round_half_even(tl.math.div_rn(x.to(tl.float32), scale[:, None]))
    q = tl.minimum(tl.maximum(q, -qmax), qmax)
    return tl.where(scale[:, None] == scale[:, None], q, 0.0)  # a NaN row's q are 0


@triton.jit
def _quantize_rows_kernel(
    x_ptr, q_ptr, s_ptr, m, k, qmax, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr
):
    # Trap: Inductor passes a Python float argument as fp64 (Triton's launcher: fp32), and
    # div_rn takes fp32 only.
    qmax = tl.cast(qmax, tl.float32)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    scale = _row_absmax_scale(x_ptr, m, k, k, offs_m, qmax, BLOCK_K)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_m[:, None] < m) & (offs_k[None, :] < k)
        x = tl.load(x_ptr + offs_m[:, None] * k + offs_k[None, :], mask=mask, other=0.0)
        tl.store(
            q_ptr + offs_m[:, None] * k + offs_k[None, :],
            _quantize(x, scale, qmax).to(tl.int8),
            mask=mask,
        )
    tl.store(s_ptr + offs_m, scale, mask=offs_m < m)


@triton.jit
def _lora_tile(out, t_ptr, bt_ptr, offs_m, offs_n, m, n, r):
    """out + sum_j t[i, j] * bt[j, c] over the tile's rows i and columns c: the adapter
    term of lora_w8a8 (t = scaling * x a^T [M, r], bt = b^T [r, N], float32). Rank-1
    updates of the accumulator already in registers: no second register tile (a
    tl.dot here spilled at 64 x 128 tiles), r FMAs per output on the CUDA cores."""
    for j in range(0, r):
        tj = tl.load(t_ptr + offs_m * r + j, mask=offs_m < m, other=0.0)
        bj = tl.load(bt_ptr + j * n + offs_n, mask=offs_n < n, other=0.0)
        out += tj[:, None] * bj[None, :]
    return out


@triton.jit
def _int8_gemm_kernel(
    a_ptr,
    b_ptr,
    a_scale_ptr,
    b_scale_ptr,
    bias_ptr,
    t_ptr,
    bt_ptr,
    out_ptr,
    m,
    n,
    k,
    r,
    QUANTIZE_A: tl.constexpr,
    DEQUANT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_LORA: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """acc = A @ B^T in int32 (A int8, or float quantized per row on load), then
    int32 out, or acc * a_scale * b_scale + bias (+ the LoRA term), through the
    activation ACT, in out_ptr's dtype."""
    pid_m, pid_n = grouped_tile(m, n, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if QUANTIZE_A:
        a_scale = _row_absmax_scale(a_ptr, m, k, k, offs_m, 127.0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        amask = (offs_m[:, None] < m) & (offs_k[None, :] < k)
        a = tl.load(a_ptr + offs_m[:, None] * k + offs_k[None, :], mask=amask, other=0)
        if QUANTIZE_A:
            a = _quantize(a, a_scale, 127.0).to(tl.int8)
        bmask = (offs_k[:, None] < k) & (offs_n[None, :] < n)
        b = tl.load(b_ptr + offs_n[None, :] * k + offs_k[:, None], mask=bmask, other=0)
        acc += tl.dot(a, b, out_dtype=tl.int32)
    if DEQUANT:
        if not QUANTIZE_A:
            a_scale = tl.load(a_scale_ptr + offs_m, mask=offs_m < m, other=0.0)
        b_scale = tl.load(b_scale_ptr + offs_n, mask=offs_n < n, other=0.0)
        out = mul_rn(acc.to(tl.float32) * a_scale[:, None], b_scale[None, :])
        if HAS_BIAS:  # before the adapter, as the CPU kernels
            out += tl.load(bias_ptr + offs_n, mask=offs_n < n, other=0.0).to(tl.float32)[None, :]
        if HAS_LORA:
            out = _lora_tile(out, t_ptr, bt_ptr, offs_m, offs_n, m, n, r)
        store_output(out, bias_ptr, out_ptr, offs_m, offs_n, m, n, False, ACT)
    else:
        tl.store(
            out_ptr + offs_m[:, None] * n + offs_n[None, :],
            acc,
            mask=(offs_m[:, None] < m) & (offs_n[None, :] < n),
        )


@triton.jit
def _w8a16_kernel(
    x_ptr,
    w_ptr,
    w_scale_ptr,
    bias_ptr,
    t_ptr,
    bt_ptr,
    out_ptr,
    partial_ptr,
    m,
    n,
    k,
    r,
    HAS_BIAS: tl.constexpr,
    HAS_LORA: tl.constexpr,
    ACT: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
):
    """x (fp32/bf16/fp16) @ int8 w^T, the weight widened to x's dtype in registers.

    SPLIT_K > 1 (decode sizes): program z sums one K slice, adds it into the
    zeroed fp32 `partial` [M, N] with atomics and takes a ticket (int32 counters
    stored after it, so one memset clears both); the last of a tile's SPLIT_K
    programs reads the total back and writes the output (one launch, no second
    reduction kernel). Float atomics make that sum's order vary run to run.
    HAS_LORA (lora_w8a16): the adapter term added to the finished sum, after the bias,
    by the program that stores it.
    """
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_per_split = tl.cdiv(tl.cdiv(k, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = tl.program_id(2) * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, k)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + offs_m[:, None] * k + offs_k[None, :],
            mask=(offs_m[:, None] < m) & (offs_k[None, :] < k_hi),
            other=0.0,
        )
        w = tl.load(
            w_ptr + offs_n[None, :] * k + offs_k[:, None],
            mask=(offs_k[:, None] < k_hi) & (offs_n[None, :] < n),
            other=0,
        )
        if UPCAST:  # see upcast()
            x = x.to(tl.float32)
        acc += tl.dot(x, w.to(x.dtype), input_precision="ieee")
    w_scale = tl.load(w_scale_ptr + offs_n, mask=offs_n < n, other=0.0)
    # Dequantize-then-multiply semantics: a non-finite scale's channel is NaN (acc * inf
    # would be +-inf), as the reference and the CPU kernels give.
    out = tl.where(finite(w_scale)[None, :], mul_rn(acc, w_scale[None, :]), float("nan"))
    if SPLIT_K > 1:
        pptrs = partial_ptr + offs_m[:, None] * n + offs_n[None, :]
        omask = (offs_m[:, None] < m) & (offs_n[None, :] < n)
        tl.atomic_add(pptrs, out, mask=omask)
        # acq_rel: this program's adds are visible before its ticket, and the last
        # ticket holder sees every other program's adds.
        tickets = partial_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + m * n
        ticket = tl.atomic_add(tickets + pid_m * tl.num_programs(1) + pid_n, 1)
        if ticket == SPLIT_K - 1:
            total = tl.load(pptrs, mask=omask, other=0.0, cache_modifier=".cg")
            _w8a16_store(total, bias_ptr, t_ptr, bt_ptr, out_ptr, offs_m, offs_n, m, n, r,
                         HAS_BIAS, HAS_LORA, ACT)  # fmt: skip
    else:
        _w8a16_store(out, bias_ptr, t_ptr, bt_ptr, out_ptr, offs_m, offs_n, m, n, r,
                     HAS_BIAS, HAS_LORA, ACT)  # fmt: skip


@triton.jit
def _w8a16_store(
    out, bias_ptr, t_ptr, bt_ptr, out_ptr, offs_m, offs_n, m, n, r,
    HAS_BIAS: tl.constexpr, HAS_LORA: tl.constexpr, ACT: tl.constexpr,
):  # fmt: skip
    if HAS_LORA:  # bias first, then the adapter (the CPU kernels' order)
        if HAS_BIAS:
            out += tl.load(bias_ptr + offs_n, mask=offs_n < n, other=0.0).to(tl.float32)[None, :]
        out = _lora_tile(out, t_ptr, bt_ptr, offs_m, offs_n, m, n, r)
        store_output(out, bias_ptr, out_ptr, offs_m, offs_n, m, n, False, ACT)
    else:
        store_output(out, bias_ptr, out_ptr, offs_m, offs_n, m, n, HAS_BIAS, ACT)


# ---- host side ----


def quantize_rowwise(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    quantize_rowwise_fake(x, bits)
    return _quantize_rows(x, bits)


def _quantize_rows(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_rowwise without the argument checks (the GEMMs' separate pass)."""
    x2d = as_rows(x)
    q = torch.empty(x2d.shape, dtype=torch.int8, device=x.device)
    s = torch.ones(x2d.shape[0], dtype=torch.float32, device=x.device)
    if x2d.numel():
        cfg = quantize_configs(arch_of(x))
        launch(
            _quantize_rows_kernel,
            (triton.cdiv(x2d.shape[0], cfg["BLOCK_M"]),),
            x2d,
            q,
            s,
            x2d.shape[0],
            x2d.shape[1],
            float(2 ** (bits - 1) - 1),
            **cfg,
        )
    return q.reshape(x.shape), s.reshape(x.shape[:-1])


def _wide_gemm(a, b, a_scale, b_scale, bias, out_dtype, quantize_a, dequant, lora, act):
    """K past MAX_EXACT_K: int32 GEMMs over K blocks that cannot overflow, summed in
    int64; the epilogue then runs in torch, in the kernel's order."""
    if quantize_a:
        a, a_scale = quantize_rowwise(a)
    k = a.shape[1]
    exact = sum(
        _gemm(
            a[:, k0 : k0 + MAX_EXACT_K],
            b[:, k0 : k0 + MAX_EXACT_K],
            None,
            None,
            None,
            None,
            quantize_a=False,
            dequant=False,
        ).long()
        for k0 in range(0, k, MAX_EXACT_K)
    )
    if not dequant:
        return exact_int32(exact, "int_mm", k)
    out = exact.float() * a_scale.reshape(-1, 1) * b_scale.reshape(1, -1)
    if bias is not None:
        out = out + bias.float()
    if lora is not None:
        out = out + lora[0] @ lora[1]
    return apply_activation(out, ACTIVATIONS[act]).to(out_dtype)


def _gemm(
    a, b, a_scale, b_scale, bias, out_dtype, quantize_a: bool, dequant: bool, lora=None, act=0
):
    """The one int8 GEMM launch behind int_mm, int8_mm, linear_w8a8(_act) and lora_w8a8
    (and the LSTM). `lora`: (t, bt), float32 [M, r] and [r, N], added in the epilogue;
    `act`: the epilogue activation's code (an index of ACTIVATIONS)."""
    m, k = a.shape
    n = b.shape[0]
    if k > MAX_EXACT_K:
        return _wide_gemm(a, b, a_scale, b_scale, bias, out_dtype, quantize_a, dequant, lora, act)
    out = torch.empty(m, n, dtype=out_dtype if dequant else torch.int32, device=a.device)
    if m and n:
        a_bytes = a.element_size()  # x's when quantizing on load, else int8
        kernel = autotuned(
            _int8_gemm_kernel, int8_gemm_configs, arch_of(a), m_bucket(m), act >= 2, a_bytes
        )
        launch(
            kernel,
            lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),),
            a.contiguous(),
            b.contiguous(),
            a_scale.contiguous().reshape(-1) if a_scale is not None else None,
            b_scale.contiguous().reshape(-1) if b_scale is not None else None,
            bias.contiguous() if bias is not None else None,  # kernels read dense rows
            lora[0] if lora is not None else None,
            lora[1] if lora is not None else None,
            out,
            m,
            n,
            k,
            lora[0].shape[1] if lora is not None else 0,
            QUANTIZE_A=quantize_a,
            DEQUANT=dequant,
            HAS_BIAS=bias is not None,
            HAS_LORA=lora is not None,
            ACT=act,
            GROUP_M=8,
        )
    return out


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    int_mm_fake(a, b)
    return _gemm(a, b, None, None, None, None, quantize_a=False, dequant=False)


def int8_mm(a, b, a_scale, b_scale, bias=None, out_dtype=None):
    int8_mm_fake(a, b, a_scale, b_scale, bias, out_dtype)
    return _gemm(
        a, b, a_scale, b_scale, bias, out_dtype or torch.float32, quantize_a=False, dequant=True
    )


def linear_w8a8(x, wq, w_scale, bias=None):
    """Per-token quantization of x fused into the GEMM: in its prologue (quantize on
    load) or as a separate pass, per `w8a8_quantize_in_prologue`."""
    linear_fake("linear_w8a8", x, wq, w_scale, bias)
    return w8a8_gemm(x, wq, w_scale, bias)


def w8a8_gemm(x, wq, w_scale, bias=None, lora=None, prologue: bool | None = None, act=0):
    """linear_w8a8 (plus the LoRA epilogue term `lora` and the activation `act`, see
    _gemm) without the argument checks; `prologue` forces the quantization strategy
    (None: the table's choice)."""
    x2d = as_rows(x)
    if prologue is None:
        prologue = w8a8_quantize_in_prologue(arch_of(x), m_bucket(x2d.shape[0]))
    if prologue:
        out = _gemm(x2d, wq, None, w_scale, bias, x.dtype, True, dequant=True, lora=lora, act=act)
    else:
        q, s = _quantize_rows(x2d)
        out = _gemm(q, wq, s, w_scale, bias, x.dtype, False, dequant=True, lora=lora, act=act)
    return out.reshape(*x.shape[:-1], wq.shape[0])


def linear_w8a8_act(x, wq, w_scale, bias, activation):
    linear_w8a8_act_fake(x, wq, w_scale, bias, activation)
    return w8a8_gemm(x, wq, w_scale, bias, act=ACTIVATIONS.index(activation))


def linear_w8a16_act(x, wq, w_scale, bias, activation):
    linear_w8a16_act_fake(x, wq, w_scale, bias, activation)
    return w8a16_gemm(x, wq, w_scale, bias, act=ACTIVATIONS.index(activation))


def linear_w8a8_two_pass(x, wq, w_scale, bias=None):
    """linear_w8a8 with the quantization a separate pass (also timed on its own by
    the GPU benchmark, against quantize-on-load)."""
    linear_fake("linear_w8a8", x, wq, w_scale, bias)
    return w8a8_gemm(x, wq, w_scale, bias, prologue=False)


def linear_w8a8_prologue(x, wq, w_scale, bias=None):
    """linear_w8a8 with the quantization in the GEMM prologue (quantize on load)."""
    linear_fake("linear_w8a8", x, wq, w_scale, bias)
    return w8a8_gemm(x, wq, w_scale, bias, prologue=True)


# The split-K ticket buffer is sized for the smallest tile any configuration uses.
_MIN_TILE_M, _MIN_TILE_N = 16, 32


def linear_w8a16(x, wq, w_scale, bias=None):
    linear_fake("linear_w8a16", x, wq, w_scale, bias)
    return w8a16_gemm(x, wq, w_scale, bias)


def w8a16_gemm(x, wq, w_scale, bias=None, lora=None, act=0):
    """linear_w8a16 (plus the LoRA epilogue term `lora` = (t, bt), float32 [M, r] and
    [r, N], and the activation `act`, as in _gemm) without the argument checks."""
    x2d = as_rows(x)
    m, k = x2d.shape
    n = wq.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m and n:
        bucket = m_bucket(m)
        decode = bucket <= 16  # only these configurations may split K
        partial = None
        if decode:  # fp32 partial sums, then one int32 ticket per tile (zero bits either way)
            tiles = triton.cdiv(m, _MIN_TILE_M) * triton.cdiv(n, _MIN_TILE_N)
            partial = torch.zeros(m * n + tiles, dtype=torch.float32, device=x.device)
        kernel = autotuned(
            _w8a16_kernel,
            w8a16_configs,
            arch_of(x),
            bucket,
            reset_to_zero=("partial_ptr",) if decode else (),
        )
        launch(
            kernel,
            lambda meta: (
                triton.cdiv(m, meta["BLOCK_M"]),
                triton.cdiv(n, meta["BLOCK_N"]),
                meta["SPLIT_K"],
            ),
            x2d,
            wq.contiguous(),
            w_scale.contiguous().reshape(-1),
            bias.contiguous() if bias is not None else None,
            lora[0] if lora is not None else None,
            lora[1] if lora is not None else None,
            out,
            partial,
            m,
            n,
            k,
            lora[0].shape[1] if lora is not None else 0,
            HAS_BIAS=bias is not None,
            HAS_LORA=lora is not None,
            ACT=act,
            UPCAST=upcast(x),
        )
    return out.reshape(*x.shape[:-1], n)
