"""One implementation of `qkernels bench --suite llm`, alone in its process (so its peak
RSS is its own): load the model, time prefill and decode, record the top-1 next-token
predictions over the agreement text, print one JSON line.

    python path/to/llm_worker.py SPEC_JSON

(run by path, not as a module of the package: the llama.cpp process then never imports
torch or qkernels, whose ~0.9 GB would count in its peak RSS).

SPEC_JSON: {"impl", "hf_dir", "gguf", "threads", "prompt", "decode", "prefill": [...],
"agree_ids": [...], "repeats"}. Decode is timed inside one generate() call, from the
second new token to the last (a stopping criterion stamps each step), so neither the
prompt nor the first step's warm-up counts; prefill is one forward of the prompt that
keeps the last position's logits, as generation's first step does.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

# impl -> (torch dtype, QKernelsConfig method or None). The qkernels rows hold every
# matrix in int8 as llama.cpp's Q8_0 does: body, output layer (QKernelsConfig's default)
# and the input embedding table (embeddings=True).
HF_IMPLS = {
    "hf fp32": ("float32", None),
    "hf bf16": ("bfloat16", None),
    "qkernels w8a16": ("float32", "w8a16"),
    "qkernels w8a8": ("float32", "w8a8"),
}
LLAMA_CPP = "llama.cpp q8_0"
COMPILED = " compiled"


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of its own memory map. Trap: getrusage's ru_maxrss
    survives execve, so a worker started by a 1 GB parent reads at least 1 GB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_hf(impl: str, hf_dir: str):
    import torch
    from transformers import AutoModelForCausalLM

    dtype, method = HF_IMPLS[impl.removesuffix(COMPILED)]
    if method is None:
        return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, dtype)).eval()
    from qkernels.hf import QKernelsConfig

    return AutoModelForCausalLM.from_pretrained(
        hf_dir, quantization_config=QKernelsConfig(method, embeddings=True)
    ).eval()


def run_hf(spec: dict) -> dict:
    import torch
    from torch._dynamo.utils import counters
    from transformers import StoppingCriteria
    from transformers.generation.configuration_utils import CompileConfig

    impl, compiled = spec["impl"], spec["impl"].endswith(COMPILED)
    t0 = time.perf_counter()
    model = _load_hf(impl, spec["hf_dir"])
    result = {"load_s": time.perf_counter() - t0}
    vocab = model.config.vocab_size
    ids = torch.tensor([spec["agree_ids"]]) % vocab
    repeats = spec["repeats"]
    prefill = {}
    forward = torch.compile(model, dynamic=False) if compiled else model
    with torch.inference_mode():
        for n in spec["prefill"]:
            x = ids[:, :n] if ids.shape[1] >= n else torch.randint(0, vocab, (1, n))
            forward(x, logits_to_keep=1, use_cache=False)  # warm-up (compiles this shape)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                forward(x, logits_to_keep=1, use_cache=False)
                times.append(time.perf_counter() - start)
            prefill[str(n)] = n / statistics.median(times)
    result["prefill_tps"] = prefill

    class Stamp(StoppingCriteria):  # called once per generated token
        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    prompt = ids[:, : spec["prompt"]]
    new = spec["decode"]
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False)
    if compiled:
        config = CompileConfig(fullgraph=True, dynamic=False)
        config._compile_all_devices = True  # transformers compiles on GPUs only unless told
        kw.update(cache_implementation="static", compile_config=config)
    else:
        kw.update(disable_compile=True)
    rates = []
    with torch.inference_mode():
        model.generate(prompt, **kw)  # warm-up (compiles the decode step)
        graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
        for _ in range(repeats):
            stamp = Stamp()
            model.generate(prompt, stopping_criteria=[stamp], **kw)
            rates.append((len(stamp.times) - 1) / (stamp.times[-1] - stamp.times[0]))
    result["decode_tps"] = statistics.median(rates)
    result["decode_tps_runs"] = rates
    result["peak_rss_mb"] = peak_rss_mb()
    if compiled:  # the timed calls compiled nothing new
        result["graphs"] = graphs
        result["recompiled_while_timed"] = counters["stats"]["unique_graphs"] - graphs
        result["graph_breaks"] = breaks
    with torch.inference_mode():
        logits = model(ids).logits[0]
    result["top1"] = logits.argmax(-1).tolist()
    return result


def run_llama_cpp(spec: dict) -> dict:
    import numpy as np
    from llama_cpp import Llama

    threads, repeats = spec["threads"], spec["repeats"]
    ctx = max(spec["prefill"] + [spec["prompt"] + spec["decode"]]) + 8
    ids = list(spec["agree_ids"])
    t0 = time.perf_counter()
    llm = Llama(
        spec["gguf"], n_ctx=ctx, n_batch=512, n_ubatch=512, n_threads=threads,
        n_threads_batch=threads, verbose=False,
    )  # fmt: skip
    result = {"load_s": time.perf_counter() - t0}
    vocab = llm.n_vocab()
    prefill = {}
    for n in spec["prefill"]:
        x = ids[:n] if len(ids) >= n else list(np.random.default_rng(0).integers(0, vocab, n))
        times = []
        for _ in range(repeats + 1):  # the first is the warm-up
            llm.reset()
            start = time.perf_counter()
            llm.eval(x)
            times.append(time.perf_counter() - start)
        prefill[str(n)] = n / statistics.median(times[1:])
    result["prefill_tps"] = prefill
    rates = []
    for _ in range(repeats + 1):
        llm.reset()
        llm.eval(ids[: spec["prompt"]])
        stamps = []
        for _ in range(spec["decode"]):  # greedy, as generate(do_sample=False)
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([token])
            stamps.append(time.perf_counter())
        rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    result["decode_tps"] = statistics.median(rates[1:])
    result["decode_tps_runs"] = rates[1:]
    result["peak_rss_mb"] = peak_rss_mb()
    del llm
    every = Llama(spec["gguf"], n_ctx=len(ids) + 8, n_batch=512, n_threads=threads,
                  n_threads_batch=threads, logits_all=True, verbose=False)  # fmt: skip
    every.eval(ids)
    result["top1"] = np.asarray(every.scores[: len(ids)]).argmax(-1).tolist()
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["impl"] == LLAMA_CPP:
        result = run_llama_cpp(spec)
    else:
        import torch

        torch.set_num_threads(spec["threads"])
        result = run_hf(spec)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
