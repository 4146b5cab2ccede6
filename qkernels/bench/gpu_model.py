"""`qkernels bench --suite gpu-model`: whole models on a GPU, same process.

- A Llama-shaped causal LM built from a config (random weights: speed only; hidden 2048,
  8 layers): prefill tokens/s (one 2048-token sequence, no cache) and decode tokens/s
  (greedy, KV cache: the time of 1 + STEPS new tokens minus that of 1, over STEPS) for
  bf16, qkernels w8a16 and w8a8 (every Linear but lm_head swapped). Eager decoding is
  launch-bound on a GPU; `compiled=True` adds decode with a static KV cache, for which
  transformers compiles the forward itself (CUDA graphs; on CPU it stays eager).
- A MiniLM-shaped BERT (384 hidden, 6 layers): embedding throughput, sequences/s at
  64 x 128 tokens, fp32 / bf16 / qkernels w8a8 (on the bf16 model).
- A GPT-2-small-sized training step (batch 8 x 512, AdamW): bf16 against QAT (every
  Linear / Conv1D a QATLinear, int8 fake-quant of weights and activations) on bf16.

Times: medians of interleaved rounds after a warm-up (qkernels.timing.compare, which
waits for the GPU at both ends of each sample). Without a GPU (CI)
the CI configs (a few dozen hidden units) run on CPU in fp32 as a smoke test: those
numbers mean nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

import qkernels
from qkernels import timing

STEPS = 32  # decode tokens timed


@dataclass
class ModelGpuRow:
    model: str
    task: str  # prefill | decode | embed | train step
    impl: str
    value: float
    unit: str  # tokens/s | sequences/s | ms
    speedup: float = float("nan")  # over the first impl of the (model, task)


@dataclass(frozen=True)
class Sizes:
    llama: dict
    prefill_tokens: int
    prompt_tokens: int
    bert: dict
    embed_batch: tuple[int, int]
    gpt2: dict
    train_batch: tuple[int, int]
    repeats: int


FULL = Sizes(
    llama={
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
    },
    prefill_tokens=2048,
    prompt_tokens=128,
    bert={
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
    embed_batch=(64, 128),
    gpt2={"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024},
    train_batch=(8, 512),
    repeats=5,
)
CI = Sizes(
    llama={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": 256,
        "max_position_embeddings": 256,
    },
    prefill_tokens=32,
    prompt_tokens=8,
    bert={
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
    },
    embed_batch=(2, 16),
    gpt2={
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 64,
        "vocab_size": 256,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
    train_batch=(2, 32),
    repeats=2,
)


def _medians_s(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, timed in interleaved rounds (qkernels.timing)."""
    result = timing.compare(fns, rounds=repeats, min_sample_s=0.0)
    return {name: t.median_ms / 1e3 for name, t in result.timings.items()}


def _swapped(model: torch.nn.Module, method: str) -> torch.nn.Module:
    out = copy.deepcopy(model)
    qkernels.swap(out, method)  # every Linear / Conv1D but lm_head
    return out


