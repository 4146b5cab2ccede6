"""LoRA quality on the classify_csv task (MiniLM, Python-reference paragraphs, the
example's batch, length and steps): full fp32 fine-tuning, PEFT LoRA on the fp32 base,
and qkernels LoRA on the frozen int8 base (w8a8), scored before and after merging into
int8 (one run) — the same loop, data, schedule and seed for all; the two LoRA runs share
r, alpha, lr and target modules (every Linear but the head, which both train in full).
With several seeds (init, batch order) every config runs once per seed; the targets are
judged on the means: one seed's accuracy on 302 examples moves by points between seeds.

    .venv/bin/python examples/lora_quality.py [--steps 300] [--seeds 0 1 2] [--json out.json]
        [--peers-from earlier.json]

--peers-from takes the fp32 and PEFT accuracies from an earlier result of the same
steps, rank, alpha, lr and seeds (neither runs a qkernels kernel) and trains only the
qkernels configs: a third of the time, when only qkernels changed.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


CONFIGS = (
    "fp32 full fine-tuning",
    "PEFT LoRA, fp32 base",
    "qkernels LoRA, int8 base",
    "qkernels LoRA, merged int8",
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--lora-lr", type=float, default=1e-3)
    parser.add_argument("--output", default="runs/lora_quality")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--peers-from", default=None, help="earlier JSON: fp32 / PEFT scores")
    args = parser.parse_args(argv)
    peers = _peer_scores(args) if args.peers_from else None
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
    per_seed: dict[str, list[float]] = {name: [] for name in CONFIGS}
    merge_errors = []
    for seed in args.seeds:
        run = out / f"seed{seed}"
        if peers is not None:
            fp32_score, peft_score = peers[seed]
        else:
            fp32 = finetune(
                FinetuneConfig(
                    method="fp32", lr=5e-5, output=str(run / "fp32"), seed=seed, **common
                )
            )
            peft = peft_lora(
                FinetuneConfig(output=str(run / "peft"), seed=seed, **lora), args.rank, args.alpha
            )
            fp32_score, peft_score = fp32["after"]["metric"], peft["after"]["metric"]
        qk = finetune(FinetuneConfig(output=str(run / "qk"), merge=True, seed=seed, **lora))
        scores = (fp32_score, peft_score, qk["unmerged_metric"], qk["after"]["metric"])
        for name, score in zip(CONFIGS, scores, strict=True):
            per_seed[name].append(score)
        merge_errors.append(qk.get("merge_error"))
    accuracy = {name: statistics.mean(scores) for name, scores in per_seed.items()}
    ref = accuracy["PEFT LoRA, fp32 base"]
    print(f"\n{'':<28} {'mean accuracy':>13} {'min-max':>15} {'vs PEFT fp32 (points)':>22}")
    for name, acc in accuracy.items():
        span = f"{min(per_seed[name]):.4f}-{max(per_seed[name]):.4f}"
        print(f"{name:<28} {acc:>13.4f} {span:>15} {100 * (acc - ref):>+22.2f}")
    valid = len(read_labelled(valid_csv))
    seeds = ", ".join(map(str, args.seeds))
    result = {
        "steps": args.steps,
        "rank": args.rank,
        "alpha": args.alpha,
        "seeds": args.seeds,
        "accuracy": accuracy,
        "accuracy_per_seed": per_seed,
        "environment": environment(),
        "valid_examples": valid,
        "merge_error": merge_errors,
        "note": (
            f"examples/lora_quality.py, seeds {seeds} (accuracy: their mean): MiniLM "
            f"classification on the classify_csv data (batch 16, max_length 128, {args.steps} "
            f"steps); fp32 full fine-tuning lr 5e-5; both LoRA runs r={args.rank}, "
            f"alpha={args.alpha:g}, lr {args.lora_lr:g}, every Linear but the head (trained in "
            f"full); one validation example is {100 / valid:.2f} points; the qkernels base int8 "
            f"throughout (embedding tables too: the fine-tuning default)"
            + (f"; fp32 and PEFT scores from {args.peers_from}" if peers is not None else "")
        ),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def _peer_scores(args) -> dict[int, tuple[float, float]]:
    """seed -> (fp32, PEFT) accuracy from an earlier run with the same settings."""
    earlier = json.loads(Path(args.peers_from).read_text())
    settings = (earlier["steps"], earlier["rank"], earlier["alpha"])
    same = settings == (args.steps, args.rank, args.alpha)
    same = same and f"lr {args.lora_lr:g}" in earlier["note"]
    missing = sorted(set(args.seeds) - set(earlier["seeds"]))
    if not same or missing:
        raise SystemExit(
            f"--peers-from {args.peers_from}: other steps / rank / alpha / lr, or no seeds "
            f"{missing} there"
        )
    per_seed = earlier["accuracy_per_seed"]
    index = {seed: i for i, seed in enumerate(earlier["seeds"])}
    return {s: (per_seed[CONFIGS[0]][index[s]], per_seed[CONFIGS[1]][index[s]]) for s in args.seeds}


if __name__ == "__main__":
    main()
