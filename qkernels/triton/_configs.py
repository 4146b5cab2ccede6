"""Launch configurations of the Triton GEMM kernels: one named function per kernel,
separate sets for sm_80 (A100) and sm_90 (H100/H200), keyed on a bucket of M.

How these were chosen (read before editing): from the hardware's limits, not from
timings (what has been measured: README "GPU status" and benchmarks/results).
Each set is a short list of candidates for `triton.autotune`, which times them on
the first call per (bucket, N, K) and keeps the fastest; the lists bound that search
to shapes that suit the hardware:
- int8 operands: K steps of 64-128 bytes (one or two 128-byte lines per row per stage).
- sm_90: 227 KB shared memory per SM and warpgroup MMA (BLOCK_M >= 64, 4 or 8 warps),
  so larger tiles and 3-4 stages; sm_80: 164 KB and mma.sync, tiles up to 128 x 128 int32.
- decode (M <= 16): the weight read dominates, so narrow N tiles and split-K give
  enough programs to keep every SM streaming weights (132 SMs on H100).
- checked without a GPU: `python tools/compile_check.py` compiles every
  candidate for sm_80 and sm_90 (benchmarks/results/triton-compile-sm80-sm90-*.json):
  all fit shared memory and run on tensor cores (warpgroup MMA on sm_90 wherever
  BLOCK_M >= 64); the sm_80 128 x 256 int8 tiles first proposed spilled registers
  and were replaced; one candidate still spills 8 bytes (sm_80, quantize on load,
  64 x 64 x 128) and is left for the autotuner to rank.
Under TRITON_INTERPRET=1 (CPU tests) every kernel gets one small configuration, so
nothing is timed and the tests stay fast. A GPU run of `qkernels bench --suite gpu`
writes the autotuner's picks to its JSON; those replace these lists.
"""

from __future__ import annotations

import os

import torch
from triton import Config

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
M_BUCKETS = (16, 64, 256, 1024, 1 << 30)  # upper bounds; the last is "large"


def m_bucket(m: int) -> int:
    """The smallest bucket bound >= m: autotuning runs once per bucket, not per M."""
    return next(b for b in M_BUCKETS if m <= b)


def arch_of(t: torch.Tensor) -> str | None:
    """'sm_90', 'sm_80', ... for a CUDA tensor; None on CPU (the interpreter)."""
    if t.device.type != "cuda" or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(t.device)
    return f"sm_{major}{minor}"


def _cfgs(rows, **extra) -> list[Config]:
    return [
        Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, **extra}, num_stages=s, num_warps=w)
        for bm, bn, bk, s, w in rows
    ]


def _interpreted(**extra) -> list[Config]:
    return _cfgs([(16, 32, 32, 1, 4)], **extra)


def _hopper(arch: str | None) -> bool:
    return arch is not None and arch >= "sm_90"


def int8_gemm_configs(arch: str | None, bucket: int) -> list[Config]:
    """int8 x int8 -> int32 (+ dequant epilogue): int_mm, int8_mm, linear_w8a8."""
    if INTERPRET or arch is None:
        return _interpreted()
    if bucket <= 16:
        rows = [(16, 64, 128, 4, 4), (16, 128, 128, 4, 4), (16, 64, 256, 3, 4), (32, 64, 128, 4, 4)]
    elif bucket <= 64:
        rows = [
            (64, 128, 128, 3, 4),
            (64, 64, 128, 3, 4),
            (32, 128, 128, 4, 4),
            (64, 64, 256, 3, 4),
        ]
    elif bucket <= 256:
        rows = [
            (64, 128, 128, 4, 4),
            (128, 128, 64, 4, 8),
            (128, 64, 128, 4, 4),
            (64, 256, 64, 4, 8),
        ]
    elif _hopper(arch):
        rows = [
            (128, 256, 128, 3, 8),
            (256, 128, 128, 3, 8),
            (128, 128, 128, 4, 8),
            (128, 256, 64, 4, 8),
        ]
    else:  # no warpgroup MMA on sm_80: a 128 x 256 int32 tile spills even at 8 warps
        rows = [
            (128, 128, 128, 3, 8),
            (128, 128, 64, 4, 8),
            (64, 256, 128, 3, 8),
            (256, 64, 128, 3, 8),
        ]
    return _cfgs(rows)


