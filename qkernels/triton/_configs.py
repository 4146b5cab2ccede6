"""Launch configurations of the Triton GEMM kernels: one named function per kernel,
separate sets for sm_80 (A100) and sm_90 (H100/H200), keyed on a bucket of M.

How these were chosen (read before editing): from the hardware's limits, not from
timings; on sm_90 they are now the H200's picks (below, README "GPU results").
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
writes the autotuner's picks to its JSON (`autotune_choices`).

Measured: on an NVIDIA H200 (sm_90, 2026-11-28, torch 2.11 / Triton 3.6; the JSON in
benchmarks/results/gemm-gpu-nvidia-h200-2026-11-28-*) the autotuner's picks over these
lists, on Llama-7B projections (K, N of 4096 and 11008) at M = 1-8192 and 8192^3, replace
the sm_90 candidates of the int8 GEMM and w8a16 kernels: one configuration per bucket
(two where shapes of one bucket picked differently), so Hopper runs no autotuning.
sm_80 keeps its candidate lists (not yet measured). The linear_w8a8 quantize strategy
on sm_90 is the separate pass in every bucket (`w8a8_quantize_in_prologue`).
"""

from __future__ import annotations

import os

import torch
from triton import Config

from qkernels._common import device_capability

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
M_BUCKETS = (16, 64, 256, 1024, 1 << 30)  # upper bounds; the last is "large"


def m_bucket(m: int) -> int:
    """The smallest bucket bound >= m: autotuning runs once per bucket, not per M."""
    return next(b for b in M_BUCKETS if m <= b)


def arch_of(t: torch.Tensor) -> str | None:
    """'sm_90', 'sm_80', ... for a CUDA tensor; None on CPU (the interpreter)."""
    if t.device.type != "cuda" or not torch.cuda.is_available():
        return None
    major, minor = device_capability(t.device)
    return f"sm_{major}{minor}"


def _cfgs(rows, **extra) -> list[Config]:
    return [
        Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, **extra}, num_stages=s, num_warps=w)
        for bm, bn, bk, s, w in rows
    ]


def _interpreted(**extra) -> list[Config]:
    return _cfgs([(16, 32, 32, 1, 4)], **extra)


def _hopper(arch: str | None) -> bool:
    """sm_90 / sm_10x: ~227 KB of shared memory per block, which the measured sm_90 tiles
    need (one configuration each, nothing to fall back on). sm_12x (~99 KB, like sm_86)
    takes the sm_80 candidate lists, shrunk to its shared memory (`fit_shared_memory`)."""
    return arch is not None and 90 <= int(arch.removeprefix("sm_")) < 110


# (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps) per M bucket, picked on the H200 with int8
# activations (int8_mm, int_mm, linear_w8a8's separate-pass GEMM).
_INT8_GEMM_H200 = {
    16: [(16, 64, 256, 3, 4)],
    64: [(64, 64, 256, 3, 4)],
    256: [(64, 128, 128, 4, 4)],
    1024: [(128, 256, 128, 3, 8)],
    M_BUCKETS[-1]: [(128, 256, 128, 3, 8), (256, 128, 128, 3, 8)],
}
# (BLOCK_N, BLOCK_K, SPLIT_K) for M <= 16, then (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps).
_W8A16_DECODE_H200 = [(64, 128, 4), (128, 128, 8), (32, 128, 4)]
_W8A16_DECODE = [  # sm_80 candidates
    (32, 256, 1),
    (64, 128, 1),
    (32, 128, 4),
    (64, 128, 4),
    (64, 256, 2),
    (128, 128, 8),
]
_W8A16_H200 = {
    64: [(32, 64, 128, 4, 4)],
    256: [(128, 64, 64, 4, 4)],
    1024: [(128, 128, 64, 4, 8)],
    M_BUCKETS[-1]: [(128, 128, 64, 4, 8)],
}


