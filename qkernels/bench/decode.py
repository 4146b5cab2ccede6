"""Decode-sized GEMMs against the memory bound (part of `qkernels bench --suite linear`).

At 1-8 rows an int8 Linear does ~2 operations per weight byte: it is a stream of its
packed weight, and the question is what fraction of the machine's DRAM read bandwidth
that stream reaches. Measured here, at 1 thread and at all of torch's threads:

- the read bandwidth: `torch.sum` over a float32 buffer of past_the_cache_bytes(), timed
  in the same interleaved rounds as the GEMMs (the memory bandwidth a shared VM gets
  moves: 50 and 93 GB/s at 2 threads in two runs of 2026-12-08; a plain AVX-512 load
  loop read 34-38 GB/s at 1 thread where torch.sum read 40-45);
- per impl, rows and shape: the weight bytes a call reads over its median time (weights
  rotated over as many bytes as that buffer, timed interleaved with the other impls),
  and that rate as a fraction of the read bandwidth.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from qkernels import timing
from qkernels.bench.linear import _rotating
from qkernels.bench.report import last_level_cache_bytes, table
from qkernels.nn import Int8Linear

# Llama-7B / TinyLlama-shaped projections (attention, MLP up, MLP down)
FULL_SHAPES = [(4096, 4096), (2048, 5632), (5632, 2048)]
FULL_ROWS = (1, 2, 4, 8)
CI_SHAPES = [(256, 512)]
CI_ROWS = (1,)
MODES = ("w8a16", "w8a8")


@dataclass
class DecodeRow:
    threads: int
    m: int
    k: int
    n: int
    impl: str
    median_us: float
    weight_gbs: float  # packed weight bytes per call / median time
    read_gbs: float  # the read probe's rate in the same rounds, at these threads
    of_read: float  # weight_gbs / read_gbs
    spread: float  # interquartile range / median over the interleaved rounds


def past_the_cache_bytes() -> int:
    """4x the last-level cache the OS reports, and at least 256 MiB. Trap: a 2-vCPU VM
    reported 32 MiB of L3 while rotating over 64 MiB still read 160% of DRAM speed at 2
    threads (its vCPUs see more cache than sysfs says)."""
    return max(256 << 20, 4 * last_level_cache_bytes())


READ = "read bandwidth (torch.sum)"


def _weight_bytes(module: Int8Linear) -> int:
    return module.weight.numel() * module.weight.element_size()


@torch.no_grad()
def run_decode(
    shapes=FULL_SHAPES, rows=FULL_ROWS, threads=None, min_run_time: float = 0.3
) -> list[DecodeRow]:
    """Every (threads, shape, rows): qkernels w8a16 and w8a8 with cold weights."""
    all_threads = torch.get_num_threads()
    threads = threads or sorted({1, all_threads})
    out = []
    span = past_the_cache_bytes()
    buf = torch.ones(span // 4)  # the read probe, timed with the GEMMs
    try:
        for t in threads:
            torch.set_num_threads(t)
            for k, n in shapes:
                layer = nn.Linear(k, n, bias=False)
                copies = {}
                for mode in MODES:
                    first = Int8Linear.from_float(layer, mode)
                    want = max(2, -(-span // _weight_bytes(first)))
                    copies[mode] = [first] + [Int8Linear.from_float(layer, mode)
                                              for _ in range(want - 1)]  # fmt: skip
                for m in rows:
                    x = torch.randn(m, k)
                    fns = {
                        f"qkernels {mode}": functools.partial(_rotating(mods), x)
                        for mode, mods in copies.items()
                    }
                    fns[READ] = buf.sum
                    rounds = 7
                    timed = timing.compare(fns, rounds=rounds, min_sample_s=min_run_time / rounds)
                    bandwidth = buf.numel() * 4 / timed.timings[READ].median_ms / 1e6
                    for mode in MODES:
                        name = f"qkernels {mode}"
                        tm = timed.timings[name]
                        gbs = _weight_bytes(copies[mode][0]) / tm.median_ms / 1e6
                        out.append(
                            DecodeRow(
                                t, m, k, n, name, tm.median_ms * 1e3, gbs, bandwidth,
                                gbs / bandwidth, round(tm.spread, 3),
                            )
                        )  # fmt: skip
    finally:
        torch.set_num_threads(all_threads)
    return out


COLUMNS = (
    ("threads", "threads", ">7"),
    ("M", "m", ">3"),
    ("K", "k", ">5"),
    ("N", "n", ">5"),
    ("impl", "impl", "<16"),
    ("us", "median_us", ">8.1f"),
    ("weight GB/s", "weight_gbs", ">11.1f"),
    ("read GB/s", "read_gbs", ">9.1f"),
    ("of read", "of_read", ">7.0%"),
    ("IQR/med", "spread", ">8.2f"),
)


def format_decode_table(rows: list[DecodeRow]) -> str:
    return (
        "decode-sized GEMMs, cold weights: the packed weight's read rate against this "
        "machine's DRAM read bandwidth (torch.sum of a buffer past the cache)\n"
        + table(rows, COLUMNS)
    )
