"""Models saved by qkernels 0.1.0 (before the op-table layout; `tests/fixtures/saved_v0_1`,
written by that release's `qkernels.save`) still load, with the outputs they were saved
with (to the float rounding that differs between CPUs: conftest.saved_with_avx2)."""

import json
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_TOL
from safetensors.torch import load_file
from torch import nn

import qkernels

FIXTURES = Path(__file__).parent / "fixtures" / "saved_v0_1"


class Net(nn.Module):
    """The float architecture the `module` fixture was swapped from: Int8Linear w8a8,
    w8a16 and static-activation, LowRankLinear, Int8LowRankLinear, Int8LSTM
    (2 layers, bidirectional, proj_size) and QATLSTM with LSQ weight scales."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(24, 40)
        self.b = nn.Linear(40, 40)
        self.c = nn.Linear(40, 24, bias=False)
        self.d = nn.Linear(24, 32)
        self.e = nn.Linear(32, 24)
        self.lstm = nn.LSTM(24, 16, num_layers=2, bidirectional=True, proj_size=8)
        self.qlstm = nn.LSTM(16, 16)

    def forward(self, x):
        h = self.e(self.d(self.c(self.b(self.a(x)))))
        y, _ = self.lstm(h)
        z, _ = self.qlstm(y)
        return z


def test_plain_module_fixture_loads_with_its_outputs(saved_with_avx2):
    model = qkernels.load(FIXTURES / "module", model=Net()).eval()
    expected = load_file(FIXTURES / "module.expected.safetensors")
    types = {n: type(m).__name__ for n, m in model.named_children()}
    assert types == {
        "a": "Int8Linear",
        "b": "Int8Linear",
        "c": "Int8Linear",
        "d": "LowRankLinear",
        "e": "Int8LowRankLinear",
        "lstm": "Int8LSTM",
        "qlstm": "QATLSTM",
    }
    with torch.no_grad():
        torch.testing.assert_close(model(expected["x"]), expected["y"], **FIXTURE_TOL)


@pytest.mark.parametrize("name,output", [("gpt2_w8a8", "logits"), ("bert_qat_int8", "hidden")])
def test_hf_fixture_loads_with_its_outputs(name, output, saved_with_avx2):
    pytest.importorskip("transformers")
    model = qkernels.load(FIXTURES / name)
    expected = load_file(FIXTURES / f"{name}.expected.safetensors")
    with torch.no_grad():
        out = model(expected["input_ids"])
    got = out.logits if output == "logits" else out.last_hidden_state
    torch.testing.assert_close(got, expected[output], **FIXTURE_TOL)


def _copy(name: str, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.mark.parametrize(
    "damage,message",
    [
        ("truncate", r"model\.safetensors is not a readable safetensors file"),
        ("garbage", r"model\.safetensors is not a readable safetensors file"),
        ("bad json", r"qkernels\.json is not valid JSON"),
        ("unknown type", r"plan entry 'a' has unknown module type 'Evil'"),
        ("bad args", r"plan entry 'a' does not build"),
        ("huge dims", r"'a\.weight' must be int8 of shape \[40, 1000000000\], got I8 \[40, 24\]"),
    ],
)
def test_damaged_plain_save_is_one_clear_error(tmp_path, damage, message):
    d = _copy("module", tmp_path)
    weights, plan_file = d / "model.safetensors", d / "qkernels.json"
    plan = json.loads(plan_file.read_text())
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage":
        weights.write_bytes(b"\xff" * 64)
    elif damage == "bad json":
        plan_file.write_text("{not json")
    else:
        entry = plan["modules"]["a"]
        if damage == "unknown type":
            entry["type"] = "Evil"
        elif damage == "bad args":
            entry["no_such_argument"] = 1
        else:
            entry["in_features"] = 10**9
        plan_file.write_text(json.dumps(plan))
    with pytest.raises(ValueError, match=message):
        qkernels.load(d, model=Net())


def test_hf_architecture_must_be_a_transformers_model(tmp_path):
    pytest.importorskip("transformers")
    d = _copy("gpt2_w8a8", tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["architectures"] = ["AutoConfig"]
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown architecture 'AutoConfig'"):
        qkernels.load(d)
