"""Top-1 next-token agreement with fp32 on real text, qkernels against llama.cpp Q8_0: a
random-weight model's logits are nearly flat, so its argmax flips under any rounding and
says little about quality. This trains a small Llama here in fp32 (a SentencePiece
vocabulary and the training split of the English text that ships with Python), saves it,
and runs `qkernels bench --suite llm`'s workers on it — HF fp32 / bf16, qkernels w8a16 /
w8a8 (every matrix int8, as Q8_0), llama.cpp Q8_0 through its own converter — scoring the
held-out paragraphs. Speeds at this size mean nothing; the agreement is the point.

    .venv/bin/python examples/llm_agreement.py [--steps 600] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
from tqdm import tqdm

from qkernels.bench import llm
from qkernels.bench.report import environment
from qkernels.data import split_builtin

SEQ, BATCH, VOCAB = 128, 16, 2000


def train(model, data: torch.Tensor, steps: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="train fp32 Llama"):
        batch = data[rng.sample(range(len(data)), BATCH)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def main(argv: list[str] | None = None) -> dict:
    import sentencepiece as spm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-tokens", type=int, default=1024)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    train_text, held_out = split_builtin()
    work = Path(tempfile.mkdtemp(prefix="qkernels-llm-agreement-"))
    (work / "train.txt").write_text("\n".join(train_text))
    spm.SentencePieceTrainer.train(
        input=str(work / "train.txt"), model_prefix=str(work / "spm"), vocab_size=VOCAB,
        model_type="bpe", minloglevel=2, bos_id=1, eos_id=2, unk_id=0,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
    ids = [t for p in train_text for t in sp.encode(p)]
    rows = len(ids) // SEQ
    data = torch.tensor(ids[: rows * SEQ]).view(rows, SEQ)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    losses = train(model, data, args.steps)
    model.eval().save_pretrained(work / "hf")
    (work / "spm.model").rename(work / "hf" / "tokenizer.model")
    eval_ids = [t for p in held_out for t in sp.encode(p)][: args.eval_tokens]
    results = llm.run_llm_suite(work, ci=True, runs=1, model=str(work / "hf"), agree_ids=eval_ids)
    print(llm.format_llm_table(results))
    out = {
        "environment": environment(),
        "model": "Llama, 4 x 256 (8 heads, 4 KV heads), SentencePiece BPE vocabulary of 2000",
        "train": {"steps": args.steps, "batch": BATCH, "seq": SEQ, "final_loss": losses[-1]},
        "eval_tokens": len(eval_ids),
        "summary": llm.summarize(results),
        "rows": [asdict(r) for r in results],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"results: {args.json}")
    return out


if __name__ == "__main__":
    main()
