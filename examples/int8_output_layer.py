"""What an int8 output layer costs a causal LM: a small GPT-2 trained here in fp32 on the
English text that ships with Python (MiniLM's WordPiece vocabulary, 30522 entries, so the
output layer is most of the weights), then scored on held-out paragraphs: perplexity and
top-1 next-token agreement with the fp32 model, for the w8a8 body with the output layer
in fp32 (qkernels' default) and as per-channel w8a16 / w8a8 (`swap(..., output_layer=)`).

    .venv/bin/python examples/int8_output_layer.py [--steps 400] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
from pathlib import Path

import torch
import transformers
from tqdm import tqdm

import qkernels
from qkernels.bench.report import environment
from qkernels.data import split_builtin
from qkernels.demo import load_minilm

SEQ, BATCH = 64, 8


def encode(tokenizer, paragraphs: list[str]) -> torch.Tensor:
    """Every paragraph's tokens, concatenated and cut into SEQ-token rows."""
    ids = [t for p in paragraphs for t in tokenizer(p)["input_ids"]]
    rows = len(ids) // SEQ
    return torch.tensor(ids[: rows * SEQ]).view(rows, SEQ)


def train(model, data: torch.Tensor, steps: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="train fp32 GPT-2"):
        batch = data[rng.sample(range(len(data)), BATCH)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def score(model, data: torch.Tensor, reference: torch.Tensor | None) -> dict:
    """Perplexity, and the share of next-token argmaxes equal to the reference's."""
    model.eval()
    nll, tokens, same, argmaxes = 0.0, 0, 0, []
    for i in range(0, len(data), BATCH):
        batch = data[i : i + BATCH]
        logits = model(input_ids=batch).logits[:, :-1].float()
        target = batch[:, 1:]
        nll += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
        ).item()
        tokens += target.numel()
        argmaxes.append(logits.argmax(-1))
    top1 = torch.cat(argmaxes)
    if reference is not None:
        same = (top1 == reference).float().mean().item()
    return {"perplexity": math.exp(nll / tokens), "top1_agreement": same, "top1": top1}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    tokenizer, _ = load_minilm()
    train_text, held_out = split_builtin()
    train_ids, eval_ids = encode(tokenizer, train_text), encode(tokenizer, held_out)[:64]
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=SEQ, n_embd=256, n_layer=4, n_head=4,
        tie_word_embeddings=True, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    fp32 = transformers.GPT2LMHeadModel(config)
    losses = train(fp32, train_ids, args.steps)
    ref = score(fp32, eval_ids, None)
    rows = [{"config": "fp32", "perplexity": ref["perplexity"], "top1_agreement": 1.0}]
    for name, output_layer in (
        ("w8a8 body, fp32 output layer (default)", None),
        ("w8a8 body, w8a16 output layer", "w8a16"),
        ("w8a8 body, w8a8 output layer", "w8a8"),
        ("w8a16 body, w8a16 output layer", "w8a16 all"),
    ):
        model = copy.deepcopy(fp32)
        method = "w8a16" if output_layer == "w8a16 all" else "w8a8"
        qkernels.swap(model, method, output_layer=output_layer and output_layer.split()[0])
        got = score(model, eval_ids, ref["top1"])
        rows.append({"config": name, **{k: v for k, v in got.items() if k != "top1"}})
    print(f"{'config':<42} {'perplexity':>10} {'top-1 agreement':>16}")
    for r in rows:
        print(f"{r['config']:<42} {r['perplexity']:>10.2f} {r['top1_agreement']:>16.4f}")
    result = {
        "environment": environment(),
        "model": "GPT-2, 4 x 256, tied output layer, MiniLM's 30522-entry vocabulary",
        "train": {"steps": args.steps, "batch": BATCH, "seq": SEQ, "final_loss": losses[-1]},
        "eval_tokens": int(eval_ids[:, 1:].numel()),
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"results: {args.json}")
    return rows


if __name__ == "__main__":
    main()
