"""LoRA adapters in PEFT's on-disk format: `adapter_config.json` and
`adapter_model.safetensors` with PEFT's key names
(`base_model.model.<module>.lora_A.weight` [r, in], `...lora_B.weight` [out, r], and the
full weights of `modules_to_save`), so that `peft.PeftModel.from_pretrained(float_model,
dir)` reads what `save_adapters` writes and `load_adapters` reads what PEFT writes."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import regex
import torch
from safetensors.torch import save_file
from torch import nn

from qkernels.fusion import connect_handoffs, unfuse_activations
from qkernels.nn import Int8Linear, LoRAInt8Linear
from qkernels.nn.int8_linear import MODES, dense_weight, is_linear_like
from qkernels.plan import _load_tensors, _read_json
from qkernels.swap import LORA_PARAMS, _record_plan

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _adapters(model: nn.Module) -> dict[str, LoRAInt8Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRAInt8Linear)}


def _saved_modules(model: nn.Module, adapters: dict[str, LoRAInt8Linear]) -> list[str]:
    """Modules outside the adapters whose parameters train: PEFT's modules_to_save."""
    names = []
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if name and name not in adapters and own and all(p.requires_grad for _, p in own):
            names.append(name)
    return names


def save_adapters(
    model: nn.Module,
    path: str | Path,
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
) -> Path:
    """Write the LoRA adapters of `model` (and the trainable modules outside them) as a
    PEFT adapter directory; returns the path. Layers whose r / alpha differ from the
    first one's go in PEFT's rank_pattern / alpha_pattern."""
    adapters = _adapters(model)
    if not adapters:
        raise ValueError("qkernels.save_adapters: the model has no LoRAInt8Linear adapters")
    first = next(iter(adapters.values()))
    tensors, saved = {}, _saved_modules(model, adapters)
    for name, m in adapters.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = m.lora_A.detach().contiguous()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = m.lora_B.detach().contiguous()
    for name in saved:
        for p, t in model.get_submodule(name).named_parameters(recurse=False):
            tensors[f"{PREFIX}{name}.{p}"] = t.detach().contiguous()
    dropout = first.spec()["dropout"]
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": first.r,
        "lora_alpha": first.alpha,
        "lora_dropout": dropout,
        "use_rslora": first.use_rslora,
        # Full names: PEFT matches a list entry equal to the module's name exactly.
        "target_modules": sorted(adapters),
        "modules_to_save": [n.rpartition(".")[2] for n in saved] or None,
        "rank_pattern": {n: m.r for n, m in adapters.items() if m.r != first.r},
        "alpha_pattern": {n: m.alpha for n, m in adapters.items() if m.alpha != first.alpha},
        "bias": "none",
        "fan_in_fan_out": False,  # PEFT sets it for GPT-2 Conv1D targets itself
        "inference_mode": True,
        "init_lora_weights": True,
        "use_dora": False,
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return path


