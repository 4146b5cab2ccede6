"""GPU benchmarks of the Triton GEMM family and lowrank_mm against what users would
pick instead, same process: torch._int_mm (cuBLAS int8), bf16 torch.matmul /
F.linear, torchao int8 (dynamic W8A8 and weight-only) when installed, and the
two-matmul low-rank composition. Medians from triton.testing.do_bench, which
clears the L2 cache before every timed call (so weights stream from HBM, as a
real model's layers do). Reported as TFLOP/s and as ratios.

Without a GPU (CI), the CI shape runs the same code on CPU with the Triton
interpreter, so the suite cannot rot; those times mean nothing and the JSON says
so (`"interpreter": true`).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SQUARE = (1024, 2048, 4096, 8192)
# (K, N) of real projections: BERT-base, Llama-2-7B.
PROJECTIONS = {
    "bert-base": ((768, 768), (768, 3072), (3072, 768)),
    "llama-2-7b": ((4096, 4096), (4096, 11008), (11008, 4096)),
}
DECODE_M = (1, 4, 16)
PREFILL_M = (128, 512, 2048, 8192)
LOWRANK = {"rank": 64, "k": 4096, "n": 4096}


@dataclass
class Case:
    op: str  # int8_mm | linear_w8a8 | linear_w8a16 | lowrank_mm | lowrank_mm_backward
    m: int
    k: int
    n: int
    rank: int = 0

    @property
    def flops(self) -> float:
        if self.op == "lowrank_mm":
            return 2.0 * self.m * self.rank * (self.k + self.n)
        if self.op == "lowrank_mm_backward":  # t, dt, dx, da, db
            return 2.0 * self.m * self.rank * (2 * self.k + 2 * self.n + self.k)
        return 2.0 * self.m * self.k * self.n


@dataclass
class GpuRow:
    op: str
    m: int
    k: int
    n: int
    rank: int
    impl: str
    median_ms: float
    tflops: float
    rel_err: float  # vs a float64 reference of the same quantized / bf16 inputs


def cases(shapes: str) -> list[Case]:
    if shapes == "ci":
        return [
            Case("int8_mm", 17, 64, 48),  # torch._int_mm on CUDA needs M > 16
            Case("linear_w8a8", 16, 64, 48),
            Case("linear_w8a16", 4, 64, 48),
            Case("lowrank_mm", 16, 64, 48, rank=8),
            Case("lowrank_mm_backward", 16, 64, 48, rank=8),
        ]
    out = [Case("int8_mm", s, s, s) for s in SQUARE]
    for k, n in (kn for kns in PROJECTIONS.values() for kn in kns):
        out += [Case("int8_mm", m, k, n) for m in PREFILL_M]
        out += [Case("linear_w8a8", m, k, n) for m in DECODE_M + PREFILL_M]
        out += [Case("linear_w8a16", m, k, n) for m in DECODE_M + (64, 256)]
    r, k, n = LOWRANK["rank"], LOWRANK["k"], LOWRANK["n"]
    for op in ("lowrank_mm", "lowrank_mm_backward"):
        out += [Case(op, m, k, n, rank=r) for m in (16, 2048, 8192)]
    return out


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _impls(case: Case, device: str) -> Iterator[tuple[str, Callable[[], object], object]]:
    """(name, zero-argument call, output to check) per implementation of `case`;
    the reference is float64 on the same (quantized) inputs."""
    import qkernels.triton as T
    from qkernels.triton import int8_gemm

    m, k, n, bf16 = case.m, case.k, case.n, torch.bfloat16
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(m, k, generator=gen).to(device, bf16)
    wq = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8).to(device)
    ws = (torch.rand(n, generator=gen) * 0.01 + 1e-3).to(device)
    w_bf16 = (wq.float() * ws[:, None]).to(bf16)  # the bf16 peer holds the same weight

    if case.op == "int8_mm":
        a = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8).to(device)
        sa = (torch.rand(m, generator=gen) * 0.01 + 1e-3).to(device)
        exact = (a.double() @ wq.double().T) * sa.double()[:, None] * ws.double()[None, :]
        a_bf16 = (a.float() * sa[:, None]).to(bf16)
        yield "qkernels int8_mm", lambda: T.int8_mm(a, wq, sa, ws, None, bf16), exact
        yield (
            "torch._int_mm",
            lambda: torch._int_mm(a, wq.T),
            exact / (sa.double()[:, None] * ws.double()),
        )
        yield (
            "torch._int_mm + dequant",
            lambda: (torch._int_mm(a, wq.T) * sa[:, None] * ws).to(bf16),
            exact,
        )
        yield "bf16 matmul", lambda: a_bf16 @ w_bf16.T, exact
        return
    if case.op in ("linear_w8a8", "linear_w8a16"):
        exact = x.double() @ w_bf16.double().T
        if case.op == "linear_w8a8":
            yield "qkernels linear_w8a8", lambda: T.linear_w8a8(x, wq, ws), exact
            yield (
                "qkernels w8a8 quantize-on-load",
                lambda: int8_gemm.linear_w8a8_prologue(x, wq, ws),
                exact,
            )
            yield "qkernels w8a8 two-pass", lambda: int8_gemm.linear_w8a8_two_pass(x, wq, ws), exact
        else:
            yield "qkernels linear_w8a16", lambda: T.linear_w8a16(x, wq, ws), exact
        yield "bf16 F.linear", lambda: F.linear(x, w_bf16), exact
        torchao = _torchao_linear(case.op, w_bf16, device)
        if torchao is not None:
            yield torchao[0], lambda: torchao[1](x), exact
        return
    r = case.rank
    a = (torch.randn(r, k, generator=gen) / k**0.5).to(device, bf16)
    b = (torch.randn(n, r, generator=gen) / r**0.5).to(device, bf16)
    if case.op == "lowrank_mm":
        exact = (x.double() @ a.double().T) @ b.double().T
        yield "qkernels lowrank_mm", lambda: T.lowrank_mm(x, a, b), exact
        yield "two matmuls", lambda: F.linear(F.linear(x, a), b), exact
        return
    g = torch.randn(m, n, generator=gen).to(device, bf16)
    exact = ((g.double() @ b.double()) @ a.double()).flatten()  # dx; da, db: see the tests

    def composition():
        t, dt_ = F.linear(x, a), g @ b
        return dt_ @ a, dt_.T @ x, g.T @ t

    yield (
        "qkernels lowrank_mm_backward",
        lambda: T.lowrank_mm_backward(g, x, a, b)[0].flatten(),
        exact,
    )
    yield "autograd two matmuls", lambda: composition()[0].flatten(), exact


def _torchao_linear(op: str, w_bf16: torch.Tensor, device: str):
    """torchao's int8 Linear of the same weight, or None when torchao is missing."""
    if device != "cuda":
        return None
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError:
        return None
    lin = torch.nn.Linear(
        w_bf16.shape[1], w_bf16.shape[0], bias=False, device=device, dtype=w_bf16.dtype
    )
    with torch.no_grad():
        lin.weight.copy_(w_bf16)
    model = torch.nn.Sequential(lin)
    if op == "linear_w8a8":
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return "torchao int8 dynamic", model
    quantize_(model, Int8WeightOnlyConfig())
    return "torchao int8 weight-only", model


