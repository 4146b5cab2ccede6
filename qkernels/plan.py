"""Swap plans: which qkernels module sits where in a model, written with the weights so a
saved model can be rebuilt (empty modules first, checked against the saved shapes, then
the weights), and the safetensors / JSON readers that turn damaged files into one clear
error naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from qkernels.fusion import connect_handoffs
from qkernels.nn import (
    QATLSTM,
    FusedActivation,
    HandoffLayerNorm,
    HandoffRMSNorm,
    Int8Embedding,
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
        Int8Embedding,
        QATLinear,
        Int8LowRankLinear,
        LowRankLinear,
        LoRAInt8Linear,
        Int8LSTM,
        QATLSTM,
        FusedActivation,
        HandoffLayerNorm,
        HandoffRMSNorm,
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


class SavedTensor(NamedTuple):
    """One tensor of a safetensors header: its dtype code ("I8", "F32", ...) and shape."""

    dtype: str
    shape: list[int]


FLOAT_CODES = ("F16", "BF16", "F32", "F64")


def read_header(file: Path) -> dict[str, SavedTensor]:
    """Tensor name -> dtype and shape from a safetensors header, reading no tensor data;
    a damaged file is one clear error naming it."""
    try:
        with safe_open(file, "pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118
            return {
                k: SavedTensor(str(s.get_dtype()), list(s.get_shape())) for k, s in slices.items()
            }
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: one message
        raise ValueError(f"qkernels.load: {file} is not a readable safetensors file ({e})") from e


def check_saved(
    name: str,
    module: nn.Module,
    header: dict[str, SavedTensor],
    source: str,
    flattened: bool = False,
    added: dict[str, SavedTensor] | None = None,
) -> None:
    """Every tensor of the planned module `name` (built empty, e.g. on meta) is in the
    saved `header` as the module holds it — int8 where it holds int8, floating point
    elsewhere, of its shape (int8 matrices as [numel] where `flattened`) — and the header
    holds no other tensor under the module's name. One clear error naming `source` and
    the key otherwise: torch and transformers would cast a float tensor into int8
    storage, leave a missing one uninitialised, or only log the difference. `added`:
    tensors the format puts under the module's name beyond its state_dict, exactly so."""
    expected = module.state_dict()
    for key, want in (added or {}).items():
        full = f"{name}.{key}"
        if header.get(full) != want:
            raise ValueError(
                f"qkernels.load: {source}: {full!r} must be {want.dtype} {want.shape}, got "
                f"{header.get(full)}"
            )
    for key, t in expected.items():
        full = f"{name}.{key}"
        got = header.get(full)
        if got is None:
            raise ValueError(f"qkernels.load: {source} holds no {full!r}, which {name!r} needs")
        int8 = t.dtype == torch.int8
        shape = [t.numel()] if int8 and flattened and t.dim() >= 2 else list(t.shape)
        dtype_ok = got.dtype == "I8" if int8 else got.dtype in FLOAT_CODES
        if not dtype_ok or got.shape != shape:
            raise ValueError(
                f"qkernels.load: {source}: {full!r} must be {'int8' if int8 else 'floating point'}"
                f" of shape {shape}, got {got.dtype} {got.shape}"
            )
    prefix = f"{name}."
    known = set(expected) | set(added or {})
    extra = sorted(k for k in header if k.startswith(prefix) and k[len(prefix) :] not in known)
    if extra:
        raise ValueError(f"qkernels.load: {source} holds {extra[:3]}, which {name!r} does not have")


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"qkernels.load: {file} is not a readable safetensors file ({e})") from e


def build_planned(name: str, spec: object, source: str) -> nn.Module:
    """The empty module of one plan entry (on the current default device); a tampered
    entry is one clear error naming `source` and the entry, whatever it holds."""
    where = f"qkernels.load: {source}: plan entry {name!r}"
    if not isinstance(spec, dict) or spec.get("type") not in MODULE_TYPES:
        kind = spec.get("type") if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"{where} has unknown module type {kind!r}")
    try:
        return _build(spec)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise ValueError(f"{where} does not build ({e})") from e


def locate(model: nn.Module, name: str, source: str) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, module) of the module a plan names; one clear error naming
    `source` where the model has no such module."""
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
    except AttributeError:
        old = None
    if not isinstance(old, nn.Module):
        raise ValueError(
            f"qkernels.load: {source}: the plan names module {name!r}, which this model "
            "does not have"
        )
    return parent, child, old


def _build_checked(
    name: str, spec: object, header: dict[str, SavedTensor], source: str
) -> nn.Module:
    """Build one planned module, first on the meta device (nothing allocated) to check
    the plan entry against the saved tensors' dtypes and shapes."""
    with torch.device("meta"):
        probe = build_planned(name, spec, source)
    check_saved(name, probe, header, source)
    return build_planned(name, spec, source)


def apply_plan(
    model: nn.Module,
    plan: dict[str, dict],
    header: dict[str, SavedTensor],
    source: str = "the saved plan",
) -> nn.Module:
    """Put empty qkernels modules where the plan says (weights come with load), each
    checked against the saved weights' `header` first (check_saved); nothing in `model`
    changes unless every entry passes."""
    if not isinstance(plan, dict):
        raise ValueError(f"qkernels.load: {source}: 'modules' must be an object")
    built = []
    for name, spec in plan.items():
        parent, child, old = locate(model, name, source)
        new = _build_checked(name, spec, header, source)
        built.append((parent, child, new.to(next(old.parameters(), torch.empty(0)).device)))
    for parent, child, new in built:
        setattr(parent, child, new)
    connect_handoffs(model)
    return model


def _read_json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"qkernels.load: {file} is not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"qkernels.load: {file} must hold a JSON object")
    return value


def model_class(architectures: list | None, path: Path) -> type:
    """The transformers model class config.json names, and only such a class: never any
    other attribute the name might reach."""
    import transformers

    arch = (architectures or [None])[0]
    cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ValueError(f"qkernels.load: unknown architecture {arch!r} in {path}/config.json")
    return cls


def untie_in_config(model: nn.Module) -> None:
    """A swapped input or output embedding no longer shares its weight with the other
    one (each holds its own tensors now): the config must say so, or transformers
    re-ties them on save and load."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_input_embeddings"):
        return
    ends = (model.get_input_embeddings(), model.get_output_embeddings())
    if any(m is not None and type(m).__module__.startswith("qkernels.") for m in ends):
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        for cfg in (config, text):
            cfg.tie_word_embeddings = False
