"""LoRA adapters in PEFT's on-disk format: `adapter_config.json` and
`adapter_model.safetensors` with PEFT's key names
(`base_model.model.<module>.lora_A.weight` [r, in], `...lora_B.weight` [out, r], and the
full weights of `modules_to_save`), so that `peft.PeftModel.from_pretrained(float_model,
dir)` reads what `save_adapters` writes and `load_adapters` reads what PEFT writes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from qkernels.fusion import connect_handoffs, unfuse_activations
from qkernels.nn import Int8Linear, LoRAInt8Linear
from qkernels.nn.int8_linear import is_linear_like
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
    if not (isinstance(config.get("r"), int) and config["r"] >= 1):
        fail(f"r must be an int >= 1, got {config.get('r')!r}")
    if not isinstance(config.get("lora_alpha"), (int, float)):
        fail(f"lora_alpha must be a number, got {config.get('lora_alpha')!r}")


def _pattern(patterns: dict, name: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: a key matching the end of the name."""
    import re

    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def load_adapters(model: nn.Module, path: str | Path, base: str = "w8a8") -> list[str]:
    """Load a PEFT LoRA adapter directory into `model`, in place: each target module
    becomes (or already is) a LoRAInt8Linear — an Int8Linear base keeps its int8 weights,
    a float nn.Linear / Conv1D is quantized per channel (mode `base`) — and gets the
    adapter's weights; modules_to_save get theirs. Returns the adapted module names."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"qkernels.load_adapters: {f} does not exist")
    config = _read_json(config_file)
    _check_config(config, config_file)
    tensors = _load_tensors(weights_file)
    where = f"qkernels.load_adapters: {weights_file}"
    lora: dict[str, dict[str, torch.Tensor]] = {}
    others: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if not key.startswith(PREFIX):
            raise ValueError(f"{where}: key {key!r} does not start with {PREFIX!r}")
        rest = key[len(PREFIX) :]
        module, _, leaf = rest.rpartition(".")
        if leaf == "weight" and module.rpartition(".")[2] in LORA_PARAMS:
            owner, _, ab = module.rpartition(".")
            lora.setdefault(owner, {})[ab] = t
        else:
            others[rest] = t
    for name, pair in lora.items():
        if set(pair) != set(LORA_PARAMS):
            raise ValueError(f"{where}: {name} has {sorted(pair)}, needs lora_A and lora_B")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"{where}: the model has no module {name!r}") from None
        r = _pattern(config.get("rank_pattern"), name, config["r"])
        alpha = _pattern(config.get("alpha_pattern"), name, config["lora_alpha"])
        if not isinstance(module, LoRAInt8Linear):
            module = _wrap(model, name, module, base, r, alpha, config)
        a, b = pair["lora_A"], pair["lora_B"]
        if a.shape != module.lora_A.shape or b.shape != module.lora_B.shape:
            raise ValueError(
                f"{where}: {name} adapter shapes lora_A {list(a.shape)}, lora_B "
                f"{list(b.shape)} do not fit the module (lora_A {list(module.lora_A.shape)}, "
                f"lora_B {list(module.lora_B.shape)})"
            )
        module.alpha, module.use_rslora = float(alpha), bool(config.get("use_rslora"))
        module.scaling = module.alpha / (module.r**0.5 if module.use_rslora else module.r)
        with torch.no_grad():
            module.lora_A.copy_(a)
            module.lora_B.copy_(b)
    params = dict(model.named_parameters())
    for key, t in others.items():
        if key not in params or params[key].shape != t.shape:
            raise ValueError(f"{where}: {key!r} matches no parameter of that shape in the model")
        with torch.no_grad():
            params[key].copy_(t)
    connect_handoffs(model)  # the wrapped Linears no longer read a norm's handoff
    _record_plan(model)
    return sorted(lora)


def _wrap(model, name, module, base, r, alpha, config) -> LoRAInt8Linear:
    opts = dict(
        r=r,
        alpha=alpha,
        dropout=float(config.get("lora_dropout") or 0.0),
        use_rslora=bool(config.get("use_rslora")),
    )
    if type(module) is Int8Linear:
        if module.activation != "none":  # the lora ops apply none: the module goes back
            unfuse_activations(model, lambda linear: linear == name)
        new = LoRAInt8Linear.from_int8(module, **opts)
    elif is_linear_like(module):
        new = LoRAInt8Linear.from_float(module, mode=base, **opts)
    else:
        raise ValueError(
            f"qkernels.load_adapters: target {name!r} is a {type(module).__name__}, "
            "not a Linear, Conv1D, Int8Linear or LoRAInt8Linear"
        )
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return new
