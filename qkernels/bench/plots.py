"""PNG charts of the benchmark results (matplotlib, the optional `plot` extra): the
speedup of qkernels over each peer per shape, achieved GOP/s against the machine's
measured ceilings (a roofline), and a fine-tuning run's loss and metric curves."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("qkernels: plots need matplotlib (pip install 'qkernels[plot]')") from e
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def speedup_chart(
    summary: Sequence[dict], key: Sequence[str], path: str | Path, title: str
) -> Path:
    """Grouped bars: per case (the `key` fields), each "ours / peer" ratio of the summary;
    a line at 1.0 (above it qkernels is faster)."""
    plt = _pyplot()
    pairs = sorted({k for entry in summary for k in entry if " / " in k})
    cases = [" ".join(str(entry[f]) for f in key) for entry in summary]
    width = 0.8 / max(len(pairs), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(cases) * max(len(pairs), 1) ** 0.5), 4.5))
    for i, pair in enumerate(pairs):
        xs = [c + i * width for c in range(len(cases))]
        ax.bar(xs, [entry.get(pair, float("nan")) for entry in summary], width, label=pair)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([c + width * (len(pairs) - 1) / 2 for c in range(len(cases))])
    ax.set_xticklabels(cases, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("speedup (peer time / qkernels time)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def measure_ceilings(min_s: float = 0.5) -> dict:
    """This machine's fp32 GEMM rate (torch.mm, 2048^3), int8 GEMM rate (qkernels int8_mm,
    2048^3) and memory bandwidth (a 256 MiB copy, read + write), each the best of
    repeated runs for about `min_s` seconds."""
    from qkernels import ops

    def best(fn, work: float) -> float:
        fn()
        rates, start = [], time.perf_counter()
        while time.perf_counter() - start < min_s:
            t0 = time.perf_counter()
            fn()
            rates.append(work / (time.perf_counter() - t0))
        return max(rates)

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    qa = torch.randint(-127, 128, (n, n), dtype=torch.int8)
    qb = ops.pack_weight(torch.randint(-127, 128, (n, n), dtype=torch.int8))
    ones = torch.ones(n)
    src = torch.empty(64 << 20, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    return {
        "fp32_gflops": best(lambda: torch.mm(a, b), 2 * n**3) / 1e9,
        "int8_gops": best(lambda: ops.int8_mm(qa, qb, ones, ones), 2 * n**3) / 1e9,
        "dram_gbs": best(lambda: dst.copy_(src), 2 * src.numel() * 4) / 1e9,
    }


def _linear_bytes(r: dict) -> float:
    """Bytes a Linear call moves at least: the weight (by the impl's weight dtype), x and
    the output."""
    m, k, n = r["m"], r["k"], r["n"]
    impl = r["impl"]
    w = 1 if ("int8" in impl or "w8a" in impl) else 2 if "bf16" in impl else 4
    x = 2 if r["x_dtype"] in ("bfloat16", "float16") else 4
    return n * k * w + m * k * x + m * n * x


def roofline_chart(rows: Sequence[dict], ceilings: dict, path: str | Path, title: str) -> Path:
    """Achieved GOP/s of each (shape, impl) of the linear suite's cold-weight rows (all
    rows when none is cold) against its arithmetic intensity, under the measured
    ceilings: DRAM bandwidth x intensity, the fp32 GEMM rate and the int8 GEMM rate."""
    plt = _pyplot()
    cold = [r for r in rows if r.get("weights", "cold") == "cold"]
    kind = "cold weights" if cold else "hot weights"
    cold = cold or list(rows)
    fig, ax = plt.subplots(figsize=(7, 5))
    for impl in sorted({r["impl"] for r in cold}):
        pts = [(2 * r["m"] * r["k"] * r["n"] / _linear_bytes(r), r["gflops"]) for r in cold
               if r["impl"] == impl]  # fmt: skip
        ax.scatter(*zip(*pts, strict=True), label=impl, s=18)
    intensities = [2 * r["m"] * r["k"] * r["n"] / _linear_bytes(r) for r in cold]
    lo, hi = min(intensities) / 2, max(intensities) * 2
    xs = [lo * (hi / lo) ** (i / 50) for i in range(51)]
    bw = ceilings["dram_gbs"]
    peaks = (("fp32 GEMM", ceilings["fp32_gflops"]), ("int8 GEMM", ceilings["int8_gops"]))
    for name, peak in peaks:
        ax.plot(xs, [min(peak, bw * x) for x in xs], linestyle="--", label=f"{name} ceiling")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"arithmetic intensity (ops / byte moved, {kind})")
    ax.set_ylabel("achieved GOP/s")
    ax.set_title(f"{title}, {kind}: roofline\nmeasured: {bw:.0f} GB/s, fp32 "
                 f"{ceilings['fp32_gflops']:.0f} GFLOP/s, int8 {ceilings['int8_gops']:.0f} GOP/s",
                 fontsize=9)  # fmt: skip
    ax.legend(fontsize=7)
    return _save(fig, path)


def linear_charts(
    rows: Sequence[dict], summary: Sequence[dict], ceilings: dict | None, out: str | Path,
    stamp: str,
) -> list[Path]:  # fmt: skip
    """The linear suite's speedup chart, and its roofline when ceilings were measured."""
    out = Path(out)
    charts = [
        speedup_chart(
            summary,
            ("m", "k", "n", "weights"),
            out / f"linear-speedup-{stamp}.png",
            "Linear layers: qkernels vs peers (M K N weights)",
        )  # fmt: skip
    ]
    if ceilings:
        charts.append(roofline_chart(rows, ceilings, out / f"linear-roofline-{stamp}.png",
                                     "Linear layers"))  # fmt: skip
    return charts


