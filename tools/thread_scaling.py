"""What threads do to the int8 kernels: fp32 nn.Linear, qkernels w8a8 and w8a16 at 1 and
2 threads (torch.set_num_threads, what OMP_NUM_THREADS sets at start-up), with the
machine idle and with one core kept busy by another process (a second job, a browser),
interleaved in one process per condition; medians, interquartile spread and ratios.

    python tools/thread_scaling.py [--out benchmarks/results/threads-cpu-DATE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from qkernels import timing
from qkernels.bench.report import environment
from qkernels.nn import Int8Linear

# (rows, in, out): a BERT-base MLP layer over 128 tokens, and one decode token through a
# TinyLlama-sized MLP projection (weight-streaming bound).
SHAPES = [(128, 768, 3072), (1, 2048, 5632)]
IMPLS = {
    "fp32 nn.Linear": lambda lin: lin,
    "qkernels w8a8": lambda lin: Int8Linear.from_float(lin, "w8a8"),
    "qkernels w8a16": lambda lin: Int8Linear.from_float(lin, "w8a16"),
}


@contextlib.contextmanager
def busy_core(busy: bool):
    """Another process spinning on one core while the block runs."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


@torch.no_grad()
def measure(threads: int, busy: bool) -> list[dict]:
    torch.set_num_threads(threads)
    rows = []
    for m, k, n in SHAPES:
        torch.manual_seed(0)
        lin = nn.Linear(k, n)
        x = torch.randn(m, k)
        fns = {name: functools.partial(build(lin), x) for name, build in IMPLS.items()}
        with busy_core(busy):
            timed = timing.compare(fns, rounds=9, min_sample_s=0.03)
        for name, t in timed.timings.items():
            rows.append({
                "m": m, "k": k, "n": n, "threads": threads, "busy_core": busy, "impl": name,
                "median_ms": t.median_ms, "spread": round(t.spread, 3),
                "vs_fp32": timed.ratio("fp32 nn.Linear", name),
            })  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'shape':>16} {'threads':>7} {'busy core':>9} {'impl':<16} {'ms':>8} "
             f"{'IQR/med':>7} {'x fp32':>7}"]  # fmt: skip
    for r in rows:
        shape = f"{r['m']}x{r['k']}x{r['n']}"
        lines.append(
            f"{shape:>16} {r['threads']:>7} {'yes' if r['busy_core'] else 'no':>9} "
            f"{r['impl']:<16} {r['median_ms']:>8.3f} {r['spread']:>7.2f} {r['vs_fp32']:>7.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    stamp = dt.date.today().isoformat()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"benchmarks/results/threads-cpu-{stamp}.json")
    args = parser.parse_args()
    rows = []
    for busy in (False, True):
        for threads in (1, 2):
            rows += measure(threads, busy)
    print(format_table(rows))
    env = environment()
    env["cpus"] = os.cpu_count()
    Path(args.out).write_text(json.dumps({"environment": env, "rows": rows}, indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
