"""LoRA on an int8 base: fine-tune MiniLM for classification with trainable low-rank
adapters on frozen int8 (W8A8) weights, against full fp32 fine-tuning on the same CSV
(the one examples/classify_csv.py makes from the Python language reference); then the
adapters merged into a plain int8 model, and saved in PEFT's format.

    .venv/bin/python examples/lora_int8.py [--steps 300]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from classify_csv import make_csv

import qkernels
from qkernels.finetune import FinetuneConfig, finetune, format_report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--output", default="runs/lora_int8")
    args = parser.parse_args(argv)
    out = Path(args.output)
    train, valid = make_csv(out / "data")
    common = dict(
        model="minilm",
        task="classification",
        train=str(train),
        valid=str(valid),
        steps=args.steps,
        batch_size=16,
        max_length=128,
    )
    runs = {
        "fp32 full fine-tuning": FinetuneConfig(
            method="fp32", output=str(out / "fp32"), lr=5e-5, **common
        ),
        f"LoRA r={args.rank} on int8 (w8a8)": FinetuneConfig(
            method="lora",
            output=str(out / "lora"),
            lr=1e-3,
            rank=args.rank,
            alpha=2 * args.rank,
            **common,
        ),
        "  ... merged into int8": FinetuneConfig(
            method="lora",
            output=str(out / "merged"),
            lr=1e-3,
            rank=args.rank,
            alpha=2 * args.rank,
            merge=True,
            **common,
        ),
    }
    results = {}
    for name, cfg in runs.items():
        results[name] = finetune(cfg)
        print(f"\n== {name}\n{format_report(results[name])}")
    # The trained adapters alone, in PEFT's format (peft.PeftModel.from_pretrained reads it).
    lora_model = qkernels.load(out / "lora" / "model")
    qkernels.save_adapters(lora_model, out / "adapters", task_type="SEQ_CLS")
    print(f"\nadapters (PEFT format): {out / 'adapters'}")
    print(f"\n{'':<28} {'accuracy':>9} {'trainable params':>17} {'size MB':>8} {'ms/batch':>9}")
    for name, r in results.items():
        a = r["after"]
        print(
            f"{name:<28} {a['metric']:>9.4f} {r['trainable_params']:>17,} "
            f"{a['bytes'] / 1e6:>8.1f} {a['latency_ms']:>9.1f}"
        )
    return results


if __name__ == "__main__":
    main()
