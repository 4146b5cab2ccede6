"""Save and load swapped models: safetensors + the plan of the swapped modules. Never
pickle.

Hugging Face models are written in the Hugging Face native format (`qkernels.hf`: the plan
as `quantization_config` in config.json, int8 safetensors), so `from_pretrained` and
`qkernels.load(dir)` both rebuild them; directories of the earlier format (the plan under
"qkernels" in config.json) still load here. Other modules: `qkernels.save` writes
model.safetensors + qkernels.json, and `qkernels.load(dir, model=float_model)` swaps into
the model you pass.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

from qkernels.plan import (
    PLAN_FILE,
    WEIGHTS_FILE,
    _load_tensors,
    _read_json,
    apply_plan,
    model_class,
    read_header,
    swap_plan,
)


def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "save_pretrained") and hasattr(model, "config")


def save(model: nn.Module, path: str | Path) -> Path:
    """Write `model` (swapped or not) to directory `path`; returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if _is_hf(model):
        from qkernels import hf

        hf.attach(model)
        model.save_pretrained(path)
        return path
    plan = swap_plan(model)
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

    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(
            p.name for p in path.glob("*.pt*")
        )
        raise ValueError(
            f"qkernels.load: {path} holds no safetensors weights"
            + (
                f" (only {pickles}: pickle files, which qkernels never loads; convert them "
                "where you trust them: from_pretrained(...).save_pretrained(dir, "
                "safe_serialization=True))"
                if pickles
                else ""
            )
        )

    # A clear error for a damaged file, before transformers.
    raw = _read_json(path / "config.json")
    quantization = raw.get("quantization_config")
    if isinstance(quantization, dict) and quantization.get("quant_method") == "qkernels":
        from qkernels import hf

        return hf.load(path, raw)
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise ValueError(f"qkernels.load: {path}/config.json is not a usable config ({e})") from e
    model = model_class(getattr(config, "architectures", None), path)(config)
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
