"""Giving memory back after quantize-on-load (Linux / glibc; no-ops elsewhere).

transformers reads safetensors through a private file mapping: a float weight the loader
hands to the quantizer is file pages that stay resident (in the process's RSS) as long as
the mapping lives — and it lives as long as any other parameter of the file does (the
embeddings stay float). Once a weight is quantized its float pages are never read again,
so `release_file_pages` drops them from the process (`madvise(MADV_DONTNEED)`: a later read
would fault them back in from the file, unchanged). `trim_heap` returns the allocator's
free heap (the loader's temporaries) to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from functools import cache

import torch

_MADV_DONTNEED = 4


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def _in_private_file_mapping(start: int, end: int) -> bool:
    """Whether [start, end) lies entirely inside one file-backed private mapping (not
    anonymous memory, the heap or a shared mapping: those are never released)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                lo, hi = (int(v, 16) for v in fields[0].split("-"))
                if lo <= start < hi:
                    path = fields[5].strip() if len(fields) > 5 else ""
                    private = fields[1].endswith("p")
                    return end <= hi and private and path.startswith("/")
    except OSError:
        return False
    return False


def release_file_pages(t: torch.Tensor) -> int:
    """Drop the resident pages lying wholly inside `t`'s bytes when `t` is read from a
    private file mapping (a safetensors weight the caller has consumed and will not read
    again). Trap: only for clean file pages — MADV_DONTNEED on anonymous memory would
    zero it, and on a written (copy-on-write) page would revert it to the file's bytes —
    so anything but a file mapping is left alone; so are the partial pages at either end,
    which neighbouring tensors share. Returns the bytes released (0 where nothing was)."""
    libc = _libc()
    if libc is None or t.device.type != "cpu" or t.numel() == 0:
        return 0
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    if not t.is_contiguous() or not _in_private_file_mapping(start, end):
        return 0
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, end // page * page
    if hi <= lo or libc.madvise(lo, hi - lo, _MADV_DONTNEED) != 0:
        return 0
    return hi - lo


def trim_heap() -> None:
    """Return glibc's free heap memory to the system (malloc_trim); no-op elsewhere."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is not None:
        trim(0)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Make glibc keep freed memory for the next allocation instead of handing it back to
    the system (for inference servers and benchmarks; process-wide; Linux / glibc).

    A model's forward allocates and frees tensors of megabytes each. By default glibc
    serves the large ones with fresh mmaps (always above 32 MiB, below it depending on its
    adaptive threshold) and trims the top of its heap on free, so a forward page-faults
    its activations in again — on the MiniLM forward at 16 x 128, 0.6-6 thousand faults
    and 2-19 ms of system time per call (up to ~8% of it, int8 and fp32 alike), varying
    from run to run; ONNX Runtime avoids it with its own arena. This turns mmap off for
    allocations (`M_MMAP_MAX` 0: everything comes from the heap) and keeps up to
    `trim_threshold` bytes of free heap top (`M_TRIM_THRESHOLD`): the process keeps its
    peak heap instead (`trim_heap()` still returns it). Returns whether glibc took both
    settings (False elsewhere)."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    no_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    kept = mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1)) == 1 and no_mmap
    _state["kept"] = _state["kept"] or kept
    return kept


_state = {"kept": False}  # whether keep_freed_memory has taken effect in this process


def freed_memory_kept() -> bool:
    """Whether keep_freed_memory has taken effect in this process (benchmark records)."""
    return _state["kept"]


def peak_memory() -> dict[str, int]:
    """This process's peak resident memory so far (libraries and everything else
    included; Linux's ru_maxrss is in KiB) and, where CUDA is in use, the caching
    allocator's peak of allocated bytes on the current device."""
    import resource

    out = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
    return out


def format_peak_memory(peak: dict[str, int]) -> str:
    text = f"peak memory: {peak['peak_rss_bytes'] / 1e6:,.0f} MB resident (whole process)"
    if "cuda_peak_allocated_bytes" in peak:
        text += f", {peak['cuda_peak_allocated_bytes'] / 1e6:,.0f} MB CUDA allocated"
    return text
