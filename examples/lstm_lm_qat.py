"""Word-level LSTM language model: train fp32, then quantization-aware fine-tune
with QATLSTM (learned weight scales), convert to Int8LSTM, and compare
perplexity and speed (fp32, int8 after plain post-training conversion, int8
after QAT). The pieces are `qkernels.lstm_lm`'s, which `qkernels finetune --task
lstm-lm` runs; this example adds the post-training and fake-quant rows.

Text: the Python language reference that ships with Python itself
(pydoc_data.topics; every tenth paragraph held out): real English, no download. Run:

    .venv/bin/python examples/lstm_lm_qat.py            # ~3 minutes on 2 cores
    .venv/bin/python examples/lstm_lm_qat.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

import qkernels
from qkernels.lstm_lm import (
    LanguageModel,
    LstmLmConfig,
    batchify,
    encode,
    evaluate,
    paragraphs,
    train,
    vocabulary,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and few steps")
    parser.add_argument("--json", default=None, help="write the results table here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cfg = LstmLmConfig(output="", batch_size=20)
    if args.quick:
        cfg.vocab_size, cfg.hidden, cfg.steps, cfg.qat_steps = 500, 32, 20, 10
    train_text, valid_text = paragraphs(cfg)
    vocab = vocabulary(train_text, cfg.vocab_size)
    train_data = batchify(encode(train_text, vocab), cfg.batch_size)
    valid_data = batchify(encode(valid_text, vocab), 10)
    if args.quick:
        valid_data = valid_data[:200]

    fp32 = LanguageModel(len(vocab) + 1, cfg.hidden, cfg.layers, cfg.dropout)
    train(fp32, train_data, cfg.steps, cfg.lr, cfg, "fp32 training")
    results = {"fp32": evaluate(fp32, valid_data, cfg.bptt)}

    ptq = copy.deepcopy(fp32)
    qkernels.swap(ptq, "w8a8", include=["rnn"])  # the LSTM: the int8 kernel of this example
    results["int8, post-training conversion"] = evaluate(ptq, valid_data, cfg.bptt)

    qat = copy.deepcopy(fp32)
    qkernels.swap(qat, "qat", include=["rnn"], weight_lsq=True)
    train(qat, train_data, cfg.qat_steps, cfg.qat_lr, cfg, "QAT fine-tuning (QATLSTM, LSQ)")
    results["QAT (fake-quant forward)"] = evaluate(qat, valid_data, cfg.bptt)
    qkernels.convert(qat)
    results["int8 after QAT (Int8LSTM)"] = evaluate(qat, valid_data, cfg.bptt)

    base_time = results["fp32"]["seconds"]
    print(f"\nheld-out perplexity, {valid_data.numel()} tokens of the Python language reference")
    print(f"{'model':<34} {'perplexity':>10} {'eval s':>8} {'x fp32':>7}")
    for name, r in results.items():
        print(
            f"{name:<34} {r['perplexity']:>10.2f} {r['seconds']:>8.2f} "
            f"{base_time / r['seconds']:>7.2f}"
        )
    table = {
        k: {"perplexity": r["perplexity"], "eval_seconds": r["seconds"]} for k, r in results.items()
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return table


if __name__ == "__main__":
    main()
