"""`qkernels info | bench`: what was built and how fast it is."""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys

import torch

OPS = (
    "quantize_rowwise",
    "int_mm",
    "int8_mm",
    "linear_w8a8",
    "linear_w8a16",
    "pack_weight",
    "fake_quant",
    "fake_quant_group",
    "fake_quant_lsq",
    "lstm_w8a8",
)


def info() -> str:
    import qkernels
    from qkernels import _registry

    lines = [
        f"qkernels {qkernels.__version__}",
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"(cuda {torch.version.cuda or 'none'}), threads {torch.get_num_threads()}",
    ]
    try:
        import triton

        lines.append(f"triton {triton.__version__}")
    except ImportError:
        lines.append("triton: not installed")
    if _registry.EXTENSION_ERROR is not None:
        lines.append(f"qkernels._C: NOT LOADED ({_registry.EXTENSION_ERROR})")
        return "\n".join(lines)
    from qkernels import _C

    lines += [
        f"qkernels._C: built with CUDA sources: {_C.built_with_cuda()}",
        f"cpu features: {_C.cpu_features()}",
        f"best cpu isa: {_C.best_cpu_isa()} (override: QKERNELS_CPU_ISA=avx512_vnni|avx2|scalar)",
        f"cuda device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}",
        "",
        f"{'op':<18} {'cpu kernel':<18} cuda kernel",
    ]
    for op in OPS:
        try:
            cpu = _C.cpu_kernel(op)
        except ValueError as e:  # a bad QKERNELS_CPU_ISA: show it, don't crash
            cpu = f"error: {e}"
        if op == "pack_weight":
            cuda = "cpu-only layout"
        elif op in _registry.TRITON_CUDA_OPS:
            cuda = "triton"
        else:
            cuda = "not yet (Triton GEMM issue)"
        lines.append(f"{op:<18} {cpu:<18} {cuda}")
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> None:
    from qkernels.bench_qat import format_qat_table, run_fake_quant_suite, run_qat_step_suite
    from qkernels.benchmarking import (
        CI_SHAPES,
        FULL_SHAPES,
        format_table,
        run_linear_suite,
        save_results,
    )

    ci = args.shapes == "ci"
    stamp = dt.date.today().isoformat()
    if args.suite in ("linear", "all"):
        rows = run_linear_suite(
            CI_SHAPES if ci else FULL_SHAPES,
            weights=args.weights,
            compile_=args.compile,
            min_run_time=args.min_run_time,
        )
        print("\n" + format_table(rows))
        if args.json != "-":
            path = args.json or f"benchmarks/results/linear-cpu-{stamp}.json"
            print(f"\nresults: {save_results(rows, path)}")
    if args.suite in ("lstm", "all"):
        from qkernels.bench_lstm import CI_SHAPES as LSTM_CI
        from qkernels.bench_lstm import FULL_SHAPES as LSTM_FULL
        from qkernels.bench_lstm import format_lstm_table, run_lstm_suite

        rows = run_lstm_suite(LSTM_CI if ci else LSTM_FULL, args.min_run_time)
        print("\n" + format_lstm_table(rows))
        if args.json != "-":
            path = args.json or f"benchmarks/results/lstm-cpu-{stamp}.json"
            print(f"\nresults: {save_results(rows, path)}")
    if args.suite in ("qat", "all"):
        size, (m, k, n) = (256, (128, 128, 128)) if ci else (4096, (2048, 1024, 1024))
        rows = run_fake_quant_suite(size, size, args.min_run_time)
        rows += run_qat_step_suite(m, k, n, args.min_run_time)
        print("\n" + format_qat_table(rows))
        print(
            "(qkernels reuses its large CPU output buffers across calls, as a training "
            "loop would; torch's CPU allocator maps fresh pages for every >32 MB tensor)"
        )
        if args.json != "-":
            path = args.json or f"benchmarks/results/qat-cpu-{stamp}.json"
            print(f"\nresults: {save_results(rows, path)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qkernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, build, CPU features, kernel per op")
    b = sub.add_parser("bench", help="Linear benchmark table against peers (one process)")
    b.add_argument("--suite", choices=["linear", "qat", "lstm", "all"], default="linear")
    b.add_argument("--shapes", choices=["full", "ci"], default="full")
    b.add_argument("--weights", choices=["hot", "cold", "both"], default="both")
    b.add_argument("--compile", action="store_true", help="torch.compile the torchao peer")
    b.add_argument("--min-run-time", type=float, default=0.3, help="seconds per measurement")
    b.add_argument(
        "--json",
        default=None,
        help="where to write results (default benchmarks/results/...; '-' for none)",
    )
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
    elif args.command == "bench":
        bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
