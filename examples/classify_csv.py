"""Seed-style classification: fine-tune MiniLM (fp32) on a small CSV, then the same
run quantization-aware, converted to int8; compare accuracy, size and speed.

The CSV is made here from the Python language reference that ships with Python
(pydoc_data.topics): each paragraph is labelled by the part of the reference it
comes from — "statement" topics (if, for, try, class, import, ...) or
"expression" topics (atoms, calls, operators, comparisons, lambdas, ...).
Held out: every fifth topic, so validation paragraphs come from unseen topics.

    .venv/bin/python examples/classify_csv.py [--steps 300]
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

from qkernels.finetune import FinetuneConfig, finetune, format_report

STATEMENTS = {
    "assert",
    "assignment",
    "async",
    "augassign",
    "break",
    "class",
    "compound",
    "continue",
    "del",
    "exec",
    "for",
    "function",
    "global",
    "if",
    "import",
    "nonlocal",
    "pass",
    "raise",
    "return",
    "try",
    "while",
    "with",
    "yield",
    "match",
    "typealias",
}
EXPRESSIONS = {
    "atom-identifiers",
    "atom-literals",
    "attribute-access",
    "attribute-references",
    "binary",
    "bitwise",
    "booleans",
    "calls",
    "comparisons",
    "conditional-expressions",
    "lambda",
    "lists",
    "numbers",
    "operator-summary",
    "power",
    "shifting",
    "slicings",
    "subscriptions",
    "unary",
    "string-methods",
    "formatstrings",
    "integers",
    "floating",
    "imaginary",
    "strings",
    "dict",
    "sequence-types",
    "typesseq",
}


def make_csv(out_dir: Path) -> tuple[Path, Path]:
    from pydoc_data.topics import topics

    rows = {"train": [], "valid": []}
    keys = [k for k in sorted(topics) if k in STATEMENTS or k in EXPRESSIONS]
    for i, key in enumerate(keys):
        label = "statement" if key in STATEMENTS else "expression"
        for para in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(para.split())
            if len(text) > 80 and not text.startswith(("*", "|", "+", ">>>")):
                rows["valid" if i % 5 == 0 else "train"].append((text[:400], label))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split in ("train", "valid"):
        path = out_dir / f"{split}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows[split])
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--output", default="runs/classify_csv")
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
        lr=5e-5,
        max_length=128,
    )
    fp32 = finetune(FinetuneConfig(method="fp32", output=str(out / "fp32"), **common))
    print(format_report(fp32))
    qat = finetune(FinetuneConfig(method="qat", output=str(out / "qat"), **common))
    print(format_report(qat))
    gap = 100 * (fp32["after"]["metric"] - qat["after"]["metric"])
    print(
        f"\naccuracy: fp32 fine-tuning {fp32['after']['metric']:.4f}, int8 after QAT "
        f"{qat['after']['metric']:.4f} ({gap:+.2f} points below fp32)"
    )
    return {"fp32": fp32, "qat": qat}


if __name__ == "__main__":
    main()