def _timer(device: str, min_run_time: float) -> Callable[[Callable[[], object]], float]:
    if device == "cuda":
        from triton.testing import do_bench

        return lambda fn: do_bench(
            fn, warmup=25, rep=max(100, int(min_run_time * 1000)), return_mode="median"
        )
    from torch.utils.benchmark import Timer

    def cpu_median_ms(fn):
        t = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        return t.blocked_autorange(min_run_time=min_run_time).median * 1e3

    return cpu_median_ms


@torch.no_grad()
def run_gpu_suite(
    shapes: str = "full", min_run_time: float = 0.1, progress: bool = True
) -> list[GpuRow]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "qkernels bench --suite gpu: no CUDA GPU; on CPU it runs only under the Triton "
            "interpreter (TRITON_INTERPRET=1) as a smoke test"
        )
    if device == "cpu" and shapes != "ci":
        raise RuntimeError("qkernels bench --suite gpu: without a GPU only --shapes ci runs")
    from tqdm import tqdm

    time_ms = _timer(device, min_run_time)
    rows = []
    for case in tqdm(cases(shapes), desc="gpu suite", disable=not progress):
        for name, fn, exact in _impls(case, device):
            out = fn()
            ms = time_ms(fn)
            rows.append(
                GpuRow(
                    case.op,
                    case.m,
                    case.k,
                    case.n,
                    case.rank,
                    name,
                    ms,
                    case.flops / (ms * 1e-3) / 1e12,
                    _rel(out, exact.to(out.device)),
                )
            )
    return rows


