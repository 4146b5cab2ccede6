"""`qkernels info | bench | finetune | quantize | eval`: the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import torch


def info() -> str:
    import qkernels
    from qkernels._backend import ENV, cuda_cpp_ops, get_backend
    from qkernels._library import EXTENSION_ERROR
    from qkernels.op_table import BACKENDS, OPS

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
    if EXTENSION_ERROR is not None:
        lines.append(f"qkernels._C: NOT LOADED ({EXTENSION_ERROR})")
        return "\n".join(lines)
    from qkernels import _C

    lines += [
        f"qkernels._C: built with CUDA sources: {_C.built_with_cuda()}",
        f"cpu features: {_C.cpu_features()}",
        f"best cpu isa: {_C.best_cpu_isa()} (override: QKERNELS_CPU_ISA=avx512_vnni|avx2|scalar)",
        f"cuda device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}",
        "",
        f"cuda backends: {', '.join(BACKENDS)} (choose: qkernels.set_backend or "
        f"{ENV}=triton|op=backend,...; CUDA C++ ops built: {', '.join(cuda_cpp_ops()) or 'none'})",
        "",
        f"{'op':<26} {'family':<11} {'cpu kernel':<28} cuda backend",
    ]
    for op in OPS:
        try:  # the C++ side answers from the kernel table the op itself reads
            cpu = "cpu/" + (_C.cpu_kernel(op.name) if op.cpu == "cpp" else "torch (python)")
        except ValueError as e:  # a bad QKERNELS_CPU_ISA: show it, don't crash
            cpu = f"error: {e}"
        if not op.cuda:
            cuda = "none (cpu-only layout)"
        else:
            try:
                cuda = get_backend(op.name)
            except ValueError as e:  # a bad QKERNELS_BACKEND: show it, don't crash
                cuda = f"error: {e}"
        lines.append(f"{op.name:<26} {op.family:<11} {cpu:<28} {cuda}")
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> None:
    from qkernels.bench import gpu, linear, lora, lstm, qat, report

    ci = args.shapes == "ci"
    stamp = dt.date.today().isoformat()

    def emit(text: str, rows: list, default_path: str, gpu_env: bool = False, **summaries) -> None:
        print("\n" + text)
        if args.json != "-":
            env = report.environment(gpu=gpu_env)
            path = report.save_json(args.json or default_path, rows, env, **summaries)
            print(f"\nresults: {path}")

    if args.suite in ("linear", "all"):
        rows = linear.run_linear_suite(
            linear.CI_SHAPES if ci else linear.FULL_SHAPES,
            weights=args.weights,
            compile_=args.compile,
            min_run_time=args.min_run_time,
        )
        emit(
            linear.format_table(rows),
            rows,
            f"benchmarks/results/linear-cpu-{stamp}.json",
            summary=linear.summarize(rows),
        )
    if args.suite in ("lstm", "all"):
        rows = lstm.run_lstm_suite(lstm.CI_SHAPES if ci else lstm.FULL_SHAPES, args.min_run_time)
        emit(lstm.format_lstm_table(rows), rows, f"benchmarks/results/lstm-cpu-{stamp}.json")
    if args.suite == "gpu" or (args.suite == "all" and torch.cuda.is_available()):
        ops = tuple(args.ops.split(",")) if args.ops else None
        rows = gpu.run_gpu_suite("ci" if ci else "full", args.min_run_time, ops=ops)
        text = gpu.format_gpu_table(rows)
        if not torch.cuda.is_available():
            text += (
                "\n(no GPU: the Triton kernels ran in the interpreter; these times mean nothing)"
            )
        device = gpu.gpu_environment()["device"].replace(" ", "-").lower()
        part = "-" + "-".join(ops) if ops else ""
        path = f"benchmarks/results/gemm-gpu-{device}-{stamp}{part}.json"
        emit(text, rows, path, gpu_env=True, ratios=gpu.ratios(rows))
    if args.suite in ("lora", "all"):
        rows = lora.run_lora_op_suite(
            lora.CI_OP_CASES if ci else lora.FULL_OP_CASES, args.min_run_time
        )
        steps = lora.run_lora_step_suite(
            lora.CI_MODEL if ci else lora.FULL_MODEL,
            lora.CI_STEP_CONFIGS if ci else lora.STEP_CONFIGS,
        )
        text = lora.format_op_table(rows) + "\n\n" + lora.format_step_table(steps)
        emit(
            text,
            rows,
            f"benchmarks/results/lora-cpu-{stamp}.json",
            op_summary=lora.op_summary(rows),
            training_step=[asdict(r) for r in steps],
            step_summary=lora.step_summary(steps),
        )
    if args.suite in ("qat", "all"):
        size, (m, k, n) = (256, (128, 128, 128)) if ci else (4096, (2048, 1024, 1024))
        rows = qat.run_fake_quant_suite(size, size, args.min_run_time)
        rows += qat.run_qat_step_suite(m, k, n, args.min_run_time)
        text = qat.format_qat_table(rows) + (
            "\n(qkernels reuses its large CPU output buffers across calls, as a training "
            "loop would; torch's CPU allocator maps fresh pages for every >32 MB tensor)"
        )
        emit(text, rows, f"benchmarks/results/qat-cpu-{stamp}.json")


def finetune_cmd(args: argparse.Namespace) -> None:
    from qkernels.finetune import FinetuneConfig, finetune, format_report

    cfg = FinetuneConfig(
        model=args.model,
        task=args.task,
        method=args.method,
        output=args.output,
        train=args.train,
        valid=args.valid,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=args.max_length,
        eval_every=args.eval_every,
        save_every=args.save_every,
        seed=args.seed,
        act=args.act,
        weight_lsq=args.weight_lsq,
        rank=args.rank,
        energy=args.energy,
        lowrank_int8=args.int8,
        alpha=args.alpha,
        base=args.base,
        lora_dropout=args.lora_dropout,
        target_modules=args.target_modules.split(",") if args.target_modules else None,
        merge=args.merge,
        calib_batches=args.calib_batches,
        resume=args.resume,
        progress=not args.no_progress,
    )
    result = finetune(cfg)
    if result.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(format_report(result))
        print(f"report: {Path(args.output) / 'report.json'}, model: {Path(args.output) / 'model'}")


def quantize_cmd(args: argparse.Namespace) -> None:
    import qkernels
    from qkernels.finetune import model_path

    model = _load_any(model_path(args.model))
    report = qkernels.swap(model, args.method)
    qkernels.save(model, args.output)
    _copy_tokenizer(args.model, args.output)
    print(f"{report}\nsaved: {args.output}")


def eval_cmd(args: argparse.Namespace) -> None:
    import transformers

    from qkernels import data as qdata
    from qkernels.finetune import (
        Dataset,
        FinetuneConfig,
        eval_batches,
        evaluate,
        fit_length,
        latency_ms,
        load_data,
        model_bytes,
        model_path,
    )

    path = model_path(args.model)
    model = _load_any(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if args.task == "classification":
        if args.data is None:
            raise ValueError("classification eval needs --data (CSV/JSONL with text,label)")
        rows = qdata.read_labelled(args.data)
        names = sorted({label for _, label in rows})
        valid = Dataset([t for t, _ in rows], [names.index(label) for _, label in rows])
    else:
        cfg = FinetuneConfig(
            model=args.model,
            task=args.task,
            method="fp32",
            output="",
            train=args.data or "builtin",
            valid=args.data,
        )
        _, valid, _ = load_data(cfg)
    max_length = fit_length(model, args.max_length)
    metric = evaluate(args.task, model, valid, tokenizer, max_length)
    probe = next(eval_batches(valid, 32, tokenizer, max_length))
    print(
        json.dumps(
            {"metric": metric, "bytes": model_bytes(model), "latency_ms": latency_ms(model, probe)},
            indent=1,
        )
    )


def _load_any(path: str):
    """A saved model (qkernels.save, or save_pretrained with or without a swap):
    the architecture comes from its config.json, the swap plan too if any."""
    import qkernels

    return qkernels.load(path)


def _copy_tokenizer(src: str, dst: str) -> None:
    import transformers

    from qkernels.finetune import model_path

    transformers.AutoTokenizer.from_pretrained(model_path(src)).save_pretrained(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qkernels", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (or QKERNELS_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("finetune", help="swap, fine-tune (QAT / low-rank / LoRA), convert, save")
    f.add_argument("--model", required=True, help="HF model directory, or 'minilm'")
    f.add_argument("--task", required=True, help="classification | causal-lm | distill")
    f.add_argument(
        "--method", required=True, help="fp32 | qat | ptq | w8a8 | w8a16 | lowrank | lora"
    )
    f.add_argument("--output", required=True)
    f.add_argument("--train", default="builtin", help="data file, or 'builtin' (stdlib text)")
    f.add_argument("--valid", default=None)
    f.add_argument("--steps", type=int, default=100)
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--lr", type=float, default=5e-5)
    f.add_argument("--max-length", type=int, default=128)
    f.add_argument("--eval-every", type=int, default=0)
    f.add_argument("--save-every", type=int, default=0)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--act", default="dynamic", help="QAT activations: dynamic|minmax|ema|lsq")
    f.add_argument("--weight-lsq", action="store_true", help="learned weight scales (LSQ)")
    f.add_argument("--rank", type=int, default=None)
    f.add_argument("--energy", type=float, default=None)
    f.add_argument("--int8", action="store_true", help="lowrank: convert the factors to int8")
    f.add_argument("--alpha", type=float, default=32.0, help="lora: scaling = alpha / rank")
    f.add_argument("--base", default="w8a8", help="lora: the frozen int8 base, w8a8 | w8a16")
    f.add_argument("--lora-dropout", type=float, default=0.0)
    f.add_argument(
        "--target-modules", default=None, help="lora: comma-separated module names (PEFT rule)"
    )
    f.add_argument(
        "--merge", action="store_true", help="lora: save the merged int8 model (W + scaling BA)"
    )
    f.add_argument("--calib-batches", type=int, default=8)
    f.add_argument("--resume", action="store_true")
    f.add_argument("--no-progress", action="store_true")
    q = sub.add_parser("quantize", help="one-shot conversion of a saved HF model directory")
    q.add_argument("model")
    q.add_argument("--method", default="w8a8", choices=["w8a8", "w8a16"])
    q.add_argument("--output", required=True)
    e = sub.add_parser("eval", help="metric, size and latency of a saved model")
    e.add_argument("model")
    e.add_argument("--task", required=True, choices=["classification", "causal-lm"])
    e.add_argument("--data", default=None, help="CSV/JSONL (classification) or text file")
    e.add_argument("--max-length", type=int, default=128)
    sub.add_parser("info", help="versions, build, CPU features, kernel per op")
    b = sub.add_parser("bench", help="Linear benchmark table against peers (one process)")
    b.add_argument(
        "--suite", choices=["linear", "qat", "lstm", "lora", "gpu", "all"], default="linear"
    )
    b.add_argument("--shapes", choices=["full", "ci"], default="full")
    b.add_argument("--weights", choices=["hot", "cold", "both"], default="both")
    b.add_argument("--compile", action="store_true", help="torch.compile the torchao peer")
    b.add_argument("--ops", default=None, help="gpu suite: only these ops (comma-separated)")
    b.add_argument("--min-run-time", type=float, default=0.3, help="seconds per measurement")
    b.add_argument(
        "--json",
        default=None,
        help="where to write results (default benchmarks/results/...; '-' for none)",
    )
    args = parser.parse_args(argv)
    commands = {
        "info": lambda a: print(info()),
        "bench": bench,
        "finetune": finetune_cmd,
        "quantize": quantize_cmd,
        "eval": eval_cmd,
    }
    try:
        commands[args.command](args)
    except Exception as e:  # noqa: BLE001 - every error is one line unless asked otherwise
        if args.debug or os.environ.get("QKERNELS_DEBUG") == "1":
            raise
        print(f"qkernels {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0


def _one_line(e: Exception) -> str:
    """The message a user acts on: qkernels' own errors as they are; anything else
    with its type, and a pointer to --debug for the traceback."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, (ValueError, FileNotFoundError, KeyError)):
        return text
    return f"{type(e).__name__}: {text} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
