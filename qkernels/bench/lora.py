"""LoRA benchmarks. (a) The op: lora_w8a8 forward and forward+backward against the int8
base alone (linear_w8a8) and against the unfused composition a PEFT-style adapter on an
int8 base runs (base op + two adapter matmuls), in one process, rounds interleaved,
weights rotated past the last-level cache. (b) A training step of a BERT-base-sized
model (4 layers) with LoRA on qkernels' int8 base against PEFT LoRA on fp32 and bf16
bases, full fp32 fine-tuning and bitsandbytes int8 / NF4 + PEFT (QLoRA): each config in
a child process, so its peak RSS (the kernel's VmHWM of its address space) is its own.
Peak live memory is counted apart from the allocator: the model's parameters and buffers
and the optimizer's state, plus the peak of the bytes held by tensors through one more
step, summed from the profiler's allocation events (RSS also counts the freed blocks
glibc keeps, and how many depends on the order of the allocations)."""

from __future__ import annotations

import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from qkernels import ops, timing
from qkernels.bench.report import last_level_cache_bytes, table

# (name, K, N): projections of BERT-base and Llama-7B.
PROJECTIONS = [
    ("bert qkv/o", 768, 768),
    ("bert ffn up", 768, 3072),
    ("bert ffn down", 3072, 768),
    ("llama qkvo", 4096, 4096),
    ("llama mlp up", 4096, 11008),
    ("llama mlp down", 11008, 4096),
]
FULL_OP_CASES = [
    (name, m, k, n, r)
    for name, k, n in PROJECTIONS
    for m in (16, 512, 2048)
    for r in (8, 16, 64)
    if not (name.startswith("llama") and m == 2048)  # minutes per case on a 2-core CPU
]
CI_OP_CASES = [("ci", 16, 256, 256, 8)]
ROUNDS = 7


@dataclass
class OpRow:
    case: str
    m: int
    k: int
    n: int
    r: int
    mode: str  # fwd | fwd+bwd
    impl: str  # base | fused | unfused
    median_ms: float
    spread_ms: float  # interquartile range over the interleaved rounds (qkernels.timing)


def _layer(k: int, n: int, r: int):
    wq, ws = ops.quantize_rowwise(torch.randn(n, k) / k**0.5)
    a = (torch.randn(r, k) / k**0.5).requires_grad_()
    b = (torch.randn(n, r) * 0.01).requires_grad_()
    return ops.pack_weight(wq), ws, torch.randn(n), a, b


def _impls(layer, scaling: float, mode: str, x, grad):
    packed, ws, bias, a, b = layer

    def base():
        return ops.linear_w8a8(x, packed, ws, bias)

    def fused():
        return ops.lora_w8a8(x, packed, ws, bias, a, b, scaling)

    def unfused():  # what PEFT runs on an int8 base: the base, then x a^T b^T apart
        return base() + scaling * ((x @ a.T) @ b.T)

    if mode == "fwd":  # inference: no autograd graph (a and b require grad for fwd+bwd)
        return {
            name: torch.no_grad()(fn)
            for name, fn in (("base", base), ("fused", fused), ("unfused", unfused))
        }
    return {
        "base": lambda: torch.autograd.grad(base(), [x], grad),
        "fused": lambda: torch.autograd.grad(fused(), [x, a, b], grad),
        "unfused": lambda: torch.autograd.grad(unfused(), [x, a, b], grad),
    }


def _rotating(fns: list) -> Callable[[], object]:
    """A callable that calls the next of `fns` each time (weight copies past the cache)."""
    cycle = itertools.cycle(fns)
    return lambda: next(cycle)()


