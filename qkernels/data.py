"""Datasets for the fine-tuning loop: labelled text (CSV / JSONL), plain text,
and the English text that ships with Python (for runs that need no download)."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path


def pydoc_paragraphs(max_chars: int = 400) -> list[str]:
    """English paragraphs of the Python language reference (pydoc_data.topics)."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(para.split())
            if len(text) > 80 and not text.startswith(("*", "|", "+", ">>>")):
                out.append(text[:max_chars])
    return out


def split_builtin(held_out_every: int = 10) -> tuple[list[str], list[str]]:
    """(train, held-out) paragraphs: every tenth paragraph is held out."""
    paras = pydoc_paragraphs()
    train = [p for i, p in enumerate(paras) if i % held_out_every]
    return train, [p for i, p in enumerate(paras) if i % held_out_every == 0]


def _require_file(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    if p.stat().st_size == 0:
        raise ValueError(f"{what} file {str(path)!r} is empty")
    return p


def read_labelled(path: str | Path) -> list[tuple[str, str]]:
    """(text, label) rows of a CSV or JSONL file with `text` and `label` columns."""
    p = _require_file(path, "data")
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    else:
        with p.open(newline="") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no rows")
    missing = {"text", "label"} - set(rows[0])
    if missing:
        raise ValueError(
            f"data file {str(path)!r} lacks column(s) {sorted(missing)}; it has {sorted(rows[0])}"
        )
    return [(str(r["text"]), str(r["label"])) for r in rows]


def read_text(path: str | Path) -> list[str]:
    """Paragraphs (blank-line separated) of a plain text file."""
    text = _require_file(path, "text").read_text()
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    paras = [p for p in paras if p]
    if not paras:
        raise ValueError(f"text file {str(path)!r} has no text")
    return paras


def held_out(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, valid): a seeded random `fraction` of `items` held out (without --valid)."""
    n = max(1, round(len(items) * fraction))
    if n >= len(items):
        raise ValueError(
            f"--train holds {len(items)} examples: too few to hold out "
            f"{fraction:g} of them for evaluation; pass --valid"
        )
    chosen = set(random.Random(seed).sample(range(len(items)), n))
    return (
        [x for i, x in enumerate(items) if i not in chosen],
        [x for i, x in enumerate(items) if i in chosen],
    )
