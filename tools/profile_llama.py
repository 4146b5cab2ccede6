"""Where a Llama-shaped model's time goes, per implementation (the gpu-model bench's
model: hidden 2048, 8 layers, random weights): torch.profiler's top kernels by device
time and the host time per forward, for a prefill (one sequence, no cache) and for one
decode step (one token, KV cache of the prompt).
    python tools/profile_llama.py [--impl bf16 w8a8 w8a16] [--tokens 2048]
On CPU the bench's CI sizes run (a smoke run; the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from qkernels.bench import gpu_model


def build(impl: str, device: str, sizes: gpu_model.Sizes) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = LlamaForCausalLM(LlamaConfig(**sizes.llama)).to(device, dtype).eval()
    return model if impl == "bf16" else gpu_model._swapped(model, impl)


def report(name: str, fn, device: str, rows: int) -> None:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(5):
        fn()
    host = (time.perf_counter() - t0) / 5  # no sync inside: what the host spends per call
    sync()
    wall = (time.perf_counter() - t0) / 5
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync()
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(f"\n=== {name}: host {host * 1e3:.2f} ms, wall {wall * 1e3:.2f} ms per call ===")
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", nargs="*", default=["bf16", "w8a8", "w8a16"])
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = gpu_model.FULL if device == "cuda" else gpu_model.CI
    vocab = sizes.llama["vocab_size"]
    long_ids = torch.randint(0, vocab, (1, sizes.prefill_tokens), device=device)
    prompt = torch.randint(0, vocab, (1, sizes.prompt_tokens), device=device)
    for impl in args.impl:
        model = build(impl, device, sizes)
        with torch.no_grad():
            prefill = lambda m=model: m(long_ids, use_cache=False)  # noqa: E731
            report(f"{impl} prefill", prefill, device, args.rows)
            cache = model(prompt, use_cache=True).past_key_values
            token = prompt[:, -1:]

            def step(m=model, cache=cache, token=token):
                # the same cache each time: drop the step's token again
                out = m(token, past_key_values=cache, use_cache=True)
                cache.crop(-1)
                return out

            report(f"{impl} decode step", step, device, args.rows)
        del model


if __name__ == "__main__":
    main()
