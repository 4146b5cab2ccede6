"""Data parallelism for the fine-tuning loop under torchrun: DDP, or FSDP2 (`fully_shard`),
and the full (unsharded) training state either way.

Checkpoints always hold the full state keyed by parameter name (model and optimizer, from
`torch.distributed.checkpoint.state_dict`), so one written by an FSDP2 run resumes in one
process and the other way round. Every function here that touches a sharded model is a
collective: all ranks call it.
"""

from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

FULL = StateDictOptions(full_state_dict=True)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init() -> bool:
    """Start the process group torchrun asked for (WORLD_SIZE > 1); True if started here."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return True
    return False


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP2 shards one by one: the children of each outermost
    ModuleList whose entries share one class and hold parameters (BERT's encoder.layer,
    GPT-2's h, Llama's layers)."""
    blocks: list[nn.Module] = []
    taken: set[str] = set()
    for name, module in model.named_modules():
        if any(name.startswith(t + ".") for t in taken):
            continue
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 0
            and len({type(m) for m in module}) == 1
            and any(True for _ in module[0].parameters())
        ):
            blocks.extend(module)
            taken.add(name)
    return blocks


def meta_skeleton(model: nn.Module) -> nn.Module:
    """A copy of `model` whose parameters live on the meta device (no memory) and whose
    buffers are the model's own: what `unsharded` fills with the trained weights."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = b  # shared, not copied: FSDP2 leaves buffers whole
    return copy.deepcopy(model, memo)


def shard(model: nn.Module) -> nn.Module:
    """FSDP2 in place: each transformer block, then the root (embeddings, heads). Returns
    the meta skeleton for `unsharded`. The int8 weights are buffers: not sharded."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    skeleton = meta_skeleton(model)
    device = "cuda" if next(model.parameters()).is_cuda else "cpu"
    mesh = init_device_mesh(device, (dist.get_world_size(),))
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return skeleton


def unsharded(sharded: nn.Module, skeleton: nn.Module) -> nn.Module:
    """The skeleton filled with the sharded model's full weights (every rank gets them):
    a plain module again, for conversion, merging, evaluation and saving."""
    full = get_model_state_dict(sharded, options=FULL)
    aliases = _aliases(skeleton)
    skeleton.load_state_dict(full, assign=True)
    for alias, name in aliases.items():  # re-tie what assign=True untied (GPT-2's lm_head)
        owner, attr = _owner(skeleton, alias)
        setattr(owner, attr, skeleton.get_parameter(name))
    return skeleton


def _aliases(model: nn.Module) -> dict[str, str]:
    first: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    return (model.get_submodule(path) if path else model), attr


def training_state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The full model and optimizer state, keyed by parameter name (collective). Tied
    weights are one tensor under each name, sharded or not (the gather copies them)."""
    model_state, opt_state = get_state_dict(model, opt, options=FULL)
    for alias, name in _aliases(model).items():
        if alias in model_state and name in model_state:
            model_state[alias] = model_state[name]
    return model_state, opt_state


def load_training_state(
    model: nn.Module, opt: torch.optim.Optimizer, model_state: dict, opt_state: dict
) -> None:
    """Put a full state from `training_state` back (every rank passes the same one)."""
    params = opt_state["param_groups"][0]["params"] if opt_state["param_groups"] else []
    if params and isinstance(params[0], int):  # a checkpoint from before names: ids
        opt_state = _ids_to_names(model, opt_state)
    set_state_dict(
        model, opt, model_state_dict=model_state, optim_state_dict=opt_state, options=FULL
    )


def _ids_to_names(model: nn.Module, opt_state: dict) -> dict:
    """torch's own optimizer state (parameters numbered in optimizer order, which the
    loop builds from the trainable parameters in module order) keyed by name instead."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in opt_state["param_groups"]]
    state = {names[int(i)]: s for i, s in opt_state["state"].items()}
    return {"state": state, "param_groups": groups}


def checksum_all_ranks(model: nn.Module) -> list[float]:
    """Every rank's sum of all weights (data parallelism keeps them identical)."""
    local = torch.tensor(
        [sum(t.double().sum().item() for t in model.state_dict().values())], dtype=torch.float64
    )
    gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    return [g.item() for g in gathered]
