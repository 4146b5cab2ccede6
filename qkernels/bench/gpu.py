"""GPU benchmarks of the GEMM family and lowrank_mm — each op as dispatched ("auto"),
and where the build has a CUDA C++ kernel, that kernel and the Triton one side by side —
against what users would pick instead, same process: torch._int_mm (cuBLAS int8), bf16
torch.matmul / F.linear, torchao int8 (dynamic W8A8 and weight-only) when installed, and the
two-matmul low-rank composition. Reported as TFLOP/s and as ratios.

Timing: medians of CUDA-graph replays (triton.testing.do_bench_cudagraph), so
launch overhead is out, as in a compiled or graph-captured model. Each replay runs
every implementation over several operand sets with their own weights, together at
least twice the L2 cache, so weights stream from HBM as a real model's layers do.
Each output is checked against float64 on the same inputs (rel_err).

Without a GPU (CI), the CI shape runs the same code on CPU with the Triton
interpreter, so the suite cannot rot; those times mean nothing and the JSON says
so (`"interpreter": true`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qkernels.bench import report
from qkernels.bench.report import median_ms

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
    if shapes == "quick":
        return _quick_cases()
    out = [Case("int8_mm", s, s, s) for s in SQUARE]
    for k, n in (kn for kns in PROJECTIONS.values() for kn in kns):
        out += [Case("int8_mm", m, k, n) for m in PREFILL_M]
        out += [Case("linear_w8a8", m, k, n) for m in DECODE_M + PREFILL_M]
        out += [Case("linear_w8a16", m, k, n) for m in DECODE_M + (64, 256)]
    r, k, n = LOWRANK["rank"], LOWRANK["k"], LOWRANK["n"]
    for op in ("lowrank_mm", "lowrank_mm_backward"):
        out += [Case(op, m, k, n, rank=r) for m in (16, 2048, 8192)]
    return out


def _quick_cases() -> list[Case]:
    """The shapes the GPU targets name, and every autotuning M bucket once (on Llama-7B's
    square projection): a few minutes, for a short GPU lease."""
    llama = PROJECTIONS["llama-2-7b"]
    out = [Case("int8_mm", 8192, 8192, 8192)]
    out += [Case("int8_mm", 2048, k, n) for k, n in llama]
    out += [Case("linear_w8a8", m, 4096, 4096) for m in (1, 16, 64, 256, 1024, 2048)]
    out += [Case("linear_w8a8", 2048, k, n) for k, n in llama[1:]]
    out += [Case("linear_w8a16", m, k, n) for k, n in llama for m in (1, 16)]
    out += [Case("linear_w8a16", m, 4096, 4096) for m in (2, 4, 8, 64, 256, 1024, 2048)]
    r, k, n = LOWRANK["rank"], LOWRANK["k"], LOWRANK["n"]
    for op in ("lowrank_mm", "lowrank_mm_backward"):
        out += [Case(op, m, k, n, rank=r) for m in (16, 8192)]
    return out


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _operands(case: Case, device: str, copy: int) -> dict[str, torch.Tensor]:
    """One set of inputs for `case` (copy i: its own weights, drawn from seed i)."""
    m, k, n, r, bf16 = case.m, case.k, case.n, case.rank, torch.bfloat16
    gen = torch.Generator(device=device).manual_seed(copy)  # drawn where they are used
    t = {
        "x": torch.randn(m, k, generator=gen, device=device).to(bf16),
        "wq": torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8, device=device),
        "ws": torch.rand(n, generator=gen, device=device) * 0.01 + 1e-3,
    }
    t["w_bf16"] = (t["wq"].float() * t["ws"][:, None]).to(bf16)  # the bf16 peer's same weight
    if case.op == "int8_mm":
        t["a"] = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8, device=device)
        t["sa"] = torch.rand(m, generator=gen, device=device) * 0.01 + 1e-3
        t["a_bf16"] = (t["a"].float() * t["sa"][:, None]).to(bf16)
    if case.op.startswith("lowrank"):
        t["la"] = (torch.randn(r, k, generator=gen, device=device) / k**0.5).to(bf16)
        t["lb"] = (torch.randn(n, r, generator=gen, device=device) / r**0.5).to(bf16)
        t["g"] = torch.randn(m, n, generator=gen, device=device).to(bf16)
    return t


def _exact(case: Case, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """float64 result on the same (quantized) inputs; lowrank backward: dx."""
    d = {name: v.double() for name, v in t.items()}
    if case.op == "int8_mm":
        return (d["a"] @ d["wq"].T) * d["sa"][:, None] * d["ws"][None, :]
    if case.op in ("linear_w8a8", "linear_w8a16"):
        return d["x"] @ d["w_bf16"].T
    if case.op == "lowrank_mm":
        return (d["x"] @ d["la"].T) @ d["lb"].T
    return (d["g"] @ d["lb"]) @ d["la"]


def _implementations(case: Case, device: str) -> dict[str, Callable[[dict], torch.Tensor]]:
    """name -> fn(operands) -> output comparable with _exact (after `_checkable`)."""
    from torch._library.triton import set_wrap_triton_enabled

    import qkernels.triton
    from qkernels.triton import int8_gemm

    # CUDA: through the ops, as users call them; CPU (the interpreter smoke test): the
    # Triton functions themselves, since the ops would run the C++ CPU kernels.
    ops = torch.ops.qkernels if device == "cuda" else qkernels.triton

    def direct(fn):  # a Triton twin called as the op's CUDA implementation calls it
        def call(*args):
            with set_wrap_triton_enabled(False):
                return fn(*args)

        return call

    prologue = direct(int8_gemm.linear_w8a8_prologue)
    two_pass = direct(int8_gemm.linear_w8a8_two_pass)

    bf16 = torch.bfloat16
    if case.op == "int8_mm":
        return {
            "qkernels int8_mm": lambda t: ops.int8_mm(
                t["a"], t["wq"], t["sa"], t["ws"], None, bf16
            ),
            "torch._int_mm": lambda t: torch._int_mm(t["a"], t["wq"].T),  # cuBLAS alone
            "torch._int_mm + dequant": lambda t: (
                torch._int_mm(t["a"], t["wq"].T) * t["sa"][:, None] * t["ws"]
            ).to(bf16),
            "bf16 matmul": lambda t: t["a_bf16"] @ t["w_bf16"].T,
        }
    if case.op == "linear_w8a8":
        impls = {
            "qkernels linear_w8a8": lambda t: ops.linear_w8a8(t["x"], t["wq"], t["ws"]),
            "qkernels w8a8 quantize-on-load": lambda t: prologue(t["x"], t["wq"], t["ws"]),
            "qkernels w8a8 two-pass": lambda t: two_pass(t["x"], t["wq"], t["ws"]),
            "bf16 F.linear": lambda t: F.linear(t["x"], t["w_bf16"]),
        }
    elif case.op == "linear_w8a16":
        impls = {
            "qkernels linear_w8a16": lambda t: ops.linear_w8a16(t["x"], t["wq"], t["ws"]),
            "bf16 F.linear": lambda t: F.linear(t["x"], t["w_bf16"]),
        }
    elif case.op == "lowrank_mm":
        return {
            "qkernels lowrank_mm": lambda t: ops.lowrank_mm(t["x"], t["la"], t["lb"]),
            "two matmuls": lambda t: F.linear(F.linear(t["x"], t["la"]), t["lb"]),
        }
    else:

        def composition(t):  # what autograd runs for F.linear(F.linear(x, a), b)
            x, a, b, g = t["x"], t["la"], t["lb"], t["g"]
            dt_ = g @ b
            dt_.T @ x, g.T @ F.linear(x, a)  # noqa: B018 - da, db: timed, not checked
            return dt_ @ a

        return {
            "qkernels lowrank_mm_backward": lambda t: ops.lowrank_mm_backward(
                t["g"], t["x"], t["la"], t["lb"]
            )[0],
            "autograd two matmuls": composition,
        }
    torchao = _torchao_linear(case.op, device)
    if torchao is not None:
        impls[torchao[0]] = torchao[1]
    return impls


def _with_backends(case: Case, device: str, impls: dict) -> dict:
    """On a GPU, beside the op as dispatched ("auto"): the CUDA C++ kernel and the Triton
    kernel of the same op, called directly, where the build has the C++ one."""
    from qkernels import cuda_kernels

    if device != "cuda" or case.op not in cuda_kernels.built_ops():
        return impls
    from torch._library.triton import set_wrap_triton_enabled

    import qkernels.triton

    cpp, tri = getattr(cuda_kernels, case.op), getattr(qkernels.triton, case.op)

    def triton(*a):
        with set_wrap_triton_enabled(False):  # as the op's CUDA implementation calls it
            return tri(*a)

    if case.op == "int8_mm":
        args = lambda t: (t["a"], t["wq"], t["sa"], t["ws"], None, torch.bfloat16)  # noqa: E731
    else:
        args = lambda t: (t["x"], t["wq"], t["ws"])  # noqa: E731
    return {
        **impls,
        f"qkernels {case.op} cuda-c++": lambda t: cpp(*args(t)),
        f"qkernels {case.op} triton": lambda t: triton(*args(t)),
    }


def _checkable(name: str, out: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The output in _exact's terms: torch._int_mm's raw int32, rescaled outside
    the timed call (it is timed as cuBLAS alone)."""
    return out * (t["sa"][:, None] * t["ws"]) if name == "torch._int_mm" else out


