"""Fake-quant and QAT benchmarks: qkernels against torch's own fake-quant ops, a
plain multiply (the memory-traffic floor of an elementwise fwd+bwd) and a plain
nn.Linear training step, all in one process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from qkernels import ops
from qkernels.bench.report import median_ms, table
from qkernels.nn import QATLinear


@dataclass
class QatRow:
    case: str
    impl: str
    median_ms: float
    vs_torch: float | None = None  # torch's op time / this time
    vs_multiply: float | None = None  # this time / plain multiply time (1.0 = the floor)
    vs_linear_step: float | None = None  # training steps: this step / nn.Linear's step


def _fwd_bwd(
    forward: Callable[[], torch.Tensor], inputs: list[torch.Tensor], grad: torch.Tensor
) -> Callable[[], object]:
    # autograd.grad, not .backward(): accumulating into .grad would add a pass.
    return lambda: torch.autograd.grad(forward(), inputs, grad)


def fake_quant_cases(rows: int, cols: int):
    """(case, {impl: (forward, inputs)}) for per-channel and per-tensor, STE and LSQ."""
    x = torch.randn(rows, cols, requires_grad=True)
    s_ch = torch.rand(rows) * 0.02 + 0.01
    z_ch = torch.zeros(rows, dtype=torch.int32)
    s_t, z_t = torch.tensor([0.02]), torch.tensor([0], dtype=torch.int32)
    ls_ch = s_ch.clone().requires_grad_()
    lz_ch = torch.zeros(rows, requires_grad=True)
    ls_t, lz_t = s_t.clone().requires_grad_(), torch.zeros(1, requires_grad=True)
    mult = s_ch[:, None]
    yield (
        "per-channel fake_quant",
        {
            "qkernels": (lambda: ops.fake_quant(x, s_ch, z_ch, 0, -128, 127), [x]),
            "torch": (
                lambda: torch.fake_quantize_per_channel_affine(x, s_ch, z_ch, 0, -128, 127),
                [x],
            ),
            "multiply": (lambda: x * mult, [x]),
        },
    )
    yield (
        "per-tensor fake_quant",
        {
            "qkernels": (lambda: ops.fake_quant(x, s_t, z_t, 0, -128, 127), [x]),
            "torch": (lambda: torch.fake_quantize_per_tensor_affine(x, s_t, z_t, -128, 127), [x]),
            "multiply": (lambda: x * mult, [x]),
        },
    )
    yield (
        "per-channel fake_quant_lsq",
        {
            "qkernels": (
                lambda: ops.fake_quant_lsq(x, ls_ch, lz_ch, 0, -128, 127, 1.0),
                [x, ls_ch, lz_ch],
            ),
            "torch": (
                lambda: torch._fake_quantize_learnable_per_channel_affine(
                    x, ls_ch, lz_ch, 0, -128, 127, 1.0
                ),
                [x, ls_ch, lz_ch],
            ),
            "multiply": (lambda: x * mult, [x]),
        },
    )
    yield (
        "per-tensor fake_quant_lsq",
        {
            "qkernels": (
                lambda: ops.fake_quant_lsq(x, ls_t, lz_t, 0, -128, 127, 1.0),
                [x, ls_t, lz_t],
            ),
            "torch": (
                lambda: torch._fake_quantize_learnable_per_tensor_affine(
                    x, ls_t, lz_t, -128, 127, 1.0
                ),
                [x, ls_t, lz_t],
            ),
            "multiply": (lambda: x * mult, [x]),
        },
    )


def run_fake_quant_suite(
    rows: int = 4096, cols: int = 4096, min_run_time: float = 1.0, progress: bool = True
) -> list[QatRow]:
    from tqdm import tqdm

    grad = torch.randn(rows, cols)
    out = []
    for case, impls in tqdm(
        list(fake_quant_cases(rows, cols)),
        desc="fake-quant bench",
        disable=not progress,
        leave=False,
    ):
        times = {
            name: median_ms(_fwd_bwd(f, inputs, grad), min_run_time)
            for name, (f, inputs) in impls.items()
        }
        for name, t in times.items():
            out.append(
                QatRow(
                    f"{case} {rows}x{cols} fwd+bwd",
                    name,
                    t,
                    times["torch"] / t,
                    t / times["multiply"],
                )
            )
    return out


def run_qat_step_suite(
    m: int = 2048, k: int = 1024, n: int = 1024, min_run_time: float = 1.0, progress: bool = True
) -> list[QatRow]:
    from tqdm import tqdm

    # x requires grad: the layer sits inside a network, so every step also computes
    # dL/dx (and LSQ needs it for its activation scale anyway).
    x, grad = torch.randn(m, k, requires_grad=True), torch.randn(m, n)
    base = nn.Linear(k, n)
    impls: dict[str, nn.Module] = {"nn.Linear": base}
    for act in ("dynamic", "lsq"):
        impls[f"QATLinear act={act}"] = QATLinear.from_float(base, act=act)
    impls["QATLinear act=lsq weight_lsq"] = QATLinear.from_float(base, act="lsq", weight_lsq=True)
    out = []
    for name, module in tqdm(
        impls.items(), desc="QAT step bench", disable=not progress, leave=False
    ):
        params = [x] + [p for p in module.parameters() if p.requires_grad]
        t = median_ms(_fwd_bwd(lambda mod=module: mod(x), params, grad), min_run_time)
        out.append(QatRow(f"layer training step M={m} K={k} N={n} fp32", name, t))
    linear = out[0].median_ms
    for r in out:
        r.vs_linear_step = r.median_ms / linear
    return out


COLUMNS = (
    ("case", "case", "<48"),
    ("impl", "impl", "<30"),
    ("ms", "median_ms", ">9.2f"),
    ("torch/this", "vs_torch", ">10.2f"),
    ("this/mult", "vs_multiply", ">9.2f"),
    ("step / nn.Linear step", "vs_linear_step", ">21.2f"),
)


def format_qat_table(rows: list[QatRow]) -> str:
    return table(rows, COLUMNS)
