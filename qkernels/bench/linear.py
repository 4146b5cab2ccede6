"""Linear-layer benchmarks: qkernels against what users would pick instead,
all in one process, reported as medians and ratios.

"cold" weights rotate over enough copies of each layer that their total size
is twice the last-level cache, so every call streams its weight from DRAM as a
real model's layers do; "hot" reuses one copy (the cache flatters int8 there).
"""

from __future__ import annotations

import copy
import functools
import itertools
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from qkernels import timing
from qkernels.bench.report import (
    last_level_cache_bytes,
    ratio_table,
    ratios,
    table,
    timing_warnings,
)
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
    spread: float  # interquartile range / median over the interleaved rounds
    other_runnable: float  # other runnable tasks while timing (qkernels.timing)
    speedup_vs_fp32: float = float("nan")


@dataclass
class Impl:
    name: str
    x_dtype: torch.dtype
    build: Callable[[nn.Linear], Callable[[torch.Tensor], torch.Tensor]]


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


def _bnb_int8(lin: nn.Linear):
    """bitsandbytes' LLM.int8 Linear with int8 weights (threshold 0: no fp16 outlier
    columns, the int8 path throughout), quantized as it loads the float state_dict."""
    import bitsandbytes as bnb

    new = bnb.nn.Linear8bitLt(
        lin.in_features, lin.out_features, bias=lin.bias is not None,
        has_fp16_weights=False, threshold=0.0,
    )  # fmt: skip
    new.load_state_dict(lin.state_dict())
    return new


def _bnb_nf4(lin: nn.Linear):
    """bitsandbytes' NF4 Linear4bit (QLoRA's base), fp32 compute; on CPU its weight is
    quantized by Params4bit._quantize (what .to(device) does on a GPU)."""
    import bitsandbytes as bnb

    new = bnb.nn.Linear4bit(
        lin.in_features, lin.out_features, bias=lin.bias is not None, quant_type="nf4",
        compute_dtype=torch.float32, device="meta",
    )  # fmt: skip
    weight = bnb.nn.Params4bit(lin.weight.detach().clone(), requires_grad=False, quant_type="nf4")
    new.weight = weight._quantize("cpu")
    if lin.bias is not None:
        new.bias = nn.Parameter(lin.bias.detach().clone(), requires_grad=False)
    return new


def default_impls(compile_: bool = False) -> list[Impl]:
    impls = [
        Impl("fp32 nn.Linear", torch.float32, lambda lin: lin),
        Impl("bf16 nn.Linear", torch.bfloat16, lambda lin: lin.to(torch.bfloat16)),
        Impl("torch.ao dynamic int8", torch.float32, _torch_ao_dynamic),
        Impl("qkernels w8a8", torch.float32, lambda lin: Int8Linear.from_float(lin, "w8a8")),
        Impl(  # torch.ao's fbgemm also quantizes activations to 7 bits on x86 (reduce_range)
            "qkernels w8a8 7-bit act",
            torch.float32,
            lambda lin: Int8Linear.from_float(lin, "w8a8", act_bits=7),
        ),
        Impl("qkernels w8a16", torch.float32, lambda lin: Int8Linear.from_float(lin, "w8a16")),
        Impl(
            "qkernels w8a16 (bf16 x)",
            torch.bfloat16,
            lambda lin: Int8Linear.from_float(lin, "w8a16"),
        ),
    ]
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        impls.append(Impl("bnb int8 Linear8bitLt", torch.float32, _bnb_int8))
        impls.append(Impl("bnb nf4 Linear4bit", torch.float32, _bnb_nf4))
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
    """Every impl on one shape, timed in interleaved rounds (qkernels.timing)."""
    lin = nn.Linear(k, n)
    x = torch.randn(m, k)
    exact = lin(x).double()
    impls = list(impls)
    fns, errors = {}, {}
    for impl in impls:
        first = impl.build(copy.deepcopy(lin))
        xi = x.to(impl.x_dtype)
        out = first(xi).double()
        errors[impl.name] = ((out - exact).norm() / exact.norm()).item()
        copies = [first]
        if weights == "cold":
            per_copy = max(_weight_bytes(first), k * n)  # at least int8 bytes
            want = min(1024, -(-2 * last_level_cache_bytes() // per_copy))
            copies += [copy.deepcopy(first) for _ in range(want - 1)]
        fns[impl.name] = functools.partial(_rotating(copies), xi)
    rounds = 7
    timed = timing.compare(fns, rounds=rounds, min_sample_s=min_run_time / rounds)
    rows = []
    for impl in impls:
        t = timed.timings[impl.name]
        rows.append(
            Row(
                m,
                k,
                n,
                weights,
                impl.name,
                str(impl.x_dtype).replace("torch.", ""),
                t.median_ms,
                2 * m * k * n / t.median_ms / 1e6,
                errors[impl.name],
                round(t.spread, 3),
                timed.other_runnable,
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
    ("qkernels w8a8 7-bit act", "torch.ao dynamic int8"),
    ("qkernels w8a8", "fp32 nn.Linear"),
    ("qkernels w8a8", "torchao int8 dyn"),
    ("qkernels w8a8", "torchao int8 dyn compiled"),
    ("qkernels w8a16", "fp32 nn.Linear"),
    ("qkernels w8a16 (bf16 x)", "bf16 nn.Linear"),
    ("qkernels w8a8", "bnb int8 Linear8bitLt"),
    ("qkernels w8a16", "bnb nf4 Linear4bit"),
]


def summarize(rows: list[Row]) -> list[dict]:
    return ratios(rows, ("m", "k", "n", "weights"), lambda case: SUMMARY_PAIRS)


COLUMNS = (
    ("M", "m", ">5"),
    ("K", "k", ">5"),
    ("N", "n", ">5"),
    ("weights", "weights", ">7"),
    ("impl", "impl", "<26"),
    ("x", "x_dtype", ">8"),
    ("ms", "median_ms", ">9.3f"),
    ("GFLOP/s", "gflops", ">8.1f"),
    ("x fp32", "speedup_vs_fp32", ">7.2f"),
    ("IQR/med", "spread", ">8.2f"),
    ("rel err", "rel_err_vs_fp32", ">8.1e"),
)


def format_table(rows: list[Row]) -> str:
    text = table(rows, COLUMNS) + "\n\n" + ratio_table(summarize(rows), ("m", "k", "n", "weights"))
    return text + timing_warnings(rows)