def _llama_rows(sizes: Sizes, device: str, dtype: torch.dtype, compiled: bool) -> list[ModelGpuRow]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**sizes.llama)).to(device, dtype).eval()
    vocab = sizes.llama["vocab_size"]
    long_ids = torch.randint(0, vocab, (1, sizes.prefill_tokens), device=device)
    prompt = torch.randint(0, vocab, (1, sizes.prompt_tokens), device=device)
    name = f"llama-{sizes.llama['hidden_size']}x{sizes.llama['num_hidden_layers']}"
    models = {
        str(dtype).removeprefix("torch."): base,
        "qkernels w8a16": _swapped(base, "w8a16"),
        "qkernels w8a8": _swapped(base, "w8a8"),
    }

    def each(call: Callable[[torch.nn.Module], object]) -> dict[str, float]:
        return _medians_s({impl: lambda m=m: call(m) for impl, m in models.items()}, sizes.repeats)

    def decode_rates(**kw) -> dict[str, float]:
        def generate(m: torch.nn.Module, new: int):
            return m.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, **kw)

        one, many = each(lambda m: generate(m, 1)), each(lambda m: generate(m, 1 + STEPS))
        return {impl: STEPS / max(many[impl] - one[impl], 1e-9) for impl in models}

    with torch.no_grad():
        prefill = each(lambda m: m(long_ids, use_cache=False))
        decode = decode_rates()
        static = decode_rates(cache_implementation="static") if compiled else {}
    rows = []
    for impl in models:
        rows.append(
            ModelGpuRow(name, "prefill", impl, sizes.prefill_tokens / prefill[impl], "tokens/s")
        )
        rows.append(ModelGpuRow(name, "decode", impl, decode[impl], "tokens/s"))
        if compiled:
            rows.append(ModelGpuRow(name, "decode, static cache", impl, static[impl], "tokens/s"))
    return rows


def _bert_rows(sizes: Sizes, device: str) -> list[ModelGpuRow]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    fp32 = BertModel(BertConfig(**sizes.bert)).to(device).eval()
    low = torch.bfloat16 if device == "cuda" else torch.float32
    half = copy.deepcopy(fp32).to(low)
    batch, seq = sizes.embed_batch
    ids = torch.randint(0, fp32.config.vocab_size, (batch, seq), device=device)
    models = {
        "fp32": fp32,
        str(low).removeprefix("torch."): half,
        f"qkernels w8a8 ({str(low).removeprefix('torch.')})": _swapped(half, "w8a8"),
    }
    with torch.no_grad():
        fns = {impl: lambda m=m: m(ids).last_hidden_state for impl, m in models.items()}
        seconds = _medians_s(fns, sizes.repeats)
    return [
        ModelGpuRow("minilm-shaped bert", "embed", impl, batch / s, "sequences/s")
        for impl, s in seconds.items()
    ]


def _train_rows(sizes: Sizes, device: str, dtype: torch.dtype) -> list[ModelGpuRow]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(**sizes.gpt2)).to(device, dtype).train()
    batch, seq = sizes.train_batch
    ids = torch.randint(0, base.config.vocab_size, (batch, seq), device=device)
    fns = {}
    for impl, model in (
        (str(dtype).removeprefix("torch."), base),
        ("qkernels QAT", _swapped(base, "qat")),
    ):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(m=model, opt=opt):
            m(ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        fns[impl] = step
    return [
        ModelGpuRow("gpt2-small-sized", "train step", impl, s * 1e3, "ms")
        for impl, s in _medians_s(fns, sizes.repeats).items()
    ]


def run_gpu_model_suite(ci: bool = False, compiled: bool = False) -> list[ModelGpuRow]:
    """Every part; on CPU only the CI sizes (a smoke run)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not ci:
        raise RuntimeError("qkernels bench --suite gpu-model: no CUDA GPU; on CPU only --shapes ci")
    sizes = CI if ci else FULL
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = _llama_rows(sizes, device, dtype, compiled) + _bert_rows(sizes, device)
    rows += _train_rows(sizes, device, dtype)
    first: dict[tuple[str, str], ModelGpuRow] = {}
    for r in rows:
        ref = first.setdefault((r.model, r.task), r)
        # train step: a time (lower is better); the rest: rates
        r.speedup = ref.value / r.value if r.unit == "ms" else r.value / ref.value
    return rows


COLUMNS = (
    ("model", "model", "<22"),
    ("task", "task", "<21"),
    ("impl", "impl", "<24"),
    ("value", "value", ">12.1f"),
    ("unit", "unit", "<12"),
    ("x first", "speedup", ">8.2f"),
)


def format_gpu_model_table(rows: list[ModelGpuRow]) -> str:
    from qkernels.bench.report import table

    return table(rows, COLUMNS)
