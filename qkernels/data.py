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


def _jsonl_rows(p: Path, path: str | Path) -> list[dict]:
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"data file {str(path)!r} line {n} is not valid JSON ({e})") from e
        if not isinstance(row, dict):
            raise ValueError(
                f"data file {str(path)!r} line {n} must be a JSON object with 'text' and "
                f"'label', got {type(row).__name__}"
            )
        rows.append(row)
    return rows


def read_labelled(path: str | Path) -> list[tuple[str, str]]:
    """(text, label) rows of a CSV or JSONL file with `text` and `label` columns; a file
    that is not that is one clear error naming it (and the line)."""
    p = _require_file(path, "data")
    try:
        if p.suffix == ".jsonl":
            rows = _jsonl_rows(p, path)
        else:
            with p.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"data file {str(path)!r} is not readable CSV / JSONL text ({e})") from e
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no rows")
    out = []
    for n, row in enumerate(rows, 1):
        missing = {"text", "label"} - {k for k, v in row.items() if v is not None}
        if missing:
            raise ValueError(
                f"data file {str(path)!r} row {n} lacks column(s) {sorted(missing)}; it has "
                f"{sorted(k for k in row if k is not None)}"
            )
        out.append((str(row["text"]), str(row["label"])))
    return out


def read_text(path: str | Path) -> list[str]:
    """Paragraphs (blank-line separated) of a plain text file."""
    try:
        text = _require_file(path, "text").read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"text file {str(path)!r} is not UTF-8 text ({e})") from e
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
