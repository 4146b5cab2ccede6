"""Word-level LSTM language model: train fp32, then quantization-aware fine-tune
with QATLSTM (learned weight scales), convert to Int8LSTM, and compare
perplexity and speed (fp32, int8 after plain post-training conversion, int8
after QAT).

Text: the Python language reference that ships with Python itself
(pydoc_data.topics): real English, no download. Run:

    .venv/bin/python examples/lstm_lm_qat.py            # ~3 minutes on 2 cores
    .venv/bin/python examples/lstm_lm_qat.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import time
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import qkernels


def corpus(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Token ids of the train / held-out split (every 10th topic held out)."""
    from pydoc_data.topics import topics

    docs = [re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", topics[k].lower()) for k in sorted(topics)]
    train_docs = [d for i, d in enumerate(docs) if i % 10]
    counts = Counter(w for d in train_docs for w in d)
    vocab = {w: i + 1 for i, (w, _) in enumerate(counts.most_common(vocab_size - 1))}  # 0 = <unk>

    def ids(ds):
        return torch.tensor([vocab.get(w, 0) for d in ds for w in d + ["<eos>"]])

    return ids(train_docs), ids([d for i, d in enumerate(docs) if i % 10 == 0]), len(vocab) + 1


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    n = ids.numel() // batch
    return ids[: n * batch].view(batch, n).t().contiguous()  # [T_total, B]


class LanguageModel(nn.Module):
    def __init__(self, vocab: int, dim: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(dim, dim, num_layers=layers, dropout=dropout)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.rnn(self.drop(self.embed(ids)))[0]))


def windows(data: torch.Tensor, bptt: int):
    for i in range(0, data.shape[0] - 1, bptt):
        n = min(bptt, data.shape[0] - 1 - i)
        yield data[i : i + n], data[i + 1 : i + 1 + n]


def train(
    model: nn.Module, data: torch.Tensor, steps: int, lr: float, bptt: int, desc: str
) -> None:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    batches = list(windows(data, bptt))
    bar = tqdm(range(steps), desc=desc)
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
def evaluate(model: nn.Module, data: torch.Tensor, bptt: int) -> tuple[float, float]:
    """(perplexity, seconds) over the held-out data."""
    model.eval()
    total, count = 0.0, 0
    start = time.perf_counter()
    for x, y in windows(data, bptt):
        logits = model(x)
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
        ).item()
        count += y.numel()
    return math.exp(total / count), time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and few steps")
    parser.add_argument("--json", default=None, help="write the results table here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    vocab_size, dim, steps, qat_steps = (500, 32, 20, 10) if args.quick else (6000, 256, 600, 200)
    bptt, batch = 35, 20
    train_ids, valid_ids, vocab = corpus(vocab_size)
    train_data, valid_data = batchify(train_ids, batch), batchify(valid_ids, 10)
    if args.quick:
        valid_data = valid_data[:200]

    fp32 = LanguageModel(vocab, dim, layers=2, dropout=0.2)
    train(fp32, train_data, steps, 3e-3, bptt, "fp32 training")
    results = {"fp32": evaluate(fp32, valid_data, bptt)}

    ptq = copy.deepcopy(fp32)
    qkernels.swap(ptq, "w8a8", include=["rnn"])  # the LSTM: the int8 kernel of this example
    results["int8, post-training conversion"] = evaluate(ptq, valid_data, bptt)

    qat = copy.deepcopy(fp32)
    qkernels.swap(qat, "qat", include=["rnn"], weight_lsq=True)
    train(qat, train_data, qat_steps, 5e-4, bptt, "QAT fine-tuning (QATLSTM, LSQ scales)")
    results["QAT (fake-quant forward)"] = evaluate(qat, valid_data, bptt)
    qkernels.convert(qat)
    results["int8 after QAT (Int8LSTM)"] = evaluate(qat, valid_data, bptt)

    base_time = results["fp32"][1]
    print(f"\nheld-out perplexity, {valid_ids.numel()} tokens of the Python language reference")
    print(f"{'model':<34} {'perplexity':>10} {'eval s':>8} {'x fp32':>7}")
    for name, (ppl, secs) in results.items():
        print(f"{name:<34} {ppl:>10.2f} {secs:>8.2f} {base_time / secs:>7.2f}")
    table = {k: {"perplexity": p, "eval_seconds": s} for k, (p, s) in results.items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return table


if __name__ == "__main__":
    main()
