"""LoRAInt8Linear: PEFT's names, shapes and init on a frozen int8 base; training,
dropout, merge, save/load."""

import math

import pytest
import torch
from torch import nn

import qkernels
from qkernels import ops
from qkernels.nn import Int8Linear, LoRAInt8Linear


def make(mode="w8a8", r=8, alpha=16.0, **kw):
    torch.manual_seed(0)
    lin = nn.Linear(48, 24)
    return lin, LoRAInt8Linear.from_float(lin, mode=mode, r=r, alpha=alpha, **kw)


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_fresh_adapter_is_exactly_the_int8_base(mode):
    lin, lora = make(mode)
    x = torch.randn(5, 48)
    torch.testing.assert_close(lora(x), Int8Linear.from_float(lin, mode)(x), rtol=0, atol=0)


def test_peft_names_shapes_init_and_frozen_base():
    _, lora = make(r=8, alpha=16.0)
    assert [n for n, p in lora.named_parameters()] == ["lora_A", "lora_B"]
    assert lora.lora_A.shape == (8, 48) and lora.lora_B.shape == (24, 8)
    assert torch.count_nonzero(lora.lora_B) == 0
    bound = 1 / math.sqrt(48)  # kaiming_uniform(a=sqrt(5)) on fan_in = 48, as nn.Linear
    assert lora.lora_A.abs().max() <= bound and lora.lora_A.std() > bound / 3
    assert lora.scaling == 2.0
    assert set(lora.state_dict()) == {"weight", "weight_scale", "bias", "lora_A", "lora_B"}
    assert lora.state_dict()["weight"].dtype == torch.int8  # portable, not packed
    assert LoRAInt8Linear(8, 4, r=4, alpha=8, use_rslora=True).scaling == 4.0


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_training_moves_only_the_adapter_and_fits(mode):
    _, lora = make(mode, r=4, alpha=8)
    base = {k: v.clone() for k, v in lora.state_dict().items() if not k.startswith("lora")}
    target = nn.Linear(48, 24)
    x = torch.randn(256, 48)
    with torch.no_grad():
        y = target(x)
    opt = torch.optim.Adam(lora.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = (lora(x) - y).square().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
    for k, v in base.items():
        torch.testing.assert_close(lora.state_dict()[k], v, rtol=0, atol=0)


def test_dropout_applies_to_the_adapter_input_only():
    _, lora = make(r=4, alpha=4, dropout=0.5)
    nn.init.normal_(lora.lora_B)
    x = torch.randn(6, 48)
    lora.train()
    torch.manual_seed(3)
    got = lora(x)
    torch.manual_seed(3)
    xd = nn.functional.dropout(x, 0.5, training=True)
    base = ops.linear_w8a8(x, lora.weight, lora.weight_scale, lora.bias)
    expected = base + lora.scaling * (xd @ lora.lora_A.T) @ lora.lora_B.T
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    lora.eval()  # no dropout: the fused op
    fused = ops.lora_w8a8(
        x, lora.weight, lora.weight_scale, lora.bias, lora.lora_A, lora.lora_B, lora.scaling
    )
    torch.testing.assert_close(lora(x), fused, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_merge_requantizes_and_reports_its_error(mode):
    _, lora = make(mode, r=8, alpha=16)
    with torch.no_grad():
        lora.lora_B.normal_(0, 0.02)
    merged = lora.merge()
    assert type(merged) is Int8Linear and merged.mode == mode
    exact = lora.merged_float_weight()
    q, s = ops.quantize_rowwise(exact)
    torch.testing.assert_close(merged.int8_weight(), q, rtol=0, atol=0)
    assert 0 < merged.merge_error < 1e-2
    x = torch.randn(32, 48)
    with torch.no_grad():
        rel = ((merged(x) - lora(x)).norm() / lora(x).norm()).item()
    assert rel < 2e-2


def test_save_load_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(48, 24), nn.ReLU(), nn.Linear(24, 4))
    model[0] = LoRAInt8Linear.from_float(model[0], r=4, alpha=8, dropout=0.1)
    with torch.no_grad():
        model[0].lora_B.normal_()
    qkernels.save(model, tmp_path)
    fresh = nn.Sequential(nn.Linear(48, 24), nn.ReLU(), nn.Linear(24, 4))
    loaded = qkernels.load(tmp_path, model=fresh).eval()
    assert isinstance(loaded[0], LoRAInt8Linear) and loaded[0].spec() == model[0].spec()
    x = torch.randn(7, 48)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def test_gpt2_conv1d_base():
    transformers = pytest.importorskip("transformers")
    conv = transformers.pytorch_utils.Conv1D(24, 48)  # weight [in, out]
    lora = LoRAInt8Linear.from_float(conv, r=4)
    x = torch.randn(3, 48)
    expected = Int8Linear.from_float(conv)(x)
    torch.testing.assert_close(lora(x), expected, rtol=0, atol=0)
    assert lora.lora_A.shape == (4, 48) and lora.lora_B.shape == (24, 4)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"r": 0}, "r must be an int >= 1"), ({"dropout": 1.0}, r"dropout must be in \[0, 1\)")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"LoRAInt8Linear: {match}"):
        LoRAInt8Linear(8, 4, **kwargs)


def test_an_absurd_rank_is_one_clear_error():
    with pytest.raises(ValueError, match=r"LoRAInt8Linear: r=1000000000000 needs lora_A"):
        LoRAInt8Linear(64, 32, r=10**12)
