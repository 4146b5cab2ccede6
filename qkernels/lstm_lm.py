"""`qkernels finetune --task lstm-lm`: a word-level LSTM language model on a text file,
trained in fp32, then made int8 — by post-training conversion (`--method w8a8`) or by
quantization-aware fine-tuning with QATLSTM and learned weight scales, then conversion
(`--method qat`) — with held-out perplexity, speed and size before and after.

Text files are split into paragraphs at blank lines (as for causal-lm); words are
lowercased runs of letters, runs of digits and single punctuation marks; the vocabulary
is the `vocab_size - 1` most frequent training words plus <unk> (id 0); every paragraph
ends with <eos>. Written to OUTPUT: model/ (qkernels.save), vocab.json, report.json.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import qkernels
from qkernels import data
from qkernels.finetune import model_bytes

METHODS = ("qat", "w8a8")
WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


@dataclass
class LstmLmConfig:
    output: str
    method: str = "qat"
    train: str = "builtin"  # a text file, or "builtin" (Python's language reference)
    valid: str | None = None
    valid_fraction: float = 0.1
    steps: int = 600  # fp32 training
    qat_steps: int = 200
    lr: float = 3e-3
    qat_lr: float = 5e-4
    vocab_size: int = 6000
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    batch_size: int = 20
    bptt: int = 35
    seed: int = 0
    progress: bool = True

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"--task lstm-lm takes --method {' or '.join(METHODS)}, got {self.method!r}"
            )
        for name in ("steps", "vocab_size", "hidden", "layers", "batch_size", "bptt"):
            if getattr(self, name) < 1:
                raise ValueError(f"lstm-lm: {name} must be >= 1, got {getattr(self, name)}")
        if self.qat_steps < 0 or not 0 < self.valid_fraction < 1 or self.vocab_size < 2:
            raise ValueError(
                "lstm-lm: need qat_steps >= 0, vocab_size >= 2 and valid_fraction in (0, 1)"
            )


class LanguageModel(nn.Module):
    """Embedding -> LSTM -> Linear over the vocabulary (inputs [T, B] of word ids)."""

    def __init__(self, vocab: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(hidden, hidden, num_layers=layers, dropout=dropout)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.rnn(self.drop(self.embed(ids)))[0]))


def paragraphs(cfg: LstmLmConfig) -> tuple[list[str], list[str]]:
    """(train, held-out) paragraphs; without --valid a seeded fraction is held out."""
    if cfg.train == "builtin":
        return data.split_builtin()
    train = data.read_text(cfg.train)
    if cfg.valid:
        return train, data.read_text(cfg.valid)
    return data.held_out(train, cfg.valid_fraction, cfg.seed)


def vocabulary(texts: list[str], size: int) -> dict[str, int]:
    """`size` ids: 0 <unk>, the size - 2 most frequent words, then <eos>."""
    counts = Counter(w for t in texts for w in WORD.findall(t.lower()))
    vocab = {w: i + 1 for i, (w, _) in enumerate(counts.most_common(size - 2))}
    vocab["<eos>"] = len(vocab) + 1
    return vocab


def encode(texts: list[str], vocab: dict[str, int]) -> torch.Tensor:
    eos = vocab.get("<eos>", 0)
    return torch.tensor([vocab.get(w, 0) for t in texts for w in [*WORD.findall(t.lower()), eos]])


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    n = ids.numel() // batch
    if n < 2:
        raise ValueError(f"lstm-lm: {ids.numel()} tokens are too few for batches of {batch}")
    return ids[: n * batch].view(batch, n).t().contiguous()  # [T_total, B]


def windows(stream: torch.Tensor, bptt: int):
    for i in range(0, stream.shape[0] - 1, bptt):
        n = min(bptt, stream.shape[0] - 1 - i)
        yield stream[i : i + n], stream[i + 1 : i + 1 + n]


def train(model: nn.Module, stream: torch.Tensor, steps: int, lr: float, cfg, desc: str) -> None:
    from tqdm import tqdm

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    batches = list(windows(stream, cfg.bptt))
    bar = tqdm(range(steps), desc=desc, disable=not cfg.progress)
    for step in bar:
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        loss = F.cross_entropy(model(x).reshape(-1, model.head.out_features), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")


@torch.no_grad()
def eval_seconds(models: dict[str, nn.Module], stream: torch.Tensor, bptt: int) -> dict:
    """Seconds per pass over (up to 40 windows of) `stream` for each model, timed
    interleaved, median of 5 rounds: a machine that gets busier halfway through slows
    every model alike instead of flattering the later one."""
    part = stream[: 40 * bptt + 1]
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(5):
        for name, model in models.items():
            model.eval()
            start = time.perf_counter()
            for x, _ in windows(part, bptt):
                model(x)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


@torch.no_grad()
def evaluate(model: nn.Module, stream: torch.Tensor, bptt: int) -> dict:
    """Held-out perplexity and the seconds it took."""
    model.eval()
    total, count = 0.0, 0
    start = time.perf_counter()
    for x, y in windows(stream, bptt):
        logits = model(x)
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
        ).item()
        count += y.numel()
    return {"perplexity": math.exp(total / count), "seconds": time.perf_counter() - start}


def run(cfg: LstmLmConfig) -> dict:
    """Train fp32, make the LSTM int8 by `cfg.method`, measure both, save; the report."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    train_text, valid_text = paragraphs(cfg)
    vocab = vocabulary(train_text, cfg.vocab_size)
    train_stream = batchify(encode(train_text, vocab), cfg.batch_size)
    valid_stream = batchify(encode(valid_text, vocab), min(10, cfg.batch_size))
    fp32 = LanguageModel(len(vocab) + 1, cfg.hidden, cfg.layers, cfg.dropout)
    train(fp32, train_stream, cfg.steps, cfg.lr, cfg, "fp32 LSTM LM")
    before = {**evaluate(fp32, valid_stream, cfg.bptt), "bytes": model_bytes(fp32)}
    model = copy.deepcopy(fp32)
    if cfg.method == "qat":
        qkernels.swap(model, "qat", include=["rnn"], weight_lsq=True)
        train(model, train_stream, cfg.qat_steps, cfg.qat_lr, cfg, "QAT (QATLSTM, LSQ)")
        qkernels.convert(model)
    else:
        qkernels.swap(model, "w8a8", include=["rnn"])
    after = {**evaluate(model, valid_stream, cfg.bptt), "bytes": model_bytes(model)}
    seconds = eval_seconds({"before": fp32, "after": model}, valid_stream, cfg.bptt)
    before["seconds"], after["seconds"] = seconds["before"], seconds["after"]
    out = Path(cfg.output)
    qkernels.save(model, out / "model")
    (out / "vocab.json").write_text(json.dumps(vocab))
    report = {
        "config": asdict(cfg),
        "task": "lstm-lm",
        "metric_name": "perplexity",
        "held_out_tokens": int(valid_stream.numel()),
        "before": before,
        "after": after,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def format_report(r: dict) -> str:
    b, a = r["before"], r["after"]
    method = "int8 after QAT" if r["config"]["method"] == "qat" else "int8 (post-training)"
    lines = [
        f"held-out perplexity over {r['held_out_tokens']} tokens "
        "(LSTM int8, embedding and head fp32); eval s: 40 windows, median of 5 interleaved",
        f"{'':<22} {'perplexity':>10} {'size (MB)':>10} {'eval s':>8}",
        f"{'fp32':<22} {b['perplexity']:>10.2f} {b['bytes'] / 1e6:>10.2f} {b['seconds']:>8.2f}",
        f"{method:<22} {a['perplexity']:>10.2f} {a['bytes'] / 1e6:>10.2f} {a['seconds']:>8.2f}",
        f"speedup {b['seconds'] / a['seconds']:.2f}x, size {b['bytes'] / a['bytes']:.2f}x smaller",
    ]
    return "\n".join(lines)