def _torchao_linear(op: str, device: str):
    """(name, fn(operands)) running torchao's int8 Linear of the same weight, or None
    when torchao is missing. Its quantized modules are built once per operand set."""
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
    config, name = (
        (Int8DynamicActivationInt8WeightConfig(), "torchao int8 dynamic")
        if op == "linear_w8a8"
        else (Int8WeightOnlyConfig(), "torchao int8 weight-only")
    )
    built: dict[int, torch.nn.Module] = {}

    def run(t):
        key = id(t["w_bf16"])
        if key not in built:
            w = t["w_bf16"]
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=device, dtype=w.dtype)
            lin.weight.data.copy_(w)
            built[key] = torch.nn.Sequential(lin)
            quantize_(built[key], config)
        return built[key](t["x"])

    return name, run


def _copies(case: Case, device: str) -> int:
    """Operand sets to rotate through, so that one pass over all of them moves at
    least twice the L2 cache in int8 weights (larger weights: more than that)."""
    if device != "cuda":
        return 2
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(1, min(16, -(-2 * l2 // (case.n * case.k))))


def _timer(device: str, min_run_time: float) -> Callable[[Callable[[], object]], float]:
    """Median ms of one call of fn. CUDA: replays of a CUDA graph of fn (launch
    overhead out, as in a compiled or graph-captured model)."""
    if device == "cuda":
        from triton.testing import do_bench_cudagraph

        rep = max(20, int(min_run_time * 1000))  # ms of replays per sample, 10 samples
        return lambda fn: do_bench_cudagraph(fn, rep=rep, return_mode="median")
    return lambda fn: median_ms(fn, min_run_time)


@torch.no_grad()
def run_gpu_suite(
    shapes: str = "full",
    min_run_time: float = 0.1,
    progress: bool = True,
    ops: tuple[str, ...] | None = None,
    ms: tuple[int, ...] | None = None,
) -> list[GpuRow]:
    """Every case of `shapes` (only those of `ops`, and of the M in `ms`, if given), each
    implementation timed."""
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
    unknown = set(ops or ()) - set(PEERS)
    if unknown:
        raise ValueError(
            f"qkernels bench --ops: unknown {sorted(unknown)}; choose from {list(PEERS)}"
        )
    todo = [c for c in cases(shapes) if (ops is None or c.op in ops) and (ms is None or c.m in ms)]
    for case in tqdm(todo, desc="gpu suite", disable=not progress):
        sets = [_operands(case, device, i) for i in range(_copies(case, device))]
        exact = _exact(case, sets[0])
        for name, fn in _with_backends(case, device, _implementations(case, device)).items():
            out = _checkable(name, fn(sets[0]), sets[0])  # also warms up (compile, autotune)
            for t in sets[1:]:
                fn(t)
            ms = time_ms(lambda fn=fn, sets=sets: [fn(t) for t in sets]) / len(sets)
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
        del sets
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


KEY = ("op", "m", "k", "n", "rank")


def ratios(rows: list[GpuRow]) -> list[dict]:
    """Per case: peer median / qkernels median (> 1: qkernels is faster)."""
    return report.ratios(rows, KEY, _pairs)


def _pairs(case: tuple) -> list[tuple[str, str]]:
    """qkernels as dispatched against each peer; where both ran, the CUDA C++ kernel
    against Triton and against each peer (pairs whose rows are missing are skipped)."""
    ours, peers = PEERS[case[0]]
    cpp = f"qkernels {case[0]} cuda-c++"
    return [
        *((ours, peer) for peer in peers),
        (cpp, f"qkernels {case[0]} triton"),
        *((cpp, peer) for peer in peers),
    ]


COLUMNS = (
    ("op", "op", "<20"),
    ("M", "m", ">5"),
    ("K", "k", ">6"),
    ("N", "n", ">6"),
    ("impl", "impl", "<31"),
    ("ms", "median_ms", ">9.4f"),
    ("TFLOP/s", "tflops", ">8.2f"),
    ("rel err", "rel_err", ">8.1e"),
)


def format_gpu_table(rows: list[GpuRow]) -> str:
    return report.table(rows, COLUMNS) + "\n\n" + report.ratio_table(ratios(rows), KEY)


def gpu_environment() -> dict:
    return report.environment(gpu=True)