def model_chart(rows: Sequence[dict], out: str | Path, name: str, stamp: str) -> Path:
    """The model suite's speedups (qkernels over fp32, eager and compiled) per shape."""
    from qkernels.bench.model import speedups

    summary = speedups(rows)
    return speedup_chart(summary, ("shape",), Path(out) / f"model-{name}-speedup-{stamp}.png",
                         f"{name}: whole-model forward, qkernels w8a8 vs fp32")  # fmt: skip


def training_curves(report: dict, path: str | Path) -> Path:
    """Loss per step and the evaluation metric over steps of a fine-tuning report."""
    plt = _pyplot()
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
    losses = report.get("losses", [])
    if losses:
        loss_ax.plot([s for s, _ in losses], [v for _, v in losses], linewidth=0.8)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss")
    history = report.get("history", [])
    steps = [0] + [h["step"] for h in history]
    metrics = [report["before"]["metric"]] + [h["metric"] for h in history]
    if losses and "after" in report:  # the final evaluation, after the last step
        steps.append(losses[-1][0])
        metrics.append(report["after"]["metric"])
    metric_ax.plot(steps, metrics, marker="o")
    metric_ax.set_xlabel("step")
    metric_ax.set_ylabel(report["metric_name"])
    cfg = report["config"]
    fig.suptitle(f"{cfg['model']} {cfg['task']} {cfg['method']}", fontsize=10)
    return _save(fig, path)


def llm_chart(summary: Sequence[dict], out: str | Path, stamp: str) -> Path:
    """Decode and prefill tokens/s per implementation (the llm suite's medians), bars."""
    plt = _pyplot()
    prefill = sorted(k for k in summary[0] if k.startswith("prefill") and "/" not in k)
    keys = ["decode_tps", *prefill]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2))
    for ax, key in zip(axes if len(keys) > 1 else [axes], keys, strict=True):
        names = [e["impl"] for e in summary]
        ax.barh(names, [e[key] for e in summary], color="tab:blue")
        ax.set_title(key.replace("_tps", " tokens/s"), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.invert_yaxis()
    fig.suptitle("LLM generation on the CPU (one process per implementation)", fontsize=10)
    return _save(fig, Path(out) / f"llm-{stamp}.png")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
