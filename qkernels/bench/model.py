"""`qkernels bench --suite model`: where a whole Hugging Face model's time goes, fp32
against qkernels w8a8, by op class — int8 GEMMs, float GEMMs, quantize / dequantize,
attention, norms, activations, other — from torch.profiler's self CPU time, next to the
wall-clock medians of the whole forward (every model timed in the same interleaved
rounds, qkernels.timing). The numbers that justify (or not) each fusion. With
`--compile`, both models also run under `torch.compile` (Inductor, CPU): the qkernels
ops stay single ops in the graph, Inductor fuses what lies between them."""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch._dynamo.utils import counters

from qkernels import timing
from qkernels.bench.model_peers import (
    ORT_INT8,
    PT2E_DYNAMIC,
    PT2E_INT8,
    TORCHAO_INT8,
    build_peers,
)
from qkernels.bench.report import table, timing_warnings

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
W8A8_7BIT = "qkernels w8a8 7-bit act"  # act_bits=7: the fastest AVX2 multiply
W8A8_UNFUSED = "qkernels w8a8 unfused"  # activations as separate ops (no qkernels.fusion)
W8A8_HANDOFF = "qkernels w8a8 norm handoff"  # the opt-in norm handoff (fuse_norms=True)
SPEEDUP_PAIRS = [  # (ours, peer): peer median / ours median
    ("qkernels w8a8", "fp32"),
    ("qkernels w8a8", W8A8_UNFUSED),
    (W8A8_HANDOFF, "qkernels w8a8"),
    (W8A8_7BIT, "fp32"),
    (W8A8_7BIT, "qkernels w8a8"),
    ("qkernels w8a8 compiled", "fp32 compiled"),
    ("qkernels w8a8 compiled", "qkernels w8a8"),
    ("qkernels w8a8 compiled", "fp32"),
    (ORT_INT8, "fp32"),  # the peers (--peers) over fp32 eager, and ours over them
    (PT2E_INT8, "fp32"),
    (PT2E_DYNAMIC, "fp32"),
    (TORCHAO_INT8, "fp32"),
    ("qkernels w8a8", ORT_INT8),
    ("qkernels w8a8 compiled", PT2E_INT8),
    ("qkernels w8a8", PT2E_INT8),
    ("qkernels w8a8 compiled", PT2E_DYNAMIC),
    ("qkernels w8a8 compiled", TORCHAO_INT8),
]
FULL_SHAPES = [(16, 128), (1, 128)]


def op_class(name: str) -> str:
    for cls, pattern in OP_CLASSES:
        if pattern.search(name):
            return cls
    return "other"


@dataclass
class ModelRow:
    model: str
    impl: str  # "fp32" | "qkernels w8a8" | W8A8_UNFUSED | W8A8_HANDOFF | W8A8_7BIT, ...
    batch: int
    seq: int
    median_ms: float
    spread: float  # interquartile range / median over the interleaved rounds
    other_runnable: float  # other runnable tasks while timing (qkernels.timing)
    classes_ms: dict  # op class -> self CPU ms per forward (profiler; eager models only)
    top_ops: list  # [(op, ms)] the largest self times
    min_cosine: float  # smallest per-example cosine of the output against fp32's
    note: str = ""  # a peer that could not run: why
    # the same for the demo's sentence embedding (the output's masked mean over tokens)
    min_pooled_cosine: float = float("nan")
    # timed calls during which torch.compile compiled a graph (a row with any is refused)
    recompiles_while_timed: int = 0


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
    model: nn.Module,
    tokenizer,
    name: str,
    shapes=FULL_SHAPES,
    min_run_time: float = 1.0,
    compile_: bool = False,
    peers: bool = False,
) -> list[ModelRow]:
    """fp32 and w8a8 copies of `model` (with and without activation fusion, with the
    opt-in norm handoff, and with 7-bit activations; fp32 and w8a8 compiled too, with compile_;
    the int8 peers of qkernels.bench.model_peers, built per shape, with peers) at each
    (batch, seq):
    profile the eager qkernels / fp32 ones, time all in interleaved rounds."""
    import qkernels
    from qkernels.data import pydoc_paragraphs

    int8 = copy.deepcopy(model).eval()
    qkernels.swap(int8, "w8a8")
    unfused = copy.deepcopy(model).eval()
    qkernels.swap(unfused, "w8a8", fuse_activations=False)
    handoff = copy.deepcopy(model).eval()
    qkernels.swap(handoff, "w8a8", fuse_norms=True)
    int8_7bit = copy.deepcopy(model).eval()
    qkernels.swap(int8_7bit, "w8a8", act_bits=7)
    models = {
        "fp32": model.eval(),
        "qkernels w8a8": int8,
        W8A8_UNFUSED: unfused,
        W8A8_HANDOFF: handoff,
        W8A8_7BIT: int8_7bit,
    }
    if compile_:  # static shapes: each (batch, seq) compiles in output_cosines, not timed
        models["fp32 compiled"] = torch.compile(model, dynamic=False)
        models["qkernels w8a8 compiled"] = torch.compile(int8, dynamic=False)
    texts = pydoc_paragraphs()
    rows = []
    for batch, seq in shapes:

        def tokens(first: int, batch=batch, seq=seq) -> dict:
            return dict(
                tokenizer(
                    texts[first : first + batch],
                    padding="max_length",
                    truncation=True,
                    max_length=seq,
                    return_tensors="pt",
                )  # fmt: skip
            )

        inputs = tokens(0)
        profiles = {
            impl: profile_classes(m, dict(inputs))
            for impl, m in models.items()
            if not impl.endswith("compiled")
        }
        timed_models, missing = dict(models), {}
        if peers:  # calibrated (PT2E) on the 32 paragraphs after the timed ones
            calibration = [tokens(first) for first in range(batch, batch + 32, batch)]
            built, missing = build_peers(model, inputs, calibration)
            timed_models.update(built)

        recompiles = dict.fromkeys(timed_models, 0)

        def forward(m, impl, inputs=inputs, recompiles=recompiles):
            # dynamo's graph count moves only when a call compiles: calls are sequential,
            # so a recompile is this call's.
            before = counters["stats"]["unique_graphs"]
            with torch.no_grad():
                m(**inputs)
            recompiles[impl] += counters["stats"]["unique_graphs"] != before

        cosines = output_cosines(timed_models, dict(inputs))  # compiles what compiles
        fns = {impl: functools.partial(forward, m, impl) for impl, m in timed_models.items()}
        rounds = 7
        timed = timing.compare(fns, rounds=rounds, warmup=2, min_sample_s=min_run_time / rounds)
        nan = float("nan")
        for impl, why in missing.items():
            rows.append(ModelRow(name, impl, batch, seq, nan, nan, nan, {}, [], nan, why))
        for impl in timed_models:
            t = timed.timings[impl]
            classes, top = profiles.get(impl, ({}, []))
            row = ModelRow(
                name, impl, batch, seq, t.median_ms, round(t.spread, 3), timed.other_runnable,
                classes, top, cosines[impl][0], min_pooled_cosine=cosines[impl][1],
                recompiles_while_timed=recompiles[impl],
            )  # fmt: skip
            if recompiles[impl]:  # its times mix compiled code: refused, not reported
                row.median_ms = row.spread = nan
                row.note = f"refused: {recompiles[impl]} timed calls recompiled"
            rows.append(row)
    return rows


