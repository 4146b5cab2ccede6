"""`make report`: the charts under benchmarks/results/ and the README's "Results" section,
regenerated from the committed benchmark JSON (nothing is timed here). For each suite
the newest file is used; the section says which file and machine each table came from.

Usage: python tools/report.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from qkernels.bench import plots

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- results:start (make report) -->", "<!-- results:end -->"


def newest(pattern: str) -> Path | None:
    files = sorted(RESULTS.glob(pattern), key=lambda p: (p.stem[-10:], p.name))
    return files[-1] if files else None


def source(path: Path, data: dict) -> str:
    env = data.get("environment", {})
    isa = " ".join(f for f in env.get("cpu_features", "").split() if f.startswith("avx"))
    isa = " ".join(filter(None, [isa, env.get("cpu_amx", "")]))
    malloc = (
        ", freed memory kept (keep_freed_memory)"
        if env.get("malloc") == "keep freed memory"
        else ""
    )
    return (
        f"_{path.name}: {env.get('cpu', env.get('device', '?'))} ({isa or 'no AVX'}), "
        f"{env.get('threads', '?')} threads, torch {env.get('torch', '?')}, "
        f"{env.get('date', '?')[:10]}{malloc}_"
    )


def cpu_kind(path: Path) -> str:
    """ "(CPU)", "(CPU, AVX2 only)" for an AVX2-only machine's results, "(CPU with AMX)"
    for a machine whose AMX units torch's bf16 / fp32 GEMMs (oneDNN) use and qkernels'
    kernels do not."""
    if "-avx2-" in path.name:
        return "(CPU, AVX2 only)"
    return "(CPU with AMX)" if "-amx-" in path.name else "(CPU)"


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def linear_section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    stamp = path.stem.removeprefix("linear-cpu-")  # the date, or "avx2-" and the date
    charts = plots.linear_charts(
        data["rows"], data["summary"], data.get("ceilings"), RESULTS, stamp
    )
    pairs = sorted({k for e in data["summary"] for k in e if " / " in k})
    lines = [
        f"### Linear layers {cpu_kind(path)}",
        "",
        source(path, data),
        "",
        "| ratio (peer time / qkernels time) | hot weights, geomean | cold weights, geomean | "
        "min | max |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for pair in pairs:
        by = {w: [e[pair] for e in data["summary"] if e["weights"] == w and pair in e]
              for w in ("hot", "cold")}  # fmt: skip
        every = by["hot"] + by["cold"]
        cells = [f"{geomean(v):.2f}x" if v else "-" for v in (by["hot"], by["cold"])]
        spread = f"{min(every):.2f}x | {max(every):.2f}x"
        lines.append(f"| {pair} | {cells[0]} | {cells[1]} | {spread} |")
    lines += ["", *decode_lines(data)]
    lines += [*(f"![{c.stem}](benchmarks/results/{c.name})" for c in charts), ""]
    return lines


def decode_lines(data: dict) -> list[str]:
    """The linear suite's decode-sized rows: weight read rate against DRAM read bandwidth."""
    rows = data.get("decode")
    if not rows:
        return []
    ms = sorted({r["m"] for r in rows})
    lines = [
        "Decode-sized GEMMs (cold weights): the packed weight's read rate as a share of this "
        "machine's DRAM read bandwidth (torch.sum past the cache, median over the table's "
        "rounds; GB/s in the JSON).",
        "",
        "| threads | impl | " + " | ".join(f"M={m}" for m in ms) + " |",
        "| --- | --- |" + " ---: |" * len(ms),
    ]
    for threads in sorted({r["threads"] for r in rows}):
        read = statistics.median(r["read_gbs"] for r in rows if r["threads"] == threads)
        for impl in sorted({r["impl"] for r in rows}):
            cells = []
            for m in ms:
                shares = [r["of_read"] for r in rows
                          if (r["threads"], r["impl"], r["m"]) == (threads, impl, m)]  # fmt: skip
                cells.append(f"{min(shares):.0%}-{max(shares):.0%}" if shares else "-")
            lines.append(f"| {threads} ({read:.0f} GB/s) | {impl} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def llm_section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    chart = plots.llm_chart(data["summary"], RESULTS, path.stem[-10:])
    prefills = sorted(k for k in data["summary"][0] if k.startswith("prefill") and "/" not in k)
    head = " | ".join(f"{k.removesuffix('_tps').replace('prefill', 'prefill ')} tok/s (x llama.cpp)"
                      for k in prefills)  # fmt: skip
    lines = [
        f"### LLM generation {cpu_kind(path)}",
        "",
        source(path, data) + " _TinyLlama-shaped Llama, random weights; one process per "
        "implementation; medians over runs._",
        "",
        f"| impl | decode tok/s (x llama.cpp) | {head} | peak RSS MB (x llama.cpp) | "
        "top-1 agreement with fp32 |",
        "| --- | ---: |" + " ---: |" * len(prefills) + " ---: | ---: |",
    ]

    def cell(e: dict, key: str, fmt: str) -> str:
        ratio = e.get(f"{key} / llama.cpp", float("nan"))
        return f"{e[key]:{fmt}}" + (f" ({ratio:.2f}x)" if ratio == ratio else "")

    for e in data["summary"]:
        cells = [cell(e, "decode_tps", ".1f"), *(cell(e, k, ".0f") for k in prefills),
                 cell(e, "peak_rss_mb", ".0f"), f"{e['top1_agreement']:.4f}"]  # fmt: skip
        lines.append(f"| {e['impl']} | " + " | ".join(cells) + " |")
    for r in data["rows"]:
        if r.get("note"):
            lines.append(f"| {r['impl']} | not run: {r['note']} |")
    return [*lines, "", f"![{chart.stem}](benchmarks/results/{chart.name})", ""]


def model_section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    name = path.stem.split("-")[1]
    chart = plots.model_chart(data["rows"], RESULTS, name, path.stem[-10:])
    lines = [
        f"### Whole model: {name} forward {cpu_kind(path)}",
        "",
        source(path, data),
        "",
        "| batch x seq | impl | median ms | speedup over fp32 eager | min cosine vs fp32 "
        "| min pooled cosine |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    fp32 = {(r["batch"], r["seq"]): r["median_ms"] for r in data["rows"] if r["impl"] == "fp32"}
    for r in data["rows"]:
        base = fp32[(r["batch"], r["seq"])]
        if r.get("note"):  # a peer that could not run there
            lines.append(f"| {r['batch']}x{r['seq']} | {r['impl']} | - | - | ({r['note']}) | - |")
            continue
        # older JSON: no cosine, or no pooled one
        cosine, pooled = (
            f"{r[key]:.4f}" if key in r and r[key] == r[key] else "-"
            for key in ("min_cosine", "min_pooled_cosine")
        )
        lines.append(
            f"| {r['batch']}x{r['seq']} | {r['impl']} | {r['median_ms']:.1f} | "
            f"{base / r['median_ms']:.2f}x | {cosine} | {pooled} |"
        )
    return [*lines, "", f"![{chart.stem}](benchmarks/results/{chart.name})", ""]


def lora_section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    lines = [
        "### LoRA training step, BERT-base-sized, 4 layers (CPU)",
        "",
        source(path, data),
        "",
        "| config | step ms | peak RSS MB | peak live MB | trainable params |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in data["training_step"]:
        if r["step_ms"] is None:
            lines.append(f"| {r['config']} | - | - | - | - ({r.get('note', '')}) |")
            continue
        live = r.get("peak_live_mb")  # recorded since 2026-12-07
        lines.append(
            f"| {r['config']} | {r['step_ms']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{'-' if live is None else f'{live:.0f}'} | {r['trainable_params']:,} |"
        )
    lines += ["", *(f"- {k}: {v:.2f}x" for k, v in data.get("step_summary", {}).items())]
    return [*lines, ""]


def lora_quality_section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    lines = [
        "### LoRA quality: MiniLM classification (CPU)",
        "",
        source(path, data),
        "",
        f"{data['note']}.",
        "",
        "| run | validation accuracy | per seed |",
        "| --- | ---: | --- |",
    ]
    per_seed = data.get("accuracy_per_seed", {})
    for name, acc in data["accuracy"].items():
        seeds = ", ".join(f"{a:.4f}" for a in per_seed.get(name, []))
        lines.append(f"| {name} | {acc:.4f} | {seeds} |")
    return [*lines, ""]


def _gpu_ratio(entry: dict, ours: str, peer: str) -> str:
    value = entry.get(f"{ours} / {peer}")
    return f"{value:.2f}x" if value is not None else ""


def _auto_impl(op: str, m: int, capability: tuple[int, int], has_cpp: bool) -> str:
    """The measured row `auto` runs today: its rule (qkernels._backend.measured_choice)
    applied to the rows, which were timed while auto still took the C++ kernel for every
    linear_w8a16 and Triton for lowrank."""
    from qkernels._backend import measured_choice
    from qkernels.bench.gpu import PEERS

    backend = measured_choice(op, capability, m, has_cpp)
    if backend == "torch":  # the composition: the suite's peer
        return PEERS[op][1][0]
    if backend == "triton" and has_cpp:
        return f"qkernels {op} triton"
    return f"qkernels {op}"


def gpu_section(paths: list[Path]) -> list[str]:
    """The GPU GEMM suite's JSON of one device and date (one file per op group)."""
    runs = [json.loads(p.read_text()) for p in paths]
    env = runs[0]["environment"]
    lines = [
        f"### GPU GEMMs ({env.get('device', '?')}, {env.get('date', '?')[:10]})",
        "",
        f"_{', '.join(p.name for p in paths)}: torch {env.get('torch', '?')}, triton "
        f"{env.get('triton', '?')}; medians of CUDA-graph replays, weights rotated past the "
        "L2. `auto runs`: what the backend choice (qkernels/_backend.py) picks from these "
        "timings; C++ / Triton: the two kernels of the op, same run_",
        "",
        "| op | M | K | N | `auto` runs | ms | vs bf16 (lowrank: vs two matmuls) | "
        "vs `_int_mm` + dequant | C++ / Triton |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    capability = tuple(int(v) for v in str(env.get("capability", "9.0")).split("."))
    by_case = {(r["op"], r["m"], r["k"], r["n"], r["impl"]): r for x in runs for r in x["rows"]}
    entries = [e for run in runs for e in run["ratios"]]
    for e in sorted(entries, key=lambda e: (e["op"], e["k"], e["n"], e["m"])):
        op, case = e["op"], (e["op"], e["m"], e["k"], e["n"])
        has_cpp = (*case, f"qkernels {op} cuda-c++") in by_case
        ours = by_case[(*case, _auto_impl(op, e["m"], capability, has_cpp))]
        peer = {"int8_mm": "bf16 matmul", "lowrank_mm": "two matmuls"}.get(op)
        if op == "lowrank_mm_backward":
            peer = "autograd two matmuls"
        peer_ms = by_case[(*case, peer or "bf16 F.linear")]["median_ms"]
        int_mm = by_case.get((*case, "torch._int_mm + dequant"))
        kind = ours["impl"].removeprefix(f"qkernels {op}").strip() or "C++"
        ms = ours["median_ms"]
        vs_int_mm = f"{int_mm['median_ms'] / ms:.2f}x" if int_mm else ""
        lines.append(
            f"| {op} | {e['m']} | {e['k']} | {e['n']} | {kind} | {ms:.4f} | "
            f"{peer_ms / ms:.2f}x | {vs_int_mm} | "
            f"{_gpu_ratio(e, f'qkernels {op} cuda-c++', f'qkernels {op} triton')} |"
        )
    return [*lines, ""]


def gpu_stream_section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    env = data["environment"]
    lines = [
        f"### GPU memory-bound ops and LSTM ({env.get('device', '?')}, "
        f"{env.get('date', '?')[:10]})",
        "",
        f"_{path.name}: fake-quant forward + backward on a 16384 x 8192 tensor as a "
        f"fraction of the device-to-device copy bandwidth measured in the same run "
        f"({data['copy_gb_per_s']:.0f} GB/s, bytes read + written)_",
        "",
        "| op | layout | dtype | C++ | Triton |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    cells: dict[tuple, dict[str, float]] = {}
    for r in data["rows"]:
        if r["passes"] == "fwd+bwd":
            cells.setdefault((r["op"], r["layout"], r["dtype"]), {})[r["backend"]] = r["of_copy"]
    for (op, layout, dtype), by in cells.items():
        cpp, tri = by.get("cuda"), by.get("triton")
        lines.append(
            f"| {op} | {layout} | {dtype} | {f'{cpp:.2f}' if cpp else ''} | "
            f"{f'{tri:.2f}' if tri else ''} |"
        )
    lines += ["", "| LSTM, 2 layers, T=35, B=20, H=650 | ms | x cuDNN fp16 | rel err |"]
    lines.append("| --- | ---: | ---: | ---: |")
    for r in data["lstm"]:
        lines.append(
            f"| {r['impl']} | {r['median_ms']:.3f} | {r['speedup_vs_cudnn_fp16']:.2f}x | "
            f"{r['rel_err_vs_fp32']:.1e} |"
        )
    return [*lines, ""]


def gpu_model_section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    env = data["environment"]
    lines = [
        f"### GPU whole models ({env.get('device', '?')}, {env.get('date', '?')[:10]})",
        "",
        f"_{path.name}: `qkernels bench --suite gpu-model`, random weights; x first = "
        "speed over the first row of each task (rates; for the train step, its time over "
        'ours). Eager, except a "static cache" decode (compiled, CUDA graphs); eager mode at '
        "these sizes is bound by the host's per-call Python, not the kernels (DESIGN.md, "
        '"Host overhead")._',
        "",
        "| model | task | impl | value | unit | x first |",
        "| --- | --- | --- | ---: | --- | ---: |",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['impl']} | {r['value']:.1f} | {r['unit']} | "
            f"{r['speedup']:.2f}x |"
        )
    return [*lines, ""]


def newest_gpu_runs() -> list[Path]:
    """Every GEMM-suite JSON of the newest (device, date)."""
    files = sorted(RESULTS.glob("gemm-gpu-*-20??-??-??*.json"))
    if not files:
        return []
    key = lambda p: p.name.split("-quick")[0].split("-full")[0]  # noqa: E731
    last = max(files, key=lambda p: key(p)[-10:])
    return [p for p in files if key(p) == key(last)]


def results_markdown() -> str:
    lines = [
        START,
        "## Results",
        "",
        "Generated by `make report` from the newest JSON of each suite under "
        "`benchmarks/results/` (peers timed in the same process; ratios > 1: qkernels is "
        "faster). CPU numbers depend on the machine named under each table.",
        "",
    ]
    for pattern, section in (
        ("linear-cpu-2*.json", linear_section),  # the VNNI machine
        ("linear-cpu-avx2-2*.json", linear_section),  # an AVX2-only one
        ("linear-cpu-amx-2*.json", linear_section),  # one with AMX
        ("model-*-cpu-2*.json", model_section),  # the VNNI machine
        ("model-*-cpu-avx2-2*.json", model_section),  # an AVX2-only one
        ("llm-cpu-2*.json", llm_section),
        ("lora-cpu-*.json", lora_section),
        ("lora-quality-*.json", lora_quality_section),
    ):
        path = newest(pattern)
        if path is not None:
            lines += section(path)
    gpu = newest_gpu_runs()
    if gpu:
        lines += gpu_section(gpu)
    stream = newest("stream-gpu-*.json")
    if stream is not None:
        lines += gpu_stream_section(stream)
    gpu_model = newest("model-gpu-*.json")
    if gpu_model is not None:
        lines += gpu_model_section(gpu_model)
    return "\n".join([*lines, END])


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    text = README.read_text()
    section = results_markdown()
    if START in text:
        before, rest = text.split(START, 1)
        new = before + section + rest.split(END, 1)[1]
    else:  # first run: before the GPU results section
        head, tail = text.split("## GPU results", 1)
        new = head + section + "\n\n## GPU results" + tail
    README.write_text(new)
    print(f"report: README Results section and charts under {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