def run_lora_op_suite(cases=FULL_OP_CASES, min_run_time: float = 0.2, progress: bool = True):
    from tqdm import tqdm

    rows = []
    jobs = [(c, mode) for c in cases for mode in ("fwd", "fwd+bwd")]
    for (name, m, k, n, r), mode in tqdm(jobs, desc="lora bench", disable=not progress):
        copies = max(1, min(64, -(-2 * last_level_cache_bytes() // (k * n))))
        layers = [_layer(k, n, r) for _ in range(copies)]
        x = torch.randn(m, k, requires_grad=mode != "fwd")
        grad = torch.randn(m, n)
        per_layer = [_impls(layer, 2.0, mode, x, grad) for layer in layers]
        # each impl cycles through the weight copies; all impls in the same rounds
        fns = {impl: _rotating([f[impl] for f in per_layer]) for impl in per_layer[0]}
        timed = timing.compare(fns, rounds=ROUNDS, warmup=2, min_sample_s=min_run_time / 2)
        for impl, t in timed.timings.items():
            rows.append(OpRow(name, m, k, n, r, mode, impl, t.median_ms, t.q3_ms - t.q1_ms))
    return rows


def op_summary(rows: list[OpRow]) -> list[dict]:
    """Per case: the fused op's cost over the base alone, and unfused / fused."""
    out = []
    key = lambda r: (r.case, r.m, r.k, r.n, r.r, r.mode)  # noqa: E731
    for case, group in itertools.groupby(sorted(rows, key=key), key=key):
        t = {r.impl: r.median_ms for r in group}
        out.append(
            {
                "case": case[0],
                "m": case[1],
                "k": case[2],
                "n": case[3],
                "r": case[4],
                "mode": case[5],
                "fused_overhead_pct": round(100 * (t["fused"] / t["base"] - 1), 1),
                "unfused / fused": round(t["unfused"] / t["fused"], 3),
            }
        )
    return out


def format_op_table(rows: list[OpRow]) -> str:
    cols = [
        ("case", "case", "<15"),
        ("M", "m", ">5"),
        ("K", "k", ">6"),
        ("N", "n", ">6"),
        ("r", "r", ">4"),
        ("mode", "mode", "<8"),
        ("fused overhead %", "fused_overhead_pct", ">17.1f"),
        ("unfused/fused", "unfused / fused", ">14.2f"),
    ]
    return table(op_summary(rows), cols) + (
        "\n(fused overhead: lora_w8a8 over linear_w8a8 alone; unfused: the base op plus "
        "the adapter as two separate matmuls, as PEFT runs it)"
    )


# ---- (b) the training step, one child process per config ----

OURS, PEFT = "qkernels lora w8a8", "peft lora fp32"
# bitsandbytes through transformers' BitsAndBytesConfig + PEFT, as their docs load it
BNB_INT8, BNB_NF4 = "bitsandbytes int8 + peft", "bitsandbytes nf4 + peft (qlora)"
FLOAT_EMBEDDINGS = ", float embeddings"  # config suffix: the Linears int8, the tables fp32
FLOAT_TABLES = OURS + FLOAT_EMBEDDINGS
CHECKPOINTING = ", checkpointing"  # config suffix: HF gradient checkpointing (non-reentrant)
STEP_CONFIGS = (
    OURS,
    FLOAT_TABLES,
    "qkernels lora w8a16",
    PEFT,
    "peft lora bf16",
    "full fp32",
    BNB_INT8,
    BNB_NF4,
    # QLoRA's setting: activations recomputed per layer, so the weights weigh more
    OURS + CHECKPOINTING,
    PEFT + CHECKPOINTING,
)
FULL_MODEL = dict(hidden=768, layers=4, heads=12, ffn=3072, batch=8, seq=128, steps=4)
FULL_ROUNDS = 3  # child processes per config (one in CI)
CI_MODEL = dict(hidden=64, layers=2, heads=2, ffn=128, batch=2, seq=16, steps=2)
TARGETS = ["query", "key", "value", "dense"]


@dataclass
class StepRow:
    config: str
    step_ms: float | None
    spread_ms: float | None
    peak_rss_mb: float | None
    model_rss_mb: float | None  # peak RSS minus the RSS before the model was built
    peak_live_mb: float | None  # parameters, buffers, optimizer state + a step's peak tensors
    frozen_weight_mb: float | None  # every frozen weight (+ scales) as stored
    frozen_linear_mb: float | None  # the frozen Linear weights (+ scales) only
    trainable_params: int | None
    note: str = ""


def _rss_mb() -> float:
    """This address space's peak RSS in MiB. Trap: getrusage's ru_maxrss survives
    exec, so a child started by a large parent reports the parent's RSS as its own
    peak (every small config then read the bench process's 1.46 GB); /proc's VmHWM
    belongs to the exec'd image alone."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc (macOS: bytes)
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def step_peak_tensor_mb(step: Callable[[], None]) -> float:
    """The peak of the bytes tensors allocate and free during `step()` (the CPU allocator's
    events in the profiler, summed in time order), in MiB."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def save_step_model(shape: dict, path: str) -> None:
    """The BERT-sized model every config loads (seeded), as a Hugging Face directory."""
    import transformers

    cfg = transformers.BertConfig(
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"],
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(path)


def _build(config: str, path: str):
    """Each config loads the saved model as its users would: qkernels straight into
    int8 (QKernelsConfig, so the fp32 weights are never held, as bitsandbytes' 8-bit
    loading), the embedding tables too as `qkernels finetune --method lora` does (", float
    embeddings": not those), the others in fp32."""
    import transformers

    config = config.removesuffix(CHECKPOINTING)

    cls = transformers.BertForSequenceClassification
    dtype = torch.float32
    if config.startswith("qkernels"):
        import qkernels
        from qkernels.hf import QKernelsConfig

        base = config.split()[2].rstrip(",")
        embeddings = not config.endswith(FLOAT_EMBEDDINGS)
        model = cls.from_pretrained(
            path, quantization_config=QKernelsConfig(base, embeddings=embeddings)
        )
        torch.manual_seed(0)
        qkernels.swap(
            model,
            "lora",
            r=16,
            alpha=32,
            base=base,
            target_modules=TARGETS,
            exclude=["classifier"],
            modules_to_save=["classifier"],
        )
        return model, dtype
    if config == "peft lora bf16":
        dtype = torch.bfloat16
    if config in (BNB_INT8, BNB_NF4):
        model = _bitsandbytes_model(cls, path, nf4=config == BNB_NF4)
    else:
        model = cls.from_pretrained(path, dtype=dtype)
    if config.startswith(("peft", "bitsandbytes")):
        import peft

        lora = peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS)
        model = peft.get_peft_model(model, lora)
        for p in model.base_model.model.classifier.parameters():
            p.requires_grad_(True)
    return model, dtype


def _bitsandbytes_model(cls, path: str, nf4: bool):
    """The model loaded in 8-bit (LLM.int8) or 4-bit NF4 (QLoRA) by transformers'
    BitsAndBytesConfig and prepared by PEFT's prepare_model_for_kbit_training, as both
    libraries' docs do (no gradient checkpointing here: the ", checkpointing" configs
    measure that apart)."""
    import peft
    from transformers import BitsAndBytesConfig

    skip = ["classifier"]  # trained in full (modules_to_save), as in the other configs
    if nf4:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.float32,
            llm_int8_skip_modules=skip,
        )
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    model = cls.from_pretrained(path, quantization_config=quant, device_map="cpu")
    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def enable_checkpointing(model: nn.Module) -> None:
    """Hugging Face's per-layer activation checkpointing, non-reentrant (transformers 5
    renamed gradient_checkpointing_enable, which now warns)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _frozen_weight_mb(model, linear_only: bool = False) -> float:
    """Frozen parameters and weight buffers (int8 weights, scales), in MiB; linear_only:
    those of Linear layers (what the int8 base replaces), not embeddings or norms."""
    from qkernels.nn import Int8Embedding

    total = 0
    for module in model.modules():
        linear = hasattr(module, "weight_scale") and not isinstance(module, Int8Embedding)
        if linear_only and not (isinstance(module, nn.Linear) or linear):
            continue
        for n, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            frozen = not t.requires_grad if isinstance(t, nn.Parameter) else "weight" in n
            if frozen and not n.startswith("lora_"):
                total += t.numel() * t.element_size()
    return total / 2**20


def run_step_child(config: str, shape: dict, path: str) -> StepRow:
    """One config's training step on the model saved at `path`, in this process (the
    parent runs each in a child)."""
    import transformers  # noqa: F401  (imports first: their RSS is not the model's)

    if config.startswith("qkernels"):
        import qkernels.hf  # noqa: F401
    elif config.startswith(("peft", "bitsandbytes")):
        import peft  # noqa: F401

        if config.startswith("bitsandbytes"):
            import bitsandbytes  # noqa: F401
    torch.manual_seed(0)
    before = _rss_mb()
    model, dtype = _build(config, path)
    model.train()
    if config.endswith(CHECKPOINTING):
        enable_checkpointing(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, 1000, (shape["batch"], shape["seq"]))
    labels = torch.randint(0, 2, (shape["batch"],))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for i in range(shape["steps"] + 1):
        t0 = time.perf_counter()
        step()
        if i:  # the first step allocates the optimizer state
            times.append((time.perf_counter() - t0) * 1e3)
    peak_rss = _rss_mb()  # before the profiled step, whose event records take memory
    state = [*model.parameters(), *model.buffers()]
    state += [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    return StepRow(
        config,
        statistics.median(times),
        max(times) - min(times),
        peak_rss,
        peak_rss - before,
        _tensor_mb(state) + step_peak_tensor_mb(step),
        _frozen_weight_mb(model),
        _frozen_weight_mb(model, linear_only=True),
        sum(p.numel() for p in params),
    )


CI_STEP_CONFIGS = (OURS, PEFT, OURS + CHECKPOINTING)  # each child costs ~10 s


def run_lora_step_suite(
    shape: dict = FULL_MODEL, configs=STEP_CONFIGS, rounds: int = 1, progress: bool = True
) -> list[StepRow]:
    """Each config in its own child process, `rounds` times with the configs' order
    rotated, so that the machine's drift over minutes falls on every config alike."""
    import tempfile

    from tqdm import tqdm

    configs = list(configs)
    runs: dict[str, list[StepRow]] = {c: [] for c in configs}
    order = [configs[i:] + configs[:i] for i in range(rounds)]
    with tempfile.TemporaryDirectory(prefix="qkernels-lora-step-") as path:
        save_step_model(shape, path)
        todo = [c for round_ in order for c in round_]
        for config in tqdm(todo, desc="lora training step", disable=not progress):
            runs[config].append(_run_child(config, shape, path))
    return [_merge_rounds(runs[c]) for c in configs]


def _merge_rounds(rows: list[StepRow]) -> StepRow:
    """One row per config: the median of each measured field over the rounds; the step
    spread is the range of the rounds' medians (or the one round's own range)."""
    ok = [r for r in rows if r.step_ms is not None]
    if len(ok) < 2:
        return ok[0] if ok else rows[0]
    fields = asdict(ok[0])
    for name, value in fields.items():
        if isinstance(value, float):
            fields[name] = statistics.median(getattr(r, name) for r in ok)
    steps = [r.step_ms for r in ok]
    fields["spread_ms"] = max(steps) - min(steps)
    fields["note"] = f"median of {len(ok)} processes"
    return StepRow(**fields)


def _run_child(config: str, shape: dict, path: str) -> StepRow:
    code = (
        "import json, sys; from dataclasses import asdict; "
        "from qkernels.bench.lora import run_step_child; "
        f"print(json.dumps(asdict(run_step_child({config!r}, {shape!r}, {path!r}))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 0:
        return StepRow(**json.loads(proc.stdout.strip().splitlines()[-1]))
    reason = (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]
    return StepRow(config, None, None, None, None, None, None, None, None, note=reason)


# (ratio's name, numerator config, denominator config, StepRow field)
SUMMARY = [
    *(
        (f"step: {peer} / {OURS}", peer, OURS, "step_ms")
        for peer in (PEFT, "peft lora bf16", "full fp32", BNB_INT8, BNB_NF4)
    ),
    *(
        (f"peak live: qkernels / {peer}", OURS, peer, "peak_live_mb")
        for peer in (BNB_INT8, BNB_NF4)
    ),
    *(
        (f"frozen weights: qkernels / {peer}", OURS, peer, "frozen_weight_mb")
        for peer in (BNB_INT8, BNB_NF4)
    ),
    ("frozen weights: qkernels / peft fp32", OURS, PEFT, "frozen_weight_mb"),
    (
        "frozen weights, float embeddings: qkernels / peft fp32",
        FLOAT_TABLES,
        PEFT,
        "frozen_weight_mb",
    ),
    ("frozen Linear weights: qkernels / peft fp32", OURS, PEFT, "frozen_linear_mb"),
    ("model RSS: qkernels / peft fp32", OURS, PEFT, "model_rss_mb"),
    ("peak RSS: qkernels / peft fp32", OURS, PEFT, "peak_rss_mb"),
    ("peak live: qkernels / peft fp32", OURS, PEFT, "peak_live_mb"),
    ("peak live, float embeddings: qkernels / peft fp32", FLOAT_TABLES, PEFT, "peak_live_mb"),
    (
        "step, checkpointing: peft lora fp32 / qkernels",
        PEFT + CHECKPOINTING,
        OURS + CHECKPOINTING,
        "step_ms",
    ),
    (
        "peak live, checkpointing: qkernels / peft fp32",
        OURS + CHECKPOINTING,
        PEFT + CHECKPOINTING,
        "peak_live_mb",
    ),
]


def step_summary(rows: list[StepRow]) -> dict:
    """The SUMMARY ratios whose configs both ran; a ratio whose denominator is 0 (a tiny
    model's RSS growth can be) is left out rather than made up."""
    t = {r.config: asdict(r) for r in rows if r.step_ms}
    out = {}
    for name, num, den, field in SUMMARY:
        if num in t and den in t and t[num][field] is not None and t[den][field]:
            out[name] = round(t[num][field] / t[den][field], 3)
    return out


def format_step_table(rows: list[StepRow]) -> str:
    cols = [
        ("config", "config", "<46"),
        ("step ms", "step_ms", ">9.1f"),
        ("spread", "spread_ms", ">8.1f"),
        ("peak RSS MB", "peak_rss_mb", ">12.0f"),
        ("model RSS MB", "model_rss_mb", ">13.0f"),
        ("peak live MB", "peak_live_mb", ">13.0f"),
        ("frozen W MB", "frozen_weight_mb", ">12.1f"),
        ("of Linear", "frozen_linear_mb", ">10.1f"),
        ("trainable", "trainable_params", ">10"),
        ("note", "note", "<40"),
    ]
    summary = step_summary(rows)
    lines = [table([asdict(r) for r in rows], cols)]
    lines += [f"  {k}: {v:.2f}x" for k, v in summary.items()]
    lines.append(
        "(peak RSS: VmHWM of each config's own child process; model RSS: "
        "that minus the RSS once its libraries were imported, before the model was loaded; "
        "peak live: parameters, buffers and optimizer state plus the peak bytes of tensors "
        "through a step, from the profiler's allocation events)"
    )
    return "\n".join(lines)