def output_cosines(models: dict[str, nn.Module], inputs: dict) -> dict[str, tuple[float, float]]:
    """Per model, the smallest per-example cosine against the "fp32" model's of its first
    output (the last hidden state of a base model, the logits of a head), and of that
    output's mean over the tokens the attention mask keeps (the demo's sentence embedding,
    as sentence-transformers pools; NaN for an output without a token axis)."""
    mask = inputs.get("attention_mask")

    def first_output(m) -> torch.Tensor:
        with torch.no_grad():
            out = m(**inputs)
        t = out[0] if isinstance(out, (tuple, list)) else next(iter(out.values()))
        return t.float()

    def pooled(t: torch.Tensor) -> torch.Tensor | None:
        if mask is None or t.dim() != 3 or t.shape[:2] != mask.shape:
            return None
        keep = mask.unsqueeze(-1).float()
        return (t * keep).sum(1) / keep.sum(1).clamp(min=1)

    def min_cos(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
        if a is None or b is None:
            return float("nan")
        cos = torch.nn.functional.cosine_similarity(a.reshape(len(a), -1), b.reshape(len(b), -1))
        return cos.min().item()

    ref = first_output(models["fp32"])
    cosines = {}
    for impl, m in models.items():
        out = first_output(m)
        cosines[impl] = (min_cos(out, ref), min_cos(pooled(out), pooled(ref)))
    return cosines


def speedups(rows: list[dict]) -> list[dict]:
    """Per "BxS" shape, peer median / ours median for each of SPEEDUP_PAIRS present."""
    by_shape: dict[str, dict[str, float]] = {}
    for r in rows:
        if not r.get("note"):  # a peer that did not run has no time
            by_shape.setdefault(f"{r['batch']}x{r['seq']}", {})[r["impl"]] = r["median_ms"]
    out = []
    for shape, impls in by_shape.items():
        entry = {"shape": shape}
        for ours, peer in SPEEDUP_PAIRS:
            if ours in impls and peer in impls:
                entry[f"{ours} / {peer}"] = impls[peer] / impls[ours]
        out.append(entry)
    return out


def format_model_table(rows: list[ModelRow]) -> str:
    """Per shape: wall median and each class's self time (ms and share) per impl, then
    the speedups over fp32 (eager over eager, compiled over compiled)."""
    flat = []
    for r in rows:
        total = sum(r.classes_ms.values()) or 1.0
        entry = {
            "shape": f"{r.batch}x{r.seq}",
            "impl": r.impl,
            "median_ms": r.median_ms,
            "spread": r.spread,
            "min_cosine": r.min_cosine,
            "min_pooled_cosine": r.min_pooled_cosine,
            "note": r.note,
        }
        for cls in CLASSES:
            ms = r.classes_ms.get(cls)
            entry[cls] = "-" if ms is None else f"{ms:.1f} ({100 * ms / total:.0f}%)"
        flat.append(entry)
    columns = [
        ("shape", "shape", "<7"),
        ("impl", "impl", "<32"),
        ("wall ms", "median_ms", ">8.1f"),
        ("IQR/med", "spread", ">8.2f"),
        ("min cos", "min_cosine", ">8.4f"),
        ("pooled", "min_pooled_cosine", ">7.4f"),
    ]
    columns += [(cls, cls, ">16") for cls in CLASSES] + [("note", "note", "<4")]
    speed = [
        f"  {entry['shape']}: " + ", ".join(f"{k} {v:.2f}x" for k, v in entry.items() if " / " in k)
        for entry in speedups([asdict(r) for r in rows])
    ]
    return (
        "self CPU ms per forward by op class (torch.profiler, eager models; share of the "
        "profiled total)\n"
        + table(flat, columns)
        + "\nspeedup (peer median / qkernels median):\n"
        + "\n".join(speed)
        + timing_warnings([r for r in rows if not r.note])
    )
