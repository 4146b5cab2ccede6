"""Peak memory of from_pretrained of a float Llama directory, fp32 or quantized
while loading (QKernelsConfig), in this process: one JSON line with the peak over the
baseline, the loaded model's bytes and its largest decoder block in fp32.

    python tests/scripts/peak_load_memory.py DIR fp32|w8a8
"""

import json
import sys
import threading
import time

import torch
import transformers

import qkernels
from qkernels.hf import QKernelsConfig


def rss(kind: str = "RssAnon") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(kind + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {kind} in /proc/self/status")


def main() -> None:
    path, method = sys.argv[1], sys.argv[2]
    # float32 whatever the checkpoint holds: a bf16 checkpoint (as most are) is then
    # converted tensor by tensor into fresh memory rather than mapped from the file.
    kwargs = {"dtype": torch.float32}
    if method != "fp32":
        kwargs["quantization_config"] = QKernelsConfig(method)
    peak, peak_all, done = [0], [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            peak_all[0] = max(peak_all[0], rss("VmRSS"))
            time.sleep(0.001)

    # What the first load imports and sets up once (modeling code, thread pools) is not
    # the model's: a tiny load of the same architecture first.
    tiny = transformers.AutoConfig.from_pretrained(path)
    tiny.num_hidden_layers, tiny.vocab_size = 1, 32
    tiny_dir = f"{path}-warmup"
    transformers.AutoModelForCausalLM.from_config(tiny).save_pretrained(tiny_dir)
    transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, **kwargs)
    base, base_all = rss(), rss("VmRSS")
    sampler = threading.Thread(target=sample)
    sampler.start()
    model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    done.set()
    sampler.join()
    state = model.state_dict()
    block = sum(p.numel() * 4 for p in model.model.layers[0].parameters())
    block += sum(
        m.out_features * m.in_features * 4
        for m in model.model.layers[0].modules()
        if isinstance(m, qkernels.Int8Linear)
    )
    print(json.dumps({
        "method": method,
        "peak_over_baseline": peak[0] - base,  # anonymous: the process's own allocations
        "peak_rss_over_baseline": peak_all[0] - base_all,  # + mapped file pages
        "model_bytes": sum(t.numel() * t.element_size() for t in state.values()),
        "fp32_block_bytes": block,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
