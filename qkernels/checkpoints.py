"""Fine-tuning checkpoints that cannot tear.

Each checkpoint is a directory `output/checkpoint/step-NNNNNNNN/` holding the full model and
optimizer state (keyed by parameter name, as `qkernels.distributed.training_state` gives it
under one process, DDP or FSDP2) and the torch RNG state as safetensors, and the rest (step,
scheduler, optimizer param groups, Python RNG, tied-weight aliases, a sha256 of every file)
as `state.json`. It is
written under a temporary name, every file fsynced, then renamed into place in one
atomic step: a kill at any moment leaves either the whole checkpoint or none of it. The
last KEEP are kept. Resume takes the newest complete one (every checksum matches); if the
newest is damaged it warns and takes the one before; with none it stops with a clear
error. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

KEEP = 2
STATE = "state.json"
PREFIX = "step-"


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flatten_optimizer(sd: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.contiguous()
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state = {int(pid) if pid.isdigit() else pid: dict(v) for pid, v in meta["state"].items()}
    for key, v in tensors.items():
        pid, k = key.rsplit(".", 1)  # a parameter name holds dots; state keys do not
        state.setdefault(int(pid) if pid.isdigit() else pid, {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def checkpoints(root: Path) -> list[Path]:
    """The checkpoint directories under `root`, newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def _dedupe(state: dict) -> tuple[dict, dict]:
    """safetensors refuses tensors that share memory (tied weights): keep the first name
    of each and record the others as aliases of it."""
    seen: dict[tuple, str] = {}
    tensors, aliases = {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
        if t.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            tensors[name] = t.contiguous()
    return tensors, aliases


def save_checkpoint(out: Path, step: int, model_state: dict, opt_state: dict, sched) -> Path:
    """Write the checkpoint of `step` (the full state from `training_state`) atomically;
    keep the last KEEP. Returns its path."""
    root = out / "checkpoint"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    for stale in root.glob(".tmp-*"):  # what a killed writer left (one writer: rank 0)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{final.name}"
    tmp.mkdir()
    model_tensors, aliases = _dedupe(model_state)
    save_file(model_tensors, tmp / "model.safetensors")
    opt_tensors, opt_meta = _flatten_optimizer(opt_state)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    save_file({"torch_rng": torch.get_rng_state()}, tmp / "rng.safetensors")
    files = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")
    meta = {
        "step": step,
        "aliases": aliases,
        "optimizer": opt_meta,
        "scheduler": sched.state_dict(),
        "python_rng": list(random.getstate()[1]),
        "python_rng_pos": random.getstate()[2],
        "sha256": {name: _sha256(tmp / name) for name in files},
    }
    (tmp / STATE).write_text(json.dumps(meta))
    for name in (*files, STATE):
        _fsync(tmp / name)
    if final.exists():  # the same step written again (a resumed run): replace it whole
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync(root)
    for old in checkpoints(root)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(ckpt: Path) -> dict:
    """The checkpoint's state if every file is there and matches its checksum;
    a ValueError saying what is wrong otherwise."""
    try:
        meta = json.loads((ckpt / STATE).read_text())
        sums = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{ckpt / STATE} is missing or unreadable ({e})") from e
    for name, digest in sums.items():
        if not (ckpt / name).is_file() or _sha256(ckpt / name) != digest:
            raise ValueError(f"{ckpt / name} is missing or does not match its checksum")
    return meta


def _aliases(meta: dict, model_file: Path) -> dict:
    if "aliases" in meta:
        return meta["aliases"]
    # Written by safetensors' save_model (before checkpoints were keyed by name): it
    # records each dropped tied name in the file's metadata.
    with safe_open(model_file, "pt") as f:
        return {k: v for k, v in (f.metadata() or {}).items() if k != "format"}


def load_checkpoint(out: Path, sched) -> tuple[int, dict, dict]:
    """Restore the scheduler and RNG state of the newest complete checkpoint; returns its
    step and the full model and optimizer state for `load_training_state`."""
    root = out / "checkpoint"
    damaged = []
    for ckpt in checkpoints(root):
        try:
            meta = _complete(ckpt)
        except ValueError as e:
            damaged.append(str(e))
            continue
        if damaged:
            warnings.warn(
                f"--resume: skipped damaged checkpoint(s): {'; '.join(damaged)}; "
                f"resuming from {ckpt.name}",
                stacklevel=2,
            )
        model_state = load_file(ckpt / "model.safetensors")
        for alias, name in _aliases(meta, ckpt / "model.safetensors").items():
            model_state[alias] = model_state[name]
        opt_state = _unflatten_optimizer(
            load_file(ckpt / "optimizer.safetensors"), meta["optimizer"]
        )
        sched.load_state_dict(meta["scheduler"])
        torch.set_rng_state(load_file(ckpt / "rng.safetensors")["torch_rng"])
        random.setstate((3, tuple(meta["python_rng"]), meta["python_rng_pos"]))
        return meta["step"], model_state, opt_state
    if damaged:
        raise ValueError(f"--resume: no complete checkpoint in {root}: {'; '.join(damaged)}")
    raise FileNotFoundError(f"--resume: no checkpoint in {root}")
