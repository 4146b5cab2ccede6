"""Save and load swapped models: safetensors + a JSON plan of the swapped modules.
Never pickle.

Hugging Face models are written with `save_pretrained` (safetensors) and the plan
goes into their config.json under "qkernels", so `qkernels.load(dir)` rebuilds the
architecture from the config (no download), swaps the recorded modules in, and
loads the weights; a `save_pretrained` of a swapped model loads the same way.
Other modules: `qkernels.save` writes model.safetensors + qkernels.json, and
`qkernels.load(dir, model=float_model)` swaps into the model you pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_model
from torch import nn

from qkernels.nn import (
    QATLSTM,
    Int8Linear,
    Int8LowRankLinear,
    Int8LSTM,
    LoRAInt8Linear,
    LowRankLinear,
    QATLinear,
)

PLAN_FILE = "qkernels.json"
WEIGHTS_FILE = "model.safetensors"

# The qkernels modules a saved plan may name; each says how to rebuild itself (`spec`).
MODULE_TYPES: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (
        Int8Linear,
        QATLinear,
        Int8LowRankLinear,
        LowRankLinear,
        LoRAInt8Linear,
        Int8LSTM,
        QATLSTM,
    )
}


def module_spec(module: nn.Module) -> dict | None:
    """Constructor arguments that rebuild an empty qkernels module, or None."""
    kind = type(module).__name__
    if MODULE_TYPES.get(kind) is not type(module):
        return None
    return {"type": kind, **module.spec()}


def _build(spec: dict) -> nn.Module:
    spec = dict(spec)
    kind = spec.pop("type")
    if kind not in MODULE_TYPES:
        raise ValueError(f"qkernels.load: unknown module type {kind!r} in the saved plan")
    return MODULE_TYPES[kind](**spec)


def swap_plan(model: nn.Module) -> dict[str, dict]:
    """Specs of the outermost qkernels modules (the inner Int8Linear of an
    Int8LowRankLinear are rebuilt by it)."""
    plan = {}
    for name, m in model.named_modules():
        spec = module_spec(m)
        if spec and not any(name.startswith(p + ".") for p in plan):
            plan[name] = spec
    return plan


def read_header(file: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header, reading no tensor data; a
    damaged file is one clear error naming it."""
    try:
        with safe_open(file, "pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: one message
        raise ValueError(f"qkernels.load: {file} is not a readable safetensors file ({e})") from e


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"qkernels.load: {file} is not a readable safetensors file ({e})") from e


def _build_checked(name: str, spec: object, header: dict[str, list[int]], source: str) -> nn.Module:
    """Build one planned module, first on the meta device (nothing allocated) to check
    the plan entry against the weights' shapes in the safetensors header."""
    where = f"qkernels.load: {source}: plan entry {name!r}"
    if not isinstance(spec, dict) or spec.get("type") not in MODULE_TYPES:
        kind = spec.get("type") if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"{where} has unknown module type {kind!r}")
    try:
        with torch.device("meta"):
            probe = _build(spec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} does not build ({e})") from e
    for key, t in probe.state_dict().items():
        want = header.get(f"{name}.{key}")
        if want is not None and want != list(t.shape):
            raise ValueError(
                f"{where} expects {name}.{key} of shape {list(t.shape)}; the weights hold {want}"
            )
    return _build(spec)


def apply_plan(
    model: nn.Module,
    plan: dict[str, dict],
    header: dict[str, list[int]] | None = None,
    source: str = "the saved plan",
) -> nn.Module:
    """Put empty qkernels modules where the plan says (weights come with load),
    each checked against the saved weights' `header` (name -> shape) first."""
    if not isinstance(plan, dict):
        raise ValueError(f"qkernels.load: {source}: 'modules' must be an object")
    for name, spec in plan.items():
        parent_name, _, child = name.rpartition(".")
        try:
            parent = model.get_submodule(parent_name) if parent_name else model
            old = getattr(parent, child)
        except AttributeError as e:
            raise ValueError(
                f"qkernels.load: the saved plan names module {name!r}, which "
                f"this model does not have"
            ) from e
        new = _build_checked(name, spec, header or {}, source)
        device = next(old.parameters(), torch.empty(0)).device
        setattr(parent, child, new.to(device))
    return model


def _read_json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"qkernels.load: {file} is not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"qkernels.load: {file} must hold a JSON object")
    return value


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "save_pretrained") and hasattr(model, "config")


def save(model: nn.Module, path: str | Path) -> Path:
    """Write `model` (swapped or not) to directory `path`; returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plan = swap_plan(model)
    if _is_hf(model):
        model.config.qkernels = {"modules": plan}
        model.save_pretrained(path, safe_serialization=True)
        return path
    save_model(model, path / WEIGHTS_FILE)  # dedups tied (shared) weights
    (path / PLAN_FILE).write_text(json.dumps({"modules": plan}, indent=1))
    return path


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model saved by `save` (or by save_pretrained after a swap)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"qkernels.load: {path} is not a directory")
    hf_config = path / "config.json"
    if model is None:
        if not hf_config.exists():
            raise ValueError(
                f"qkernels.load: {path} holds no Hugging Face config; pass the "
                "float model to load into: qkernels.load(path, model=...)"
            )
        return _load_hf(path)
    plan_file, weights = path / PLAN_FILE, path / WEIGHTS_FILE
    plan = _read_json(plan_file).get("modules", {}) if plan_file.exists() else {}
    apply_plan(model, plan, read_header(weights), str(plan_file))
    try:
        load_model(model, weights)
    except RuntimeError as e:  # missing / unexpected keys
        raise ValueError(f"qkernels.load: {weights} does not match the model ({e})") from e
    return model


def _load_hf(path: Path) -> nn.Module:
    import transformers

    _read_json(path / "config.json")  # a clear error for a damaged file, before transformers
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise ValueError(f"qkernels.load: {path}/config.json is not a usable config ({e})") from e
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
    # Only transformers' model classes: never any other attribute the name might reach.
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ValueError(f"qkernels.load: unknown architecture {arch!r} in {path}/config.json")
    model = cls(config)
    files = sorted(path.glob("*.safetensors"))
    header = {k: v for file in files for k, v in read_header(file).items()}
    plan = (getattr(config, "qkernels", None) or {}).get("modules", {})
    apply_plan(model, plan, header, f"{path}/config.json")
    state = {}
    for file in files:
        state.update(_load_tensors(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ValueError(
            f"qkernels.load: {path} does not match the rebuilt model: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.tie_weights()
    return model.eval()