# Every rank_pattern / alpha_pattern key is a regular expression from the file: all of
# them together get this long over all module names (a key such as "(.*.*.*)*Z"
# backtracks for hours on a 48-character name with Python's re, which has no timeout).
PATTERN_BUDGET_S = 1.0
# The regex package expands counted repetitions when it compiles, outside any timeout:
# "(?:x{65535}){65535}" takes all the memory there is. Keys stay short and the product
# of their repetition counts small.
MAX_PATTERN_CHARS = 256
MAX_PATTERN_REPEATS = 1000
_COUNTED = regex.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: object) -> bool:
    """An int >= 1 (a JSON true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_config(config: dict, file: Path) -> None:
    def fail(msg: str) -> None:
        raise ValueError(f"qkernels.load_adapters: {file}: {msg}")

    if config.get("peft_type") != "LORA":
        fail(f"peft_type must be 'LORA', got {config.get('peft_type')!r}")
    for flag in ("use_dora", "lora_bias"):
        if config.get(flag):
            fail(f"{flag}=true is not supported (plain LoRA only)")
    if config.get("bias", "none") != "none":
        fail(f"bias must be 'none', got {config.get('bias')!r}")
    if not _count(config.get("r")):
        fail(f"r must be an int >= 1, got {config.get('r')!r}")
    if not (_number(config.get("lora_alpha")) and math.isfinite(config["lora_alpha"])):
        fail(f"lora_alpha must be a finite number, got {config.get('lora_alpha')!r}")
    if config.get("use_rslora") not in (None, True, False):
        fail(f"use_rslora must be true or false, got {config.get('use_rslora')!r}")
    dropout = config.get("lora_dropout")
    if dropout is not None and not (_number(dropout) and 0.0 <= dropout < 1.0):
        fail(f"lora_dropout must be a number in [0, 1), got {dropout!r}")
    for field, ok, what in (
        ("rank_pattern", _count, "an int >= 1"),
        ("alpha_pattern", lambda v: _number(v) and math.isfinite(v), "a finite number"),
    ):
        patterns = config.get(field)
        if patterns is None:
            continue
        if not isinstance(patterns, dict):
            fail(f"{field} must be an object, got {type(patterns).__name__}")
        for key, value in patterns.items():
            if not ok(value):
                fail(f"{field}[{key!r}] must be {what}, got {value!r}")
            _check_pattern(field, key, fail)


def _check_pattern(field: str, key: str, fail) -> None:  # noqa: ANN001
    """A pattern key that compiles in bounded time and memory (see MAX_PATTERN_REPEATS)."""
    if len(key) > MAX_PATTERN_CHARS:
        fail(f"{field} key of {len(key)} characters: at most {MAX_PATTERN_CHARS}")
    repeats = 1
    for low, high in _COUNTED.findall(key):
        repeats *= max(int(low or 0), int(high or 0), 1)
        if repeats > MAX_PATTERN_REPEATS:
            fail(
                f"{field} key {key!r}: its counted repetitions multiply past "
                f"{MAX_PATTERN_REPEATS}, refused"
            )
    try:
        regex.compile(_anchored(key))
    except regex.error as e:
        fail(f"{field} key {key!r} is not a regular expression ({e})")


def _anchored(key: str) -> str:
    """PEFT's rule: the key matches the whole name or its end after a dot."""
    return rf"(.*\.)?({key})$"


class _PatternMatcher:
    """PEFT's rank_pattern / alpha_pattern lookup (the first key matching the end of the
    module name), every match bounded by one shared deadline."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.deadline = time.monotonic() + PATTERN_BUDGET_S

    def lookup(self, field: str, patterns: dict | None, name: str, default):
        for key, value in (patterns or {}).items():
            left = self.deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                if regex.match(_anchored(key), name, timeout=left):
                    return value
            except TimeoutError:
                raise ValueError(
                    f"qkernels.load_adapters: {self.file}: {field} key {key!r} took longer "
                    f"than the {PATTERN_BUDGET_S:g} s all patterns get (matching {name!r}); "
                    "refused"
                ) from None
        return default


@dataclass
class _Target:
    """One adapted module, checked and built but not yet in the model."""

    name: str
    module: LoRAInt8Linear
    a: torch.Tensor
    b: torch.Tensor
    alpha: float
    unfuse: bool  # the base's epilogue activation goes back to a module in its block


def _features(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a module an adapter can target, None for any other."""
    if isinstance(module, Int8Linear):
        return module.in_features, module.out_features
    if is_linear_like(module):
        out_features, in_features = dense_weight(module).shape
        return in_features, out_features
    return None


def _split(tensors: dict[str, torch.Tensor], where: str):
    """PEFT keys -> ({module: {lora_A, lora_B}}, {parameter name: tensor})."""
    lora: dict[str, dict[str, torch.Tensor]] = {}
    others: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if not key.startswith(PREFIX):
            raise ValueError(f"{where}: key {key!r} does not start with {PREFIX!r}")
        if not t.is_floating_point():
            raise ValueError(f"{where}: {key!r} must be floating point, got {t.dtype}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: {key!r} holds NaN or infinite values")
        rest = key[len(PREFIX) :]
        module, _, leaf = rest.rpartition(".")
        if leaf == "weight" and module.rpartition(".")[2] in LORA_PARAMS:
            owner, _, ab = module.rpartition(".")
            lora.setdefault(owner, {})[ab] = t
        else:
            others[rest] = t
    return lora, others


