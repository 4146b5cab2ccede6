"""`qkernels bench --suite model`: where a whole Hugging Face model's time goes, fp32
against qkernels w8a8, by op class — int8 GEMMs, float GEMMs, quantize / dequantize,
attention, norms, activations, other — from torch.profiler's self CPU time, next to the
wall-clock medians of the whole forward. The numbers that justify (or not) each fusion."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import nn

from qkernels.bench.report import median_ms, table

# First match wins; names are the profiler's ("aten::addmm", "qkernels::linear_w8a8").
OP_CLASSES: list[tuple[str, re.Pattern]] = [
    ("quantize/dequant", re.compile(r"qkernels::(quantize|dequantize|fake_quant)|quantize")),
    ("int8 GEMM", re.compile(r"qkernels::|_int_mm|quantized::linear")),
    ("attention", re.compile(r"bmm|softmax|scaled_dot_product|flash_attention|_efficient_att")),
    ("float GEMM", re.compile(r"aten::(addmm|mm|matmul|linear)$")),
    ("norms", re.compile(r"layer_norm|rms_norm|group_norm")),
    ("activations", re.compile(r"gelu|silu|relu|tanh|sigmoid")),
]
CLASSES = [name for name, _ in OP_CLASSES] + ["other"]
CI_SHAPES = [(2, 16)]
FULL_SHAPES = [(16, 128), (1, 128)]


def op_class(name: str) -> str:
    for cls, pattern in OP_CLASSES:
        if pattern.search(name):
            return cls
    return "other"


@dataclass
class ModelRow:
    model: str
    impl: str  # "fp32" | "qkernels w8a8"
    batch: int
    seq: int
    median_ms: float
    classes_ms: dict  # op class -> self CPU ms per forward (profiler)
    top_ops: list  # [(op, ms)] the largest self times


def profile_classes(model: nn.Module, inputs: dict, repeats: int = 3) -> tuple[dict, list]:
    """Self CPU milliseconds per forward by op class, and the 8 largest ops."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(**inputs)  # warm (buffers, packing)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(**inputs)
    per_op = {}
    for event in prof.key_averages():
        per_op[event.key] = per_op.get(event.key, 0.0) + event.self_cpu_time_total / 1e3 / repeats
    classes = dict.fromkeys(CLASSES, 0.0)
    for name, ms in per_op.items():
        classes[op_class(name)] += ms
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:8]
    return {k: round(v, 3) for k, v in classes.items()}, [(k, round(v, 3)) for k, v in top]


def run_model_suite(
    model: nn.Module, tokenizer, name: str, shapes=FULL_SHAPES, min_run_time: float = 1.0
) -> list[ModelRow]:
    """fp32 and a w8a8 copy of `model` at each (batch, seq): profile and wall time."""
    import qkernels
    from qkernels.data import pydoc_paragraphs

    int8 = copy.deepcopy(model).eval()
    qkernels.swap(int8, "w8a8")
    texts = pydoc_paragraphs()
    rows = []
    for batch, seq in shapes:
        inputs = tokenizer(
            texts[:batch], padding="max_length", truncation=True, max_length=seq,
            return_tensors="pt",
        )  # fmt: skip
        for impl, m in (("fp32", model.eval()), ("qkernels w8a8", int8)):
            classes, top = profile_classes(m, dict(inputs))

            def forward(m=m, inputs=inputs):
                with torch.no_grad():
                    m(**inputs)

            ms = median_ms(forward, min_run_time)
            rows.append(ModelRow(name, impl, batch, seq, round(ms, 3), classes, top))
    return rows


def format_model_table(rows: list[ModelRow]) -> str:
    """Per shape: wall median and each class's self time (ms and share) per impl."""
    flat = []
    for r in rows:
        total = sum(r.classes_ms.values()) or 1.0
        entry = {"shape": f"{r.batch}x{r.seq}", "impl": r.impl, "median_ms": r.median_ms}
        for cls in CLASSES:
            entry[cls] = f"{r.classes_ms[cls]:.1f} ({100 * r.classes_ms[cls] / total:.0f}%)"
        flat.append(entry)
    columns = [("shape", "shape", "<7"), ("impl", "impl", "<14"), ("wall ms", "median_ms", ">8.1f")]
    columns += [(cls, cls, ">16") for cls in CLASSES]
    speed = []
    for fp32, ours in zip(rows[::2], rows[1::2], strict=True):
        speed.append(
            f"  {fp32.batch}x{fp32.seq}: w8a8 / fp32 wall {fp32.median_ms / ours.median_ms:.2f}x"
        )
    return (
        "self CPU ms per forward by op class (torch.profiler; share of the profiled total)\n"
        + table(flat, columns)
        + "\nspeedup of qkernels:\n"
        + "\n".join(speed)
    )
