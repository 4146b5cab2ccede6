"""Checkpoints hold the full state by parameter name; those written before (optimizer
state by parameter number, tied names in the safetensors metadata) still resume."""

import json

import pytest
import torch
from safetensors.torch import save_file, save_model
from torch import nn

from qkernels.checkpoints import _flatten_optimizer, load_checkpoint, save_checkpoint
from qkernels.distributed import load_training_state, training_state


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(self.frozen(self.emb(x)))


def trained(seed: int):
    torch.manual_seed(seed)
    model = Tied()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    for _ in range(2):
        model(torch.arange(11)).square().mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def assert_same(a, opt_a, b, opt_b):
    assert a.head.weight is a.emb.weight and b.head.weight is b.emb.weight
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(ta, tb)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    # torch.distributed.checkpoint gives Adam's betas back as a list: same values.
    assert json.dumps(sa["param_groups"]) == json.dumps(sb["param_groups"])
    for pid in sa["state"]:
        for k, v in sa["state"][pid].items():
            assert torch.equal(v, sb["state"][pid][k])


@pytest.mark.parametrize("writer", ["current", "release_0_1"])
def test_checkpoint_round_trip_restores_model_optimizer_and_ties(tmp_path, writer):
    model, opt, sched = trained(0)
    if writer == "current":
        save_checkpoint(tmp_path, 2, *training_state(model, opt), sched)
        meta = json.loads(
            next((tmp_path / "checkpoint").iterdir()).joinpath("state.json").read_text()
        )
        assert meta["aliases"] == {"head.weight": "emb.weight"}
    else:  # what release 0.1 wrote: safetensors' save_model, torch's numbered optimizer state
        ckpt = tmp_path / "checkpoint" / "step-00000002"
        ckpt.mkdir(parents=True)
        save_model(model, ckpt / "model.safetensors")
        tensors, opt_meta = _flatten_optimizer(opt.state_dict())
        save_file(tensors, ckpt / "optimizer.safetensors")
        save_file({"torch_rng": torch.get_rng_state()}, ckpt / "rng.safetensors")
        from qkernels.checkpoints import _sha256

        files = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")
        (ckpt / "state.json").write_text(json.dumps({
            "step": 2, "optimizer": opt_meta, "scheduler": sched.state_dict(),
            "python_rng": [0] * 625, "python_rng_pos": 624,
            "sha256": {f: _sha256(ckpt / f) for f in files},
        }))  # fmt: skip
    fresh, opt2, sched2 = trained(1)  # different weights and optimizer state
    step, model_state, opt_state = load_checkpoint(tmp_path, sched2)
    load_training_state(fresh, opt2, model_state, opt_state)
    assert step == 2 and sched2.state_dict() == sched.state_dict()
    assert_same(model, opt, fresh, opt2)