# A transcendental epilogue (linear_w8a8_act's gelu, gelu_tanh, silu) needs registers
# that the 128 x 256 tiles of 8 warps do not have (tools/compile_check.py: 64 bytes of
# stack on sm_90 with erf): those kernels keep to 128 x 128 outputs per program.
# Not yet measured on a GPU.
_ACT_MAX_TILE = 128 * 128
_ACT_FALLBACK = [(128, 128, 128, 3, 8)]


def int8_gemm_configs(
    arch: str | None, bucket: int, transcendental: bool = False, a_bytes: int = 1
) -> list[Config]:
    """int8 x int8 -> int32 (+ dequant epilogue): int_mm, int8_mm, linear_w8a8(_act);
    `transcendental`: with an activation that calls erf / exp in the epilogue; `a_bytes`:
    the size of A's elements as loaded (x's, 2 or 4, when quantizing on load)."""
    configs = _int8_gemm_rows(arch, bucket)
    if INTERPRET or arch is None:
        return configs
    if transcendental:
        small = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= _ACT_MAX_TILE]
        configs = small or _cfgs(_ACT_FALLBACK)
    return [fit_shared_memory(c, a_bytes, _shared_memory_bytes(arch)) for c in configs]


def _shared_memory_bytes(arch: str) -> int:
    """Shared memory one program may hold: 227 KB on sm_90 / sm_10x, 163 KB on sm_80
    (sm_86 / sm_89 have 99 KB)."""
    if _hopper(arch):
        return 232_448
    return 166_912 if arch == "sm_80" else 101_376


def fit_shared_memory(config: Config, a_bytes: int, limit: int) -> Config:
    """`config` with fewer pipeline stages (at least 2), then a shorter K step, until
    its A and B tiles fit in `limit` bytes. The tables are for int8 A; quantizing on load
    stages x's 16- or 32-bit rows instead (the H200 ran out of shared memory with fp32
    x at 128 x 256 x 128, 3 stages: 245760 bytes of 232448)."""
    kw = dict(config.kwargs)
    stages = config.num_stages

    def need() -> int:
        return stages * kw["BLOCK_K"] * (kw["BLOCK_M"] * a_bytes + kw["BLOCK_N"])

    while need() > limit and stages > 2:
        stages -= 1
    while need() > limit and kw["BLOCK_K"] > 32:
        kw["BLOCK_K"] //= 2
    if (stages, kw) == (config.num_stages, config.kwargs):
        return config
    return Config(kw, num_stages=stages, num_warps=config.num_warps)


def _int8_gemm_rows(arch: str | None, bucket: int) -> list[Config]:
    if INTERPRET or arch is None:
        return _interpreted()
    if _hopper(arch):
        return _cfgs(_INT8_GEMM_H200[bucket])
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
        decode = _W8A16_DECODE_H200 if _hopper(arch) else _W8A16_DECODE
        return [
            Config(
                {"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk},
                num_stages=4,
                num_warps=4,
            )
            for bn, bk, sk in decode
        ]
    if _hopper(arch):
        return _cfgs(_W8A16_H200[bucket], SPLIT_K=1)
    if bucket <= 64:
        rows = [(32, 64, 128, 4, 4), (64, 64, 128, 4, 4), (64, 128, 64, 4, 4), (32, 128, 128, 3, 4)]
    elif bucket <= 256:
        rows = [(64, 128, 64, 4, 4), (128, 128, 64, 3, 8), (64, 256, 64, 3, 8), (128, 64, 64, 4, 4)]
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
    launch and an int8 copy of x). Measured on the H200 (Llama-7B projections, M = 1 to
    2048): the separate pass wins in every bucket, 2.1x at M = 16 to 5.6x at M = 2048,
    so sm_90 takes it. sm_80 (not measured) keeps the reasoning the default came from:
    the prologue where the launch dominates (M <= 64). The interpreter runs the
    prologue, so the CPU tests cover it."""
    if INTERPRET or arch is None:
        return True
    return not _hopper(arch) and bucket <= 64
