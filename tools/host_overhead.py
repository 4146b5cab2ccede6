"""Host time per call of the qkernels ops against torch's F.linear, on tiny problems
(the device's work is negligible, so the wall time of many back-to-back calls is what
Python, the dispatcher and the launches cost), and where it goes (cProfile).

Eager decoding is bound by this: a Llama-shaped model has 7 Linears per layer, each
paid once per token. Run on CPU or on a GPU:
    python tools/host_overhead.py [--device cuda] [--profile linear_w8a8]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

import torch

import qkernels
from qkernels import ops


def _calls(device: str) -> dict[str, Callable[[], object]]:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    x = torch.randn(1, 64, device=device, dtype=dtype)
    w = torch.randn(64, 64, device=device, dtype=dtype)
    wq = torch.randint(-127, 128, (64, 64), dtype=torch.int8, device=device)
    ws = torch.rand(64, device=device) / 100
    bias = torch.randn(64, device=device, dtype=dtype)
    layer = qkernels.nn.Int8Linear(64, 64, mode="w8a8").to(device)
    return {
        "F.linear": lambda: torch.nn.functional.linear(x, w, bias),
        "linear_w8a8": lambda: ops.linear_w8a8(x, wq, ws, bias),
        "linear_w8a8_act silu": lambda: ops.linear_w8a8_act(x, wq, ws, bias, "silu"),
        "linear_w8a16": lambda: ops.linear_w8a16(x, wq, ws, bias),
        "quantize_rowwise": lambda: ops.quantize_rowwise(x),
        "Int8Linear w8a8": lambda: layer(x),
    }


def host_us(fn: Callable[[], object], calls: int, rounds: int, sync: Callable[[], None]) -> float:
    """Median over rounds of the wall time per call, calls back to back, in us."""
    for _ in range(20):
        fn()
    sync()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backend", default=None, help="qkernels.set_backend for CUDA ops")
    parser.add_argument("--profile", nargs="*", default=[], help="ops to cProfile")
    args = parser.parse_args()
    if args.backend:
        qkernels.set_backend(args.backend)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    calls = _calls(args.device)
    times = {name: host_us(fn, args.calls, args.rounds, sync) for name, fn in calls.items()}
    print(f"device {args.device}, backend {args.backend or 'default'}: us per call (x F.linear)")
    for name, us in times.items():
        print(f"  {name:<22} {us:8.1f} us  {us / times['F.linear']:6.1f}x")
    for name in args.profile:
        fn = calls[name]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            fn()
        prof.disable()
        sync()
        print(f"\n--- cProfile of {args.calls} calls of {name} (tottime) ---")
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
