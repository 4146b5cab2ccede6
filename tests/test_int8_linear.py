"""Int8Linear: from_float, layouts, state_dict through safetensors, compile."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from qkernels import ops
from qkernels import reference as ref
from qkernels.nn import Int8Linear


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
@pytest.mark.parametrize("bias", [True, False])
def test_from_float_close_to_linear(mode, bias):
    lin = nn.Linear(300, 130, bias=bias)
    q = Int8Linear.from_float(lin, mode=mode)
    x = torch.randn(2, 17, 300)
    assert q(x).shape == (2, 17, 130)
    assert rel_err(q(x), lin(x).detach()) < 1e-2
    # The module computes exactly the op on its portable weight.
    expected_op = ref.linear_w8a8 if mode == "w8a8" else ops.linear_w8a16
    torch.testing.assert_close(
        q(x), expected_op(x, q.int8_weight(), q.weight_scale, q.bias), rtol=0, atol=0
    )


def test_conv1d_from_gpt2():
    transformers = pytest.importorskip("transformers")
    conv = transformers.pytorch_utils.Conv1D(96, 64)  # nf=96 outputs, nx=64 inputs
    nn.init.normal_(conv.weight, std=0.02)
    q = Int8Linear.from_float(conv)
    assert (q.in_features, q.out_features) == (64, 96)
    x = torch.randn(3, 64)
    assert rel_err(q(x), conv(x).detach()) < 1e-2


def test_cpu_weight_is_packed_state_dict_is_portable():
    lin = nn.Linear(33, 20)
    q = Int8Linear.from_float(lin)
    assert q.is_packed and q.weight.dtype == torch.uint8
    sd = q.state_dict()
    assert sd["weight"].dtype == torch.int8 and sd["weight"].shape == (20, 33)
    assert sd["weight_scale"].dtype == torch.float32


def test_state_dict_roundtrip_safetensors(tmp_path):
    q = Int8Linear.from_float(nn.Linear(70, 45), mode="w8a16")
    save_file(q.state_dict(), tmp_path / "m.safetensors")
    fresh = Int8Linear(70, 45, mode="w8a16")
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    x = torch.randn(4, 70)
    torch.testing.assert_close(fresh(x), q(x), rtol=0, atol=0)
    for name, t in fresh.state_dict().items():
        torch.testing.assert_close(t, q.state_dict()[name], rtol=0, atol=0)


def test_state_dict_loads_in_fresh_process_without_pickle(tmp_path):
    q = Int8Linear.from_float(nn.Linear(40, 24))
    x = torch.randn(3, 40)
    save_file(q.state_dict(), tmp_path / "m.safetensors")
    save_file({"x": x, "y": q(x)}, tmp_path / "io.safetensors")
    code = f"""
import torch
from safetensors.torch import load_file
from qkernels.nn import Int8Linear
m = Int8Linear(40, 24)
m.load_state_dict(load_file(r"{tmp_path / "m.safetensors"}"))
io = load_file(r"{tmp_path / "io.safetensors"}")
assert torch.equal(m(io["x"]), io["y"])
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dtype_cast_keeps_scales_float32():
    q = Int8Linear.from_float(nn.Linear(64, 32)).to(torch.bfloat16)
    assert q.weight_scale.dtype == torch.float32 and q.bias.dtype == torch.bfloat16
    assert q.is_packed
    out = q(torch.randn(5, 64, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_meta_roundtrip_relayout():
    q = Int8Linear.from_float(nn.Linear(20, 18))
    q.to("meta")
    assert q.weight.shape == (18, 20) and q.weight.dtype == torch.int8
    q.to_empty(device="cpu")
    assert q.is_packed


def test_compile_fullgraph_model_equals_eager():
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32))
    model[0] = Int8Linear.from_float(model[0], mode="w8a8")
    model[2] = Int8Linear.from_float(model[2], mode="w8a16")
    x = torch.randn(7, 64)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("act_bits", [7, 6, 4])
@pytest.mark.parametrize("shape", [(1, 64), (17, 100), (3, 5, 272)])
def test_act_bits_matches_the_reference_bit_exactly(shape, act_bits):
    lin = nn.Linear(shape[-1], 40)
    q = Int8Linear.from_float(lin, act_bits=act_bits)
    x = torch.randn(*shape) * 3
    aq, a_scale = ref.quantize_rowwise(x.reshape(-1, shape[-1]), bits=act_bits)
    expected = ref.int8_mm(aq, q.int8_weight(), a_scale, q.weight_scale, q.bias, x.dtype)
    with torch.no_grad():
        got = q(x)
    torch.testing.assert_close(got, expected.reshape(*shape[:-1], 40), rtol=0, atol=0)
    assert rel_err(got, lin(x).detach()) < 0.05 * 2 ** (7 - act_bits)
    assert "act_bits=" in repr(q) and q.spec()["act_bits"] == act_bits


def test_act_bits_survives_save_and_load(tmp_path):
    import qkernels

    def float_model():
        return nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16))

    model = float_model()
    report = qkernels.swap(model, "w8a8", act_bits=7)
    assert len(report.replaced) == 2
    qkernels.save(model, tmp_path / "m")
    loaded = qkernels.load(tmp_path / "m", model=float_model())
    x = torch.randn(5, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert [m.act_bits for m in loaded if isinstance(m, Int8Linear)] == [7, 7]


def test_act_bits_errors_are_clear():
    with pytest.raises(ValueError, match=r"act_bits must be an int in \[2, 8\], got 9"):
        Int8Linear(4, 4, act_bits=9)
    with pytest.raises(ValueError, match="act_bits=7 needs mode='w8a8' with dynamic"):
        Int8Linear(4, 4, mode="w8a16", act_bits=7)
    with pytest.raises(ValueError, match="act_bits=7 needs mode='w8a8' with dynamic"):
        Int8Linear(4, 4, static_act=True, act_bits=7)


def test_bad_mode_and_weight():
    with pytest.raises(ValueError, match="mode must be one of"):
        Int8Linear(4, 4, mode="w4a4")
    q = Int8Linear(8, 4)
    with pytest.raises(ValueError, match=r"weight must be int8 \[4, 8\]"):
        q.load_int8(torch.zeros(4, 9, dtype=torch.int8), torch.ones(4))


@pytest.mark.parametrize(
    "key,value", [("weight", "float"), ("weight_scale", "int"), ("weight", "shape")]
)
def test_load_state_dict_rejects_wrong_dtype_or_shape(key, value):
    lin = torch.nn.Linear(16, 8)
    q = Int8Linear.from_float(lin)
    sd = q.state_dict()
    sd[key] = {
        "float": lin.weight.detach(),
        "int": torch.ones(8, dtype=torch.int32),
        "shape": torch.zeros(8, 15, dtype=torch.int8),
    }[value]
    with pytest.raises(ValueError, match=rf"Int8Linear: state_dict\['{key}'\] must be"):
        Int8Linear(16, 8).load_state_dict(sd)


def test_lstm_load_state_dict_rejects_a_float_weight():
    from qkernels.nn import Int8LSTM

    lstm = torch.nn.LSTM(8, 16)
    sd = Int8LSTM.from_float(lstm).state_dict()
    sd["weight_hh_l0"] = lstm.weight_hh_l0.detach()
    with pytest.raises(ValueError, match=r"Int8LSTM: state_dict\['weight_hh_l0'\] must be int8"):
        Int8LSTM(8, 16).load_state_dict(sd)