def w8a16_configs(arch: str | None, bucket: int) -> list[Config]:
    """16-bit x (int8 weight widened in registers): linear_w8a16. SPLIT_K > 1 only
    for decode sizes, where it multiplies the number of programs streaming weights."""
    if INTERPRET or arch is None:
        # Split-K 2 under the interpreter so the CPU tests cover the split path.
        return _interpreted(SPLIT_K=2 if bucket <= 16 else 1)
    if bucket <= 16:
        return [
            Config(
                {"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk},
                num_stages=4,
                num_warps=4,
            )
            for bn, bk, sk in (
                (32, 256, 1),
                (64, 128, 1),
                (32, 128, 4),
                (64, 128, 4),
                (64, 256, 2),
                (128, 128, 8),
            )
        ]
    if bucket <= 64:
        rows = [(32, 64, 128, 4, 4), (64, 64, 128, 4, 4), (64, 128, 64, 4, 4), (32, 128, 128, 3, 4)]
    elif bucket <= 256:
        rows = [(64, 128, 64, 4, 4), (128, 128, 64, 3, 8), (64, 256, 64, 3, 8), (128, 64, 64, 4, 4)]
    elif _hopper(arch):
        rows = [
            (128, 256, 64, 3, 8),
            (256, 128, 64, 3, 8),
            (128, 128, 64, 4, 8),
            (128, 128, 128, 3, 8),
        ]
    else:
        rows = [
            (128, 128, 64, 3, 8),
            (128, 256, 32, 3, 8),
            (256, 128, 32, 3, 8),
            (64, 128, 64, 4, 4),
        ]
    return _cfgs(rows, SPLIT_K=1)


def lowrank_configs(arch: str | None, bucket: int, rank: int) -> list[Config]:
    """lowrank_mm forward: the [BLOCK_M, rank] intermediate lives in registers, so
    BLOCK_M shrinks as the rank grows (rank 256 in fp32 is 64 KB at BLOCK_M = 64)."""
    if INTERPRET or arch is None:
        return _interpreted()
    bm_max = 128 if rank <= 64 else 64 if rank <= 128 else 32
    if bucket <= 16:
        rows = [(16, 64, 64, 3, 4), (16, 128, 64, 3, 4), (16, 64, 128, 3, 4)]
    else:
        rows = [
            (bm_max, 128, 64, 3, 8),
            (bm_max, 64, 64, 3, 4),
            (min(bm_max, 64), 128, 64, 3, 4),
            (min(bm_max, 64), 64, 128, 3, 8),
        ]
    return _cfgs(rows)


def lowrank_backward_configs(arch: str | None, rank: int) -> list[Config]:
    """lowrank_mm backward, per row block: t = x a^T, dt = g b, dx = dt a, with
    [BLOCK_M, rank] t and dt both in registers."""
    if INTERPRET or arch is None:
        return _interpreted()
    bm = 64 if rank <= 64 else 32 if rank <= 128 else 16
    warps = 4 if rank <= 128 else 8  # two [BLOCK_M, rank] fp32 tiles must fit in registers
    return _cfgs([(bm, 64, 64, 3, warps), (bm, 128, 64, 3, 8), (bm, 64, 128, 3, warps)])


def reduce_rows_configs(arch: str | None) -> list[Config]:
    """C[P, Q] = sum over M of A[M, P]^T B[M, Q] (the weight gradients of lowrank_mm),
    split over M with fp32 atomics so a small P x Q output still fills the GPU."""
    if INTERPRET or arch is None:
        return _interpreted(SPLIT_M=2)
    # (BLOCK_M, BLOCK_N) tile P x Q; BLOCK_K steps through the reduced M.
    return [
        Config(
            {"BLOCK_M": bp, "BLOCK_N": bq, "BLOCK_K": 64, "SPLIT_M": sm}, num_stages=3, num_warps=w
        )
        for bp, bq, sm, w in ((64, 128, 8, 4), (64, 64, 16, 4), (128, 128, 4, 8), (64, 256, 8, 8))
    ]


def quantize_configs(arch: str | None) -> dict:
    """quantize_rowwise (memory-bound): rows per program and the K step of its two passes."""
    if INTERPRET or arch is None:
        return {"BLOCK_M": 16, "BLOCK_K": 32}
    return {"BLOCK_M": 4, "BLOCK_K": 1024, "num_warps": 4}


def w8a8_quantize_in_prologue(arch: str | None, bucket: int) -> bool:
    """linear_w8a8: quantize x per token inside the GEMM (each N-tile program reads
    its rows twice, once for the absmax) or in a separate pass first (one more
    launch and an int8 copy of x). The reasoning behind the default (timings replace
    it, see the module docstring): the prologue wins where the launch dominates
    (small M); the separate pass where x's re-reads across the N tiles cost more than
    writing int8 x once."""
    return INTERPRET or arch is None or bucket <= 64
