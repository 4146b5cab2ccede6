"""`qkernels info | bench | finetune | quantize | eval`: the command line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

import torch


def info() -> str:
    import qkernels
    from qkernels._backend import CHOICES, ENV, cuda_cpp_ops, get_backend
    from qkernels._library import EXTENSION_ERROR
    from qkernels.cuda_kernels import gemm_kernels
    from qkernels.op_table import OPS

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
        f"cuda backends: {', '.join(CHOICES)} (choose: qkernels.set_backend or "
        f"{ENV}=auto|triton|cuda|op=backend,...; CUDA C++ ops built: "
        f"{', '.join(cuda_cpp_ops()) or 'none'}; CUTLASS GEMMs built: "
        f"{', '.join(sorted(gemm_kernels())) or 'none'})",
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
                if torch.cuda.is_available():  # what "auto" picks on this device
                    cuda += f" -> {_resolved(op.name)}"
            except ValueError as e:  # a bad QKERNELS_BACKEND: show it, don't crash
                cuda = f"error: {e}"
        lines.append(f"{op.name:<26} {op.family:<11} {cpu:<28} {cuda}")
    return "\n".join(lines)


def _resolved(op: str) -> str:
    """The backend an op runs on on this GPU; per rows of x where "auto" looks at them."""
    from qkernels._backend import W8A16_TRITON_ROWS, resolve_backend

    cuda = torch.device("cuda")
    if op != "linear_w8a16":
        return resolve_backend(op, cuda)
    lo, hi = W8A16_TRITON_ROWS
    picks = {rows: resolve_backend(op, cuda, rows) for rows in (lo - 1, lo, hi + 1)}
    if len(set(picks.values())) == 1:
        return picks[lo]
    return f"{picks[lo - 1]} (M < {lo}, M > {hi}), {picks[lo]} ({lo} <= M <= {hi})"


def bench(args: argparse.Namespace) -> None:
    from qkernels.bench import decode, gpu, linear, llm, lora, lstm, model, qat, report

    ci = args.shapes == "ci"
    if args.shapes == "quick" and args.suite != "gpu":
        raise SystemExit("qkernels bench: --shapes quick is the gpu suite's; use full or ci")
    stamp = dt.date.today().isoformat()
    if args.keep_freed_memory:
        from qkernels._memory import keep_freed_memory

        if not keep_freed_memory():
            print("qkernels bench: --keep-freed-memory needs glibc; timing with the default")

    def device_slug() -> str:  # the GPU's name in a file name
        return gpu.gpu_environment()["device"].replace(" ", "-").lower()

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
        decode_rows = decode.run_decode(
            decode.CI_SHAPES if ci else decode.FULL_SHAPES,
            decode.CI_ROWS if ci else decode.FULL_ROWS,
            min_run_time=args.min_run_time,
        )
        extra = {"summary": linear.summarize(rows), "decode": [asdict(r) for r in decode_rows]}
        if args.plot:
            from qkernels.bench import plots

            extra["ceilings"] = plots.measure_ceilings()
            charts = plots.linear_charts(
                [asdict(r) for r in rows], extra["summary"], extra["ceilings"], args.plot, stamp
            )
            print("charts: " + ", ".join(map(str, charts)))
        path = f"benchmarks/results/linear-cpu-{stamp}.json"
        text = linear.format_table(rows) + "\n\n" + decode.format_decode_table(decode_rows)
        emit(text, rows, path, **extra)
    if args.suite in ("lstm", "all"):
        rows = lstm.run_lstm_suite(lstm.CI_SHAPES if ci else lstm.FULL_SHAPES, args.min_run_time)
        emit(lstm.format_lstm_table(rows), rows, f"benchmarks/results/lstm-cpu-{stamp}.json")
    if args.suite == "gpu" or (args.suite == "all" and torch.cuda.is_available()):
        ops = tuple(args.ops.split(",")) if args.ops else None
        ms = tuple(int(m) for m in args.m.split(",")) if args.m else None
        rows = gpu.run_gpu_suite(args.shapes, args.min_run_time, ops=ops, ms=ms)
        text = gpu.format_gpu_table(rows)
        if not torch.cuda.is_available():
            text += (
                "\n(no GPU: the Triton kernels ran in the interpreter; these times mean nothing)"
            )
        part = "-" + "-".join(ops) if ops else ""
        path = f"benchmarks/results/gemm-gpu-{device_slug()}-{stamp}{part}.json"
        emit(text, rows, path, gpu_env=True, ratios=gpu.ratios(rows))
    if args.suite == "gpu-stream":
        from qkernels.bench import gpu_stream

        copy_gbs, fq_rows, lstm_rows = gpu_stream.run_gpu_stream_suite(ci=ci)
        text = gpu_stream.format_tables(copy_gbs, fq_rows, lstm_rows)
        if not torch.cuda.is_available():
            text += "\n(no GPU: CPU tensors, a smoke run; these times mean nothing)"
        emit(
            text,
            fq_rows,
            f"benchmarks/results/stream-gpu-{device_slug()}-{stamp}.json",
            gpu_env=True,
            copy_gb_per_s=copy_gbs,
            lstm=[asdict(r) for r in lstm_rows],
        )
    if args.suite == "gpu-model":
        from qkernels.bench import gpu_model

        rows = gpu_model.run_gpu_model_suite(ci=ci, compiled=args.compile)
        text = gpu_model.format_gpu_model_table(rows)
        if not torch.cuda.is_available():
            text += "\n(no GPU: the CI sizes on CPU, a smoke run; these numbers mean nothing)"
        emit(text, rows, f"benchmarks/results/model-gpu-{device_slug()}-{stamp}.json", gpu_env=True)
    if args.suite in ("model", "all"):
        import transformers

        from qkernels.finetune import load_tokenizer, model_path

        path = model_path(args.model)
        hf_model = transformers.AutoModel.from_pretrained(path)
        rows = model.run_model_suite(
            hf_model,
            load_tokenizer(path),
            args.model,
            model.CI_SHAPES if ci else model.FULL_SHAPES,
            args.min_run_time,
            compile_=args.compile,
            peers=args.peers,
        )
        name = Path(args.model).name.replace(" ", "-")
        if args.plot:
            from qkernels.bench import plots

            chart = plots.model_chart([asdict(r) for r in rows], args.plot, name, stamp)
            print(f"chart: {chart}")
        emit(
            model.format_model_table(rows),
            rows,
            f"benchmarks/results/model-{name}-cpu-{stamp}.json",
        )
    if args.suite in ("llm", "all"):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            rows = llm.run_llm_suite(
                Path(tmp), ci=ci, compile_=args.compile, runs=1 if ci else args.runs,
                model=args.llm_model,
            )  # fmt: skip
        extra = {"summary": llm.summarize(rows)}
        if args.plot:
            from qkernels.bench import plots

            print(f"chart: {plots.llm_chart(extra['summary'], args.plot, stamp)}")
        emit(llm.format_llm_table(rows), rows, f"benchmarks/results/llm-cpu-{stamp}.json", **extra)
    if args.suite in ("lora", "all"):
        rows = lora.run_lora_op_suite(
            lora.CI_OP_CASES if ci else lora.FULL_OP_CASES, args.min_run_time
        )
        steps = lora.run_lora_step_suite(
            lora.CI_MODEL if ci else lora.FULL_MODEL,
            lora.CI_STEP_CONFIGS if ci else lora.STEP_CONFIGS,
            rounds=1 if ci else lora.FULL_ROUNDS,
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

    if args.task == "lstm-lm":
        lstm_lm_cmd(args)
        return
    cfg = FinetuneConfig(
        model=args.model,
        task=args.task,
        method=args.method,
        output=args.output,
        train=args.train,
        valid=args.valid,
        steps=100 if args.steps is None else args.steps,
        batch_size=args.batch_size,
        lr=5e-5 if args.lr is None else args.lr,
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
        float_embeddings=args.float_embeddings,
        fsdp=args.fsdp,
        valid_fraction=args.valid_fraction,
        calib_batches=args.calib_batches,
        resume=args.resume,
        progress=not args.no_progress,
    )
    result = finetune(cfg)
    if result.get("world_size", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(format_report(result))
        print(f"report: {Path(args.output) / 'report.json'}, model: {Path(args.output) / 'model'}")


def lstm_lm_cmd(args: argparse.Namespace) -> None:
    from qkernels.lstm_lm import LstmLmConfig, format_report, run

    cfg = LstmLmConfig(
        output=args.output,
        method=args.method,
        train=args.train,
        valid=args.valid,
        valid_fraction=args.valid_fraction,
        steps=600 if args.steps is None else args.steps,
        qat_steps=args.qat_steps,
        lr=3e-3 if args.lr is None else args.lr,
        vocab_size=args.vocab_size,
        hidden=args.hidden,
        layers=args.layers,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(format_report(run(cfg)))
    print(f"report: {Path(args.output) / 'report.json'}, model: {Path(args.output) / 'model'}")


def quantize_cmd(args: argparse.Namespace) -> None:
    import qkernels
    from qkernels.finetune import has_tokenizer, model_path
    from qkernels.plan import swap_plan

    path = model_path(args.model)
    model = _load_any(path)
    # Fused activations and handoff norms are not quantized modules (they stand beside one)
    beside = ("FusedActivation", "HandoffLayerNorm", "HandoffRMSNorm")
    already = {n: s for n, s in swap_plan(model).items() if s["type"] not in beside}
    if already:
        kinds = sorted({spec["type"] for spec in already.values()})
        raise ValueError(
            f"{args.model} is already quantized ({len(already)} qkernels modules: "
            f"{', '.join(kinds)}); quantize takes a float model directory"
        )
    report = qkernels.swap(model, args.method, embeddings=args.embeddings)
    qkernels.save(model, args.output)
    if has_tokenizer(path):
        _copy_tokenizer(path, args.output)
    else:  # quantizing needs none; finetune and eval of the output will
        print(
            f"warning: {path} holds no tokenizer, so {args.output} has none either; copy it "
            "there before `qkernels finetune` or `eval`",
            file=sys.stderr,
        )
    print(f"{report}\nsaved: {args.output}")


METRICS = {"classification": "accuracy", "causal-lm": "perplexity"}


def eval_cmd(args: argparse.Namespace) -> None:
    from qkernels._memory import format_peak_memory, peak_memory
    from qkernels.finetune import (
        FinetuneConfig,
        check_tokenizer,
        eval_batches,
        evaluate,
        fit_length,
        latency_ms,
        load_data,
        load_tokenizer,
        model_bytes,
        model_path,
        set_loss_type,
    )

    path = model_path(args.model)
    check_tokenizer(path)
    model = _load_any(path)
    set_loss_type(model, args.task)
    tokenizer = load_tokenizer(path)
    if args.task == "classification":
        if args.data is None:
            raise ValueError("classification eval needs --data (CSV/JSONL with text,label)")
        valid = _labelled_by_name(model, args.data)
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
    result = {
        "task": args.task,
        "metric_name": METRICS[args.task],
        "metric": evaluate(args.task, model, valid, tokenizer, max_length),
        "examples": len(valid.texts),
        "bytes": model_bytes(model),
        "latency_ms": latency_ms(model, next(eval_batches(valid, 32, tokenizer, max_length))),
        "memory": peak_memory(),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{'model':<10} {args.model}")
    print(f"{result['metric_name']:<10} {result['metric']:.4f}  ({result['examples']} examples)")
    print(f"{'size':<10} {result['bytes'] / 1e6:.2f} MB")
    print(f"{'latency':<10} {result['latency_ms']:.1f} ms (one batch of up to 32)")
    print(format_peak_memory(result["memory"]))


def _labelled_by_name(model, data_file: str):
    """The eval file's labels mapped to the model's class ids by name (config.id2label,
    written at fine-tuning); labels the model does not know are an error. Class ids
    written as integers also work for models without label names."""
    from qkernels import data as qdata
    from qkernels.finetune import Dataset

    rows = qdata.read_labelled(data_file)
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()}
    num_labels = len(model.config.id2label or {})
    ids = []
    for _, label in rows:
        if label in label2id:
            ids.append(label2id[label])
        elif label.isdigit() and int(label) < num_labels:
            ids.append(int(label))
        else:
            known = ", ".join(sorted(label2id)) or "none"
            raise ValueError(
                f"label {label!r} in {data_file} is not one of the model's labels ({known}; "
                "config.json id2label)"
            )
    return Dataset([t for t, _ in rows], ids)


def _load_any(path: str):
    """A saved model (qkernels.save, or save_pretrained with or without a swap):
    the architecture comes from its config.json, the swap plan too if any."""
    import qkernels

    if Path(path).is_dir() and not (Path(path) / "config.json").exists():
        raise ValueError(
            f"{path} is not a model directory (no config.json): give a directory written "
            "by save_pretrained, `qkernels finetune` (OUTPUT/model) or `qkernels quantize`"
        )
    return qkernels.load(path)


def _copy_tokenizer(src: str, dst: str) -> None:
    import transformers

    transformers.AutoTokenizer.from_pretrained(src).save_pretrained(dst)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qkernels", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (or QKERNELS_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
    f = sub.add_parser(
        "finetune", help="swap, fine-tune (QAT / low-rank / LoRA), convert, save", **fmt
    )
    f.add_argument(
        "--model",
        default=None,
        help="HF model directory (with tokenizer), or 'minilm'; not for lstm-lm (built here)",
    )
    f.add_argument("--task", required=True, help="classification | causal-lm | distill | lstm-lm")
    f.add_argument(
        "--method",
        required=True,
        help="fp32 | qat | ptq | w8a8 | w8a16 | lowrank | lora (lstm-lm: qat | w8a8)",
    )
    f.add_argument("--output", required=True, help="directory for model/, report.json, checkpoints")
    f.add_argument(
        "--train",
        default="builtin",
        help="classification: CSV/JSONL with text,label; causal-lm / distill: a text file "
        "(paragraphs split at blank lines), or 'builtin' (Python's language reference)",
    )
    f.add_argument(
        "--valid",
        default=None,
        help="evaluation file like --train; without it --valid-fraction of --train is held out",
    )
    f.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="without --valid: the fraction of --train held out for evaluation (seeded)",
    )
    f.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (100; lstm-lm: 600 in fp32)"
    )
    f.add_argument("--batch-size", type=int, default=16, help="examples per step (per rank)")
    f.add_argument(
        "--lr", type=float, default=None, help="AdamW peak learning rate (5e-5; lstm-lm 3e-3)"
    )
    f.add_argument("--max-length", type=int, default=128, help="tokens per example (truncated)")
    f.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (0: end)")
    f.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (0: end)")
    f.add_argument("--seed", type=int, default=0, help="data order, held-out split, init")
    f.add_argument("--act", default="dynamic", help="QAT activations: dynamic|minmax|ema|lsq")
    f.add_argument("--weight-lsq", action="store_true", help="QAT: learned weight scales (LSQ)")
    f.add_argument("--rank", type=int, default=None, help="lowrank: rank; lora: r (default 16)")
    f.add_argument("--energy", type=float, default=None, help="lowrank: kept singular energy")
    f.add_argument("--int8", action="store_true", help="lowrank: convert the factors to int8")
    f.add_argument("--alpha", type=float, default=32.0, help="lora: scaling = alpha / rank")
    f.add_argument("--base", default="w8a8", help="lora: the frozen int8 base, w8a8 | w8a16")
    f.add_argument("--lora-dropout", type=float, default=0.0, help="lora: adapter input dropout")
    f.add_argument(
        "--target-modules", default=None, help="lora: comma-separated module names (PEFT rule)"
    )
    f.add_argument(
        "--merge", action="store_true", help="lora: save the merged int8 model (W + scaling BA)"
    )
    f.add_argument(
        "--float-embeddings",
        action="store_true",
        help="lora: keep the frozen embedding tables float (default: int8, as the Linears)",
    )
    f.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard parameters, gradients and optimizer state (FSDP2, one "
        "unit per transformer block) instead of replicating them (DDP)",
    )
    f.add_argument(
        "--calib-batches", type=int, default=8, help="ptq / static QAT: calibration batches"
    )
    f.add_argument("--qat-steps", type=int, default=200, help="lstm-lm: QAT fine-tuning steps")
    f.add_argument("--vocab-size", type=int, default=6000, help="lstm-lm: words kept + <unk>")
    f.add_argument("--hidden", type=int, default=256, help="lstm-lm: embedding / LSTM size")
    f.add_argument("--layers", type=int, default=2, help="lstm-lm: LSTM layers")
    f.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    q = sub.add_parser(
        "quantize", help="one-shot int8 conversion of a float model directory", **fmt
    )
    q.add_argument("model", help="HF model directory (with tokenizer), or 'minilm'")
    q.add_argument("--method", default="w8a8", choices=["w8a8", "w8a16"], help="int8 scheme")
    q.add_argument("--output", required=True, help="directory for the int8 model")
    q.add_argument(
        "--embeddings",
        action="store_true",
        help="embedding tables in int8 too (per-row scales; MiniLM 58.7 -> 23.0 MB)",
    )
    e = sub.add_parser(
        "eval", help="accuracy (classification) or perplexity (causal-lm), size, latency", **fmt
    )
    e.add_argument("model", help="a model directory (float or qkernels)")
    e.add_argument(
        "--task", required=True, choices=["classification", "causal-lm"], help="what to score"
    )
    e.add_argument(
        "--data",
        default=None,
        help="classification: CSV/JSONL with text,label (labels by name); causal-lm: a text "
        "file (default: the builtin held-out text)",
    )
    e.add_argument("--max-length", type=int, default=128, help="tokens per example (truncated)")
    e.add_argument("--json", action="store_true", help="print JSON instead of the table")
    sub.add_parser("info", help="versions, build, CPU features, kernel per op")
    b = sub.add_parser("bench", help="benchmark tables against peers (one process, ratios)", **fmt)
    b.add_argument(
        "--suite",
        choices=[
            "linear",
            "qat",
            "lstm",
            "lora",
            "model",
            "llm",
            "gpu",
            "gpu-stream",
            "gpu-model",
            "all",
        ],  # fmt: skip
        default="linear",
        help="which op group (gpu: the Triton / CUDA GEMM suite; gpu-stream: fake-quant "
        "against the copy bandwidth and Int8LSTM against cuDNN; gpu-model: Llama-shaped "
        "prefill / decode, BERT embedding throughput, a QAT training step; model: a whole HF "
        "model profiled by op class, fp32 vs w8a8; llm: generation on the CPU, prefill / "
        "decode tokens/s and peak RSS against HF fp32 / bf16 and llama.cpp Q8_0)",
    )
    b.add_argument(
        "--llm-model",
        default=None,
        help="llm suite: a Llama-architecture HF directory (default: a TinyLlama-shaped "
        "model built from its config, random weights)",
    )
    b.add_argument("--runs", type=int, default=2, help="llm suite: processes per implementation")
    b.add_argument("--model", default="minilm", help="model suite: HF model directory")
    b.add_argument(
        "--shapes",
        choices=["full", "ci", "quick"],
        default="full",
        help="ci: one small shape per case; quick (gpu suite): the targets' shapes and one M "
        "per autotuning bucket",
    )
    b.add_argument(
        "--weights",
        choices=["hot", "cold", "both"],
        default="both",
        help="linear: cold rotates weight copies past the L3 cache",
    )
    b.add_argument(
        "--compile",
        action="store_true",
        help="linear: torch.compile the torchao peer; model: also time both models compiled; "
        "gpu-model: also decode with a static KV cache (compiled by transformers on a GPU); "
        "llm: also the compiled rows (static-cache generate under torch.compile)",
    )
    b.add_argument(
        "--peers",
        action="store_true",
        help="model: also time ONNX Runtime int8, PT2E int8 + compile and torchao int8 + "
        "compile (the `peers` extra)",
    )
    b.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory for reuse (qkernels.keep_freed_memory) for every "
        "timed implementation alike; recorded in the results' environment",
    )
    b.add_argument("--ops", default=None, help="gpu suite: only these ops (comma-separated)")
    b.add_argument("--m", default=None, help="gpu suite: only these M (comma-separated)")
    b.add_argument(
        "--plot",
        default=None,
        metavar="DIR",
        help="linear / model: write PNG charts here (speedups; roofline against measured "
        "ceilings); needs matplotlib",
    )
    b.add_argument("--min-run-time", type=float, default=0.3, help="seconds per measurement")
    b.add_argument(
        "--json",
        default=None,
        help="where to write results (default benchmarks/results/...; '-' for none)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torchao (imported by transformers' quantizer registry when it is installed) registers
    # Enum constants with torch's pytree, which logs a deprecation line per Enum on every
    # command: not qkernels' doing, and nothing a user can act on.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
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
