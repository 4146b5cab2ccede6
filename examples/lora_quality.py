"""LoRA quality on the classify_csv task (MiniLM, Python-reference paragraphs, the
example's batch, length and steps): full fp32 fine-tuning, PEFT LoRA on the fp32 base,
and qkernels LoRA on the frozen int8 base (w8a8), scored before and after merging into
int8 (one run) — the same loop, data, schedule and seed for all; the two LoRA runs share
r, alpha, lr and target modules (every Linear but the head, which both train in full).

    .venv/bin/python examples/lora_quality.py [--steps 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from classify_csv import make_csv
from torch import nn

from qkernels.bench.report import environment
from qkernels.data import read_labelled
from qkernels.finetune import FinetuneConfig, finetune, measure, setup, train


def peft_lora(cfg: FinetuneConfig, rank: int, alpha: float) -> dict:
    """PEFT LoRA on the fp32 base, trained by the qkernels loop (`train` only reads the
    method to know that it trains)."""
    from peft import LoraConfig, get_peft_model

    job = setup(cfg)
    names = {n.rsplit(".", 1)[-1] for n, m in job.model.named_modules() if isinstance(m, nn.Linear)}
    names.discard("classifier")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=sorted(names),
        modules_to_save=["classifier"],
        task_type="SEQ_CLS",
    )
    job.model = get_peft_model(job.model, config)
    train(job)
    job.model.eval()
    return {"after": measure(job)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--output", default="runs/lora_quality")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    out = Path(args.output)
    train_csv, valid_csv = make_csv(out / "data")
    common = dict(
        model="minilm",
        task="classification",
        train=str(train_csv),
        valid=str(valid_csv),
        steps=args.steps,
        batch_size=16,
        max_length=128,
    )
    lora = dict(common, method="lora", rank=args.rank, alpha=args.alpha, lr=args.lora_lr)
    fp32 = finetune(FinetuneConfig(method="fp32", lr=5e-5, output=str(out / "fp32"), **common))
    peft = peft_lora(FinetuneConfig(output=str(out / "peft"), **lora), args.rank, args.alpha)
    qk = finetune(FinetuneConfig(output=str(out / "qk"), merge=True, **lora))
    accuracy = {
        "fp32 full fine-tuning": fp32["after"]["metric"],
        "PEFT LoRA, fp32 base": peft["after"]["metric"],
        "qkernels LoRA, int8 base": qk["unmerged_metric"],
        "qkernels LoRA, merged int8": qk["after"]["metric"],
    }
    ref = accuracy["PEFT LoRA, fp32 base"]
    print(f"\n{'':<28} {'accuracy':>9} {'vs PEFT fp32 (points)':>22}")
    for name, acc in accuracy.items():
        print(f"{name:<28} {acc:>9.4f} {100 * (acc - ref):>+22.2f}")
    valid = len(read_labelled(valid_csv))
    result = {
        "steps": args.steps,
        "rank": args.rank,
        "alpha": args.alpha,
        "accuracy": accuracy,
        "environment": environment(),
        "valid_examples": valid,
        "merge_error": qk.get("merge_error"),
        "note": (
            f"examples/lora_quality.py, one seed (0): MiniLM classification on the classify_csv "
            f"data (batch 16, max_length 128, {args.steps} steps); fp32 full fine-tuning lr "
            f"5e-5; both LoRA runs r={args.rank}, alpha={args.alpha:g}, lr {args.lora_lr:g}, "
            f"every Linear but the head (trained in full); one validation example is "
            f"{100 / valid:.2f} points"
        ),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
