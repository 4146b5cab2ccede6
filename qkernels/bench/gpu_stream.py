"""GPU benchmarks of the memory-bound ops and the LSTM, same process: fake-quant and
LSQ forward and forward+backward on each CUDA backend (C++ and Triton) as achieved
bandwidth and as a fraction of the device-to-device copy bandwidth measured in the same
run (bytes read plus written), and Int8LSTM against cuDNN's nn.LSTM in fp16 and bf16.

Bytes counted are the fewest each op must move: forward reads x and writes y; the STE and
LSQ backwards read grad and x and write dx (the per-channel sums are a rounding error).
Times: medians of triton.testing.do_bench (CUDA events, L2 flushed between calls).
Without a GPU (CI), the CI shapes run the same code on CPU tensors (the C++ CPU kernels,
one "cpu" backend) so the suite cannot rot; those times mean nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from qkernels.bench.report import median_ms, table

FQ_SHAPE = (16384, 8192)  # 128M elements: 256 MB in bf16, far past the L2
LSTM_SHAPE = (2, 35, 20, 650)  # layers, T, B, H: PyTorch's word-language-model shape
CI_FQ_SHAPE, CI_LSTM_SHAPE = (64, 256), (2, 5, 3, 16)
QMIN, QMAX = -128, 127


@dataclass
class StreamRow:
    op: str  # fake_quant | fake_quant_group | fake_quant_lsq
    layout: str
    dtype: str
    backend: str  # cuda (C++) | triton | cpu (the CI smoke run)
    passes: str  # fwd | fwd+bwd
    median_ms: float
    gb_per_s: float
    of_copy: float  # fraction of the measured copy bandwidth


@dataclass
class LstmGpuRow:
    impl: str
    median_ms: float
    rel_err_vs_fp32: float
    speedup_vs_cudnn_fp16: float = float("nan")


def _median_ms(fn: Callable[[], object], device: str) -> float:
    if device != "cuda":
        return median_ms(fn, 0.01)
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=50, return_mode="median")


def copy_bandwidth(device: str = "cuda", nbytes: int = 1 << 31) -> float:
    """GB/s of a copy of `nbytes` on `device`, counting bytes read and written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = _median_ms(lambda: dst.copy_(src), device)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def _fq_cases(shape: tuple[int, int], device: str) -> list[tuple[str, str, Callable, Callable]]:
    """(op, layout, forward(x), backward(g, x)) per fake-quant layout."""
    q = torch.ops.qkernels
    rows, cols = shape
    gen = torch.Generator(device=device).manual_seed(0)

    def params(*shape: int):
        scale = torch.rand(shape, generator=gen, device=device) / 10 + 0.01
        zp = torch.randint(-8, 8, shape, generator=gen, device=device, dtype=torch.int32)
        return scale, zp

    out = []
    for layout, n, axis in (("per-tensor", 1, 0), ("per-channel", rows, 0)):
        s, z = params(n)
        out.append(
            (
                "fake_quant",
                layout,
                lambda x, s=s, z=z, a=axis: q.fake_quant(x, s, z, a, QMIN, QMAX),
                lambda g, x, s=s, z=z, a=axis: q.fake_quant_backward(g, x, s, z, a, QMIN, QMAX),
            )
        )
    s, z = params(rows, cols // 128)  # one pair per group of 128 along the last dim
    out.append(
        (
            "fake_quant_group",
            "group 128",
            lambda x, s=s, z=z: q.fake_quant_group(x, s, z, 128, QMIN, QMAX),
            lambda g, x, s=s, z=z: q.fake_quant_group_backward(g, x, s, z, 128, QMIN, QMAX),
        )
    )
    s, z = params(rows)
    zf = z.float()  # LSQ learns a float zero point
    factor = 1.0 / (cols * QMAX) ** 0.5
    out.append(
        (
            "fake_quant_lsq",
            "per-channel",
            lambda x: q.fake_quant_lsq(x, s, zf, 0, QMIN, QMAX, factor),
            lambda g, x: q.fake_quant_lsq_backward(g, x, s, zf, 0, QMIN, QMAX, factor),
        )
    )
    return out


def run_fake_quant(
    shape: tuple[int, int] = FQ_SHAPE,
    dtypes=(torch.bfloat16, torch.float32),
    device: str = "cuda",
) -> tuple[float, list[StreamRow]]:
    """The copy bandwidth, and one row per (layout, dtype, backend, passes)."""
    from qkernels import _backend

    copy_gbs = copy_bandwidth(device, 1 << 31 if device == "cuda" else 1 << 20)
    rows = []
    saved = dict(_backend._chosen)
    try:
        for dtype in dtypes:
            rows += _time_layouts(shape, dtype, copy_gbs, device)
    finally:
        _backend._chosen.clear()
        _backend._chosen.update(saved)
    return copy_gbs, rows


def _time_layouts(
    shape: tuple[int, int], dtype: torch.dtype, copy_gbs: float, device: str
) -> list[StreamRow]:
    from qkernels import _backend, set_backend

    x = torch.randn(shape, device=device).to(dtype) * 4
    g = torch.randn(shape, device=device).to(dtype)
    nbytes = x.element_size() * x.numel()
    rows = []
    for op, layout, fwd, bwd in _fq_cases(shape, device):
        for backend in ("cuda", "triton") if device == "cuda" else ("cpu",):
            if backend == "cuda" and op not in _backend.cuda_cpp_ops():
                continue
            if backend != "cpu":
                set_backend(backend, [op, f"{op}_backward"])
            timed = (
                ("fwd", lambda fwd=fwd: fwd(x), 2 * nbytes),
                ("fwd+bwd", lambda fwd=fwd, bwd=bwd: (fwd(x), bwd(g, x)), 5 * nbytes),
            )
            for passes, fn, moved in timed:
                ms = _median_ms(fn, device)
                gbs = moved / (ms * 1e-3) / 1e9
                name = str(dtype).removeprefix("torch.")
                rows.append(StreamRow(op, layout, name, backend, passes, ms, gbs, gbs / copy_gbs))
    return rows


@torch.no_grad()
def run_lstm(
    shape: tuple[int, int, int, int] = LSTM_SHAPE, device: str = "cuda"
) -> list[LstmGpuRow]:
    """Int8LSTM (fp32 input; the int8 step kernel) against cuDNN nn.LSTM in fp16 / bf16 /
    fp32, all of the same trained weights; errors against float64."""
    from qkernels.nn import Int8LSTM

    layers, steps, batch, hidden = shape
    lstm = nn.LSTM(hidden, hidden, num_layers=layers).to(device).eval()
    x = torch.randn(steps, batch, hidden, device=device)
    exact = copy.deepcopy(lstm).double()(x.double())[0]
    lib = "cuDNN" if device == "cuda" else "CPU"
    impls = {
        f"{lib} fp16 nn.LSTM": (copy.deepcopy(lstm).half(), x.half()),
        f"{lib} bf16 nn.LSTM": (copy.deepcopy(lstm).bfloat16(), x.bfloat16()),
        f"{lib} fp32 nn.LSTM": (lstm, x),
        "qkernels Int8LSTM": (Int8LSTM.from_float(lstm).eval(), x),
    }
    rows = []
    for name, (module, xi) in impls.items():
        out = module(xi)[0].double()
        err = ((out - exact).norm() / exact.norm()).item()
        rows.append(LstmGpuRow(name, _median_ms(lambda m=module, xi=xi: m(xi), device), err))
    for r in rows:
        r.speedup_vs_cudnn_fp16 = rows[0].median_ms / r.median_ms
    return rows


def run_gpu_stream_suite(ci: bool = False) -> tuple[float, list[StreamRow], list[LstmGpuRow]]:
    """(copy GB/s, fake-quant rows, LSTM rows); without a GPU only the CI shapes, on CPU
    tensors (a smoke run: the times mean nothing)."""
    if torch.cuda.is_available():
        copy_gbs, fq_rows = run_fake_quant()
        return copy_gbs, fq_rows, run_lstm()
    if not ci:
        raise RuntimeError(
            "qkernels bench --suite gpu-stream: no CUDA GPU; on CPU only --shapes ci runs"
        )
    copy_gbs, fq_rows = run_fake_quant(CI_FQ_SHAPE, device="cpu")
    return copy_gbs, fq_rows, run_lstm(CI_LSTM_SHAPE, device="cpu")


STREAM_COLUMNS = (
    ("op", "op", "<17"),
    ("layout", "layout", "<12"),
    ("dtype", "dtype", "<9"),
    ("backend", "backend", "<7"),
    ("passes", "passes", "<8"),
    ("ms", "median_ms", ">8.3f"),
    ("GB/s", "gb_per_s", ">7.0f"),
    ("of copy", "of_copy", ">7.2f"),
)
LSTM_COLUMNS = (
    ("impl", "impl", "<22"),
    ("ms", "median_ms", ">8.3f"),
    ("x fp16 LSTM", "speedup_vs_cudnn_fp16", ">11.2f"),
    ("rel err", "rel_err_vs_fp32", ">8.1e"),
)


def format_tables(copy_gbs: float, fq: list[StreamRow], lstm: list[LstmGpuRow]) -> str:
    head = f"copy on the device: {copy_gbs:.0f} GB/s (bytes read + written)"
    return "\n\n".join((head, table(fq, STREAM_COLUMNS), table(lstm, LSTM_COLUMNS)))
