"""Linear-layer benchmarks: qkernels against what users would pick instead,
all in one process, reported as medians and ratios.

"cold" weights rotate over enough copies of each layer that their total size
is twice the last-level cache, so every call streams its weight from DRAM as a
real model's layers do; "hot" reuses one copy (the cache flatters int8 there).
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import os
import platform
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.benchmark import Timer

from qkernels.nn import Int8Linear

FULL_SHAPES = [
    (m, k, n)
    for m in (1, 16, 128, 2048)
    for k, n in ((768, 768), (768, 3072), (1024, 1024), (4096, 4096))
]
CI_SHAPES = [(16, 256, 512)]


@dataclass
class Row:
    m: int
    k: int
    n: int
    weights: str  # hot | cold
    impl: str
    x_dtype: str
    median_ms: float
    gflops: float
    rel_err_vs_fp32: float
    speedup_vs_fp32: float = float("nan")


@dataclass
class Impl:
    name: str
    x_dtype: torch.dtype
    build: Callable[[nn.Linear], Callable[[torch.Tensor], torch.Tensor]]


def last_level_cache_bytes() -> int:
    """L3 size from sysfs (index3), or 32 MiB when it cannot be read."""
    for index in range(4, -1, -1):
        path = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size")
        if path.exists():
            text = path.read_text().strip().upper()
            unit = {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1)
            return int(text.rstrip("KM")) * unit
    return 32 << 20


def _torch_ao_dynamic(lin: nn.Linear):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)


def _torchao_int8(compile_: bool):
    def build(lin: nn.Linear):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        model = nn.Sequential(lin)
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return torch.compile(model) if compile_ else model

    return build


def default_impls(compile_: bool = False) -> list[Impl]:
    impls = [
        Impl("fp32 nn.Linear", torch.float32, lambda lin: lin),
        Impl("bf16 nn.Linear", torch.bfloat16, lambda lin: lin.to(torch.bfloat16)),
        Impl("torch.ao dynamic int8", torch.float32, _torch_ao_dynamic),
        Impl("qkernels w8a8", torch.float32, lambda lin: Int8Linear.from_float(lin, "w8a8")),
        Impl("qkernels w8a16", torch.float32, lambda lin: Int8Linear.from_float(lin, "w8a16")),
        Impl(
            "qkernels w8a16 (bf16 x)",
            torch.bfloat16,
            lambda lin: Int8Linear.from_float(lin, "w8a16"),
        ),
    ]
    try:
        import torchao  # noqa: F401
    except ImportError:
        return impls
    impls.append(
        Impl(
            "torchao int8 dyn" + (" compiled" if compile_ else ""),
            torch.float32,
            _torchao_int8(compile_),
        )
    )
    return impls


def _weight_bytes(module) -> int:
    seen = 0
    for t in itertools.chain(module.parameters(), module.buffers()):
        seen += t.numel() * t.element_size()
    # torch.ao's packed params hide their weight from parameters()/buffers().
    return seen or 1


def _rotating(modules: list) -> Callable[[torch.Tensor], torch.Tensor]:
    """Calls the next module of the list each time, round-robin."""
    cycle = itertools.cycle(modules)
    return lambda x: next(cycle)(x)


@torch.no_grad()
def bench_shape(
    m: int, k: int, n: int, weights: str, impls: Iterable[Impl], min_run_time: float
) -> list[Row]:
    lin = nn.Linear(k, n)
    x = torch.randn(m, k)
    exact = lin(x).double()
    rows = []
    for impl in impls:
        first = impl.build(copy.deepcopy(lin))
        xi = x.to(impl.x_dtype)
        out = first(xi).double()
        err = ((out - exact).norm() / exact.norm()).item()
        copies = [first]
        if weights == "cold":
            per_copy = max(_weight_bytes(first), k * n)  # at least int8 bytes
            want = min(1024, -(-2 * last_level_cache_bytes() // per_copy))
            copies += [copy.deepcopy(first) for _ in range(want - 1)]
        timer = Timer(
            "f(x)", globals={"f": _rotating(copies), "x": xi}, num_threads=torch.get_num_threads()
        )
        median = timer.blocked_autorange(min_run_time=min_run_time).median
        rows.append(
            Row(
                m,
                k,
                n,
                weights,
                impl.name,
                str(impl.x_dtype).replace("torch.", ""),
                median * 1e3,
                2 * m * k * n / median / 1e9,
                err,
            )
        )
    fp32 = next((r.median_ms for r in rows if r.impl == "fp32 nn.Linear"), float("nan"))
    for r in rows:
        r.speedup_vs_fp32 = fp32 / r.median_ms
    return rows


def run_linear_suite(
    shapes: list[tuple[int, int, int]] = FULL_SHAPES,
    weights: str = "both",
    compile_: bool = False,
    min_run_time: float = 0.3,
    progress: bool = True,
) -> list[Row]:
    from tqdm import tqdm

    modes = ["hot", "cold"] if weights == "both" else [weights]
    impls = default_impls(compile_)
    jobs = [(s, w) for s in shapes for w in modes]
    rows: list[Row] = []
    for (m, k, n), w in tqdm(jobs, desc="linear bench", disable=not progress, leave=False):
        rows += bench_shape(m, k, n, w, impls, min_run_time)
    return rows


# Ratios in the summary: (qkernels impl, peer); > 1 means qkernels is faster.
SUMMARY_PAIRS = [
    ("qkernels w8a8", "torch.ao dynamic int8"),
    ("qkernels w8a8", "fp32 nn.Linear"),
    ("qkernels w8a8", "torchao int8 dyn"),
    ("qkernels w8a8", "torchao int8 dyn compiled"),
    ("qkernels w8a16", "fp32 nn.Linear"),
    ("qkernels w8a16 (bf16 x)", "bf16 nn.Linear"),
]


def summarize(rows: list[Row]) -> list[dict]:
    by_key: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        by_key.setdefault((r.m, r.k, r.n, r.weights), {})[r.impl] = r
    out = []
    for (m, k, n, w), impls in by_key.items():
        entry = {"m": m, "k": k, "n": n, "weights": w}
        for ours, peer in SUMMARY_PAIRS:
            if ours in impls and peer in impls:
                entry[f"{ours} / {peer}"] = impls[peer].median_ms / impls[ours].median_ms
        out.append(entry)
    return out


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'M':>5} {'K':>5} {'N':>5} {'weights':>7}  {'impl':<26} {'x':>8} "
        f"{'ms':>9} {'GFLOP/s':>8} {'x fp32':>7} {'rel err':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.m:>5} {r.k:>5} {r.n:>5} {r.weights:>7}  {r.impl:<26} {r.x_dtype:>8} "
            f"{r.median_ms:>9.3f} {r.gflops:>8.1f} {r.speedup_vs_fp32:>7.2f} "
            f"{r.rel_err_vs_fp32:>8.1e}"
        )
    summary = summarize(rows)
    if summary:
        pairs = [f"{a} / {b}" for a, b in SUMMARY_PAIRS if any(f"{a} / {b}" in s for s in summary)]
        lines += ["", "speedup of qkernels (peer median / qkernels median):"]
        short = [p.replace("qkernels ", "").replace(" nn.Linear", "") for p in pairs]
        lines.append(
            f"{'M':>5} {'K':>5} {'N':>5} {'weights':>7}  " + "  ".join(f"{s:>22}" for s in short)
        )
        for s in summary:
            lines.append(
                f"{s['m']:>5} {s['k']:>5} {s['n']:>5} {s['weights']:>7}  "
                + "  ".join(f"{s.get(p, float('nan')):>22.2f}" for p in pairs)
            )
    return "\n".join(lines)


def environment() -> dict:
    from qkernels import _C

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu",
        "cpu": _cpu_model(),
        "cpu_features": _C.cpu_features(),
        "threads": torch.get_num_threads(),
        "l3_bytes": last_level_cache_bytes(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def save_results(rows: list, path: str | os.PathLike) -> Path:
    """Rows (any dataclass) with the environment; Linear rows also get the ratio summary."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"environment": environment(), "rows": [asdict(r) for r in rows]}
    if rows and isinstance(rows[0], Row):
        payload["summary"] = summarize(rows)
    path.write_text(json.dumps(payload, indent=1))
    return path