PEERS = {
    "int8_mm": ("qkernels int8_mm", ("torch._int_mm", "torch._int_mm + dequant", "bf16 matmul")),
    "linear_w8a8": (
        "qkernels linear_w8a8",
        (
            "bf16 F.linear",
            "torchao int8 dynamic",
            "qkernels w8a8 quantize-on-load",
            "qkernels w8a8 two-pass",
        ),
    ),
    "linear_w8a16": ("qkernels linear_w8a16", ("bf16 F.linear", "torchao int8 weight-only")),
    "lowrank_mm": ("qkernels lowrank_mm", ("two matmuls",)),
    "lowrank_mm_backward": ("qkernels lowrank_mm_backward", ("autograd two matmuls",)),
}


def ratios(rows: list[GpuRow]) -> list[dict]:
    """Per case: peer median / qkernels median (> 1: qkernels is faster)."""
    by_case: dict[tuple, dict[str, GpuRow]] = {}
    for r in rows:
        by_case.setdefault((r.op, r.m, r.k, r.n, r.rank), {})[r.impl] = r
    out = []
    for (op, m, k, n, rank), impls in by_case.items():
        ours, peers = PEERS[op]
        entry = {"op": op, "m": m, "k": k, "n": n, "rank": rank}
        for peer in peers:
            if ours in impls and peer in impls:
                entry[f"vs {peer}"] = round(impls[peer].median_ms / impls[ours].median_ms, 3)
        out.append(entry)
    return out


def format_gpu_table(rows: list[GpuRow]) -> str:
    header = (
        f"{'op':<20} {'M':>5} {'K':>6} {'N':>6}  {'impl':<31} {'ms':>9} {'TFLOP/s':>8} "
        f"{'rel err':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.op:<20} {r.m:>5} {r.k:>6} {r.n:>6}  {r.impl:<31} {r.median_ms:>9.4f} "
            f"{r.tflops:>8.2f} {r.rel_err:>8.1e}"
        )
    lines += ["", "speedup of qkernels (peer median / qkernels median):"]
    for entry in ratios(rows):
        shape = f"{entry['op']:<20} {entry['m']:>5} {entry['k']:>6} {entry['n']:>6}"
        pairs = [f"{key[3:]} {val:.2f}x" for key, val in entry.items() if key.startswith("vs ")]
        lines.append(f"{shape}  " + ", ".join(pairs))
    return "\n".join(lines)


def gpu_environment() -> dict:
    import triton

    from qkernels.triton._common import chosen_configs

    cuda = torch.cuda.is_available()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if cuda else "cpu (Triton interpreter)",
        "capability": ".".join(map(str, torch.cuda.get_device_capability())) if cuda else None,
        "interpreter": not cuda,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "autotune_choices": chosen_configs(),
    }