def _target(
    model: nn.Module,
    name: str,
    pair: dict[str, torch.Tensor],
    config: dict,
    base: str,
    patterns: _PatternMatcher,
    where: str,
) -> _Target:
    """Check one adapter against its module and build the LoRAInt8Linear it becomes,
    changing nothing in `model`."""
    if set(pair) != set(LORA_PARAMS):
        raise ValueError(f"{where}: {name} has {sorted(pair)}, needs lora_A and lora_B")
    try:
        module = model.get_submodule(name) if name else None
    except AttributeError:
        module = None
    if module is None:
        raise ValueError(f"{where}: the model has no module {name!r}")
    features = _features(module)
    if features is None:
        raise ValueError(
            f"{where}: target {name!r} is a {type(module).__name__}, not a Linear, "
            "Conv1D, Int8Linear or LoRAInt8Linear"
        )
    r = patterns.lookup("rank_pattern", config.get("rank_pattern"), name, config["r"])
    alpha = patterns.lookup(
        "alpha_pattern", config.get("alpha_pattern"), name, config["lora_alpha"]
    )
    (k, n), a, b = features, pair["lora_A"], pair["lora_B"]
    if tuple(a.shape) != (r, k) or tuple(b.shape) != (n, r):
        raise ValueError(
            f"{where}: {name} adapter shapes lora_A {list(a.shape)}, lora_B {list(b.shape)} "
            f"do not fit the module with r={r} (lora_A [{r}, {k}], lora_B [{n}, {r}])"
        )
    opts = dict(
        r=r,
        alpha=alpha,
        dropout=float(config.get("lora_dropout") or 0.0),
        use_rslora=bool(config.get("use_rslora")),
    )
    unfuse = False
    if isinstance(module, LoRAInt8Linear):
        if module.r != r:
            raise ValueError(f"{where}: {name} already holds an adapter of r={module.r}, not {r}")
        new = module
    elif type(module) is Int8Linear:
        if module.static_act or module.act_bits != 8:
            raise ValueError(
                f"{where}: target {name!r} quantizes activations statically or below 8 bits "
                f"(static_act={module.static_act}, act_bits={module.act_bits}); the LoRA ops "
                "need dynamic 8-bit activations"
            )
        unfuse = module.activation != "none"
        # The activation goes back to a module of its block when the adapter goes in: the
        # new module is built from a copy that applies none (the model stays as it is).
        plain = copy.copy(module)
        plain.activation = "none"
        new = LoRAInt8Linear.from_int8(plain, **opts)
    elif isinstance(module, Int8Linear):
        raise ValueError(f"{where}: target {name!r} is a {type(module).__name__}")
    else:
        if base not in MODES:
            raise ValueError(f"qkernels.load_adapters: base must be one of {MODES}, got {base!r}")
        new = LoRAInt8Linear.from_float(module, mode=base, **opts)
    return _Target(name, new, a, b, float(alpha), unfuse)


def load_adapters(model: nn.Module, path: str | Path, base: str = "w8a8") -> list[str]:
    """Load a PEFT LoRA adapter directory into `model`, in place: each target module
    becomes (or already is) a LoRAInt8Linear — an Int8Linear base keeps its int8 weights,
    a float nn.Linear / Conv1D is quantized per channel (mode `base`) — and gets the
    adapter's weights; modules_to_save get theirs. Returns the adapted module names.

    All or nothing: the whole directory is checked and every new module built before
    the model changes; any error leaves `model` as it was."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"qkernels.load_adapters: {f} does not exist")
    config = _read_json(config_file)
    _check_config(config, config_file)
    where = f"qkernels.load_adapters: {weights_file}"
    lora, others = _split(_load_tensors(weights_file), where)
    patterns = _PatternMatcher(config_file)
    targets = [
        _target(model, name, pair, config, base, patterns, where) for name, pair in lora.items()
    ]
    params = dict(model.named_parameters())
    for key, t in others.items():
        if key not in params or params[key].shape != t.shape:
            raise ValueError(f"{where}: {key!r} matches no parameter of that shape in the model")
    # Nothing below can fail on a checked directory.
    use_rslora = bool(config.get("use_rslora"))
    for t in targets:
        if t.unfuse:
            unfuse_activations(model, lambda linear, name=t.name: linear == name)
        parent_name, _, child = t.name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, t.module)
        m = t.module
        m.alpha, m.use_rslora = t.alpha, use_rslora
        m.scaling = m.alpha / (m.r**0.5 if use_rslora else m.r)
        with torch.no_grad():
            m.lora_A.copy_(t.a)
            m.lora_B.copy_(t.b)
    with torch.no_grad():
        for key, t in others.items():
            params[key].copy_(t)
    connect_handoffs(model)  # the wrapped Linears no longer read a norm's handoff
    _record_plan(model)
    return sorted(lora)
