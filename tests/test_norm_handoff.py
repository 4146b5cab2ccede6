"""Norm handoff (qkernels.fusion.fuse_norms, qkernels.nn.norm_handoff; opt-in): norms
quantize their output once for the w8a8 Linears that read it. The Linears' results are
bit for bit what they compute quantizing on their own; anything the handoff cannot vouch
for (another tensor, an in-place change, autograd, inference_mode, torch.compile, a
Linear edited since) takes the plain path, and the norm's output is the same in every
grad mode."""

import copy

import pytest
import torch
from torch import nn

import qkernels
from qkernels import ops
from qkernels.nn import HandoffLayerNorm, HandoffRMSNorm, Int8Linear, QuantizedHandoff
from tests.test_fusion import IDS, MODELS, bert, output

transformers = pytest.importorskip("transformers")


def handoff_norms(model):
    return [m for m in model.modules() if isinstance(m, HandoffLayerNorm | HandoffRMSNorm)]


def count_handoffs(model, monkeypatch) -> int:
    taken = []
    original = QuantizedHandoff.take

    def take(self, x):
        rows = original(self, x)
        taken.append(rows is not None)
        return rows

    monkeypatch.setattr(QuantizedHandoff, "take", take)
    output(model)
    monkeypatch.setattr(QuantizedHandoff, "take", original)
    return sum(taken)


def quantizing_itself(model):
    """A copy of `model` whose Linears quantize their inputs themselves (no handoff)."""
    own = copy.deepcopy(model)
    for m in own.modules():
        if isinstance(m, Int8Linear):
            m.handoff = None
    return own


# Linears per layer that read a norm's output and have no epilogue activation:
# BERT query/key/value; GPT-2 c_attn (c_fc takes gelu); Llama q/k/v/up (gate takes silu).
TAKERS_PER_LAYER = {"bert": 3, "gpt2": 1, "llama": 4}


@pytest.mark.parametrize("arch", list(MODELS))
def test_swap_hands_norm_outputs_to_the_linears_bit_exactly(arch, monkeypatch):
    make, _, _ = MODELS[arch]
    model = make()
    assert not qkernels.swap(make(), "w8a8").norms  # opt-in
    report = qkernels.swap(model, "w8a8", exclude=("lm_head",), fuse_norms=True)
    assert report.norms and len(handoff_norms(model)) == len(report.norms)
    assert "norms quantize for the next GEMMs" in str(report)
    assert count_handoffs(model, monkeypatch) == 2 * TAKERS_PER_LAYER[arch]  # 2 layers
    # The same modules with every Linear quantizing its input itself: identical outputs.
    own = quantizing_itself(model)
    torch.testing.assert_close(output(model), output(own), rtol=0, atol=0)
    # Against torch's own norms the difference is float rounding of the norm only.
    plain = make()
    qkernels.swap(plain, "w8a8", exclude=("lm_head",), fuse_norms=False)
    assert not handoff_norms(plain)
    cos = torch.nn.functional.cosine_similarity(output(model).flatten(1), output(plain).flatten(1))
    assert cos.min() > 0.999


def test_w8a16_and_act_bits_models():
    model = bert()
    assert qkernels.swap(model, "w8a16", fuse_norms=True).norms == []  # no activations quantized
    model = bert()
    qkernels.swap(model, "w8a8", act_bits=7, fuse_norms=True)
    handoff = handoff_norms(model)[0].handoff
    assert handoff.bits == 7
    own = quantizing_itself(model)
    torch.testing.assert_close(output(model), output(own), rtol=0, atol=0)


def test_handoff_is_only_taken_by_the_same_unchanged_tensor():
    handoff = QuantizedHandoff()
    x = torch.randn(3, 5, 16)
    y, q, scale = ops.norm_quantize(x, None, None, 1e-5)
    assert handoff.take(y) is None  # nothing published yet
    handoff.publish(y, q, scale)
    rows, scales = handoff.take(y)
    assert rows.shape == (15, 16) and scales.shape == (15,)
    assert handoff.take(y.clone()) is None  # equal values, another tensor
    y.add_(1)
    assert handoff.take(y) is None  # changed in place after the norm


def test_modified_norm_output_is_requantized():
    """A model that changes the norm's output in place before the Linear reads it."""
    torch.manual_seed(0)
    norm, linear = nn.LayerNorm(32), nn.Linear(32, 8)
    model = nn.Sequential(norm, nn.Identity(), linear).eval()
    qkernels.swap(model, "w8a8", fuse_norms=True)
    x = torch.randn(4, 32)
    with torch.no_grad():
        y = model[0](x)
        y.mul_(2)  # now y is not what the norm quantized
        got = model[2](y)
        expected = ops.linear_w8a8(y, model[2].weight, model[2].weight_scale, model[2].bias)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_autograd_gets_the_same_outputs_and_torchs_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 8))
    with torch.no_grad():
        model[0].weight.normal_(1, 0.1)
        model[0].bias.normal_(0, 0.1)
    reference = copy.deepcopy(model[0])
    qkernels.swap(model, "w8a8", fuse_norms=True)
    norm = model[0]
    assert isinstance(norm, HandoffLayerNorm) and model[1].handoff is norm.handoff
    x = torch.randn(4, 32, requires_grad=True)
    y = norm(x)  # LayerNorm parameters train: the kernel's values, torch's backward
    assert norm.handoff._entry is None  # nothing published while autograd records
    with torch.no_grad():
        torch.testing.assert_close(y, norm(x), rtol=0, atol=0)
    grad = torch.randn_like(y)
    y.backward(grad)
    x2 = x.detach().requires_grad_()
    reference(x2).backward(grad)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.bias.grad, reference.bias.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        eager = model(x)
        assert norm.handoff._entry is not None
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_inference_mode_runs_and_publishes_nothing():
    model = bert()
    qkernels.swap(model, "w8a8", fuse_norms=True)
    with torch.no_grad():
        expected = model(IDS).last_hidden_state
    handoff = handoff_norms(model)[0].handoff
    handoff._entry = None
    with torch.inference_mode():  # inference tensors have no version counter to trust
        got = model(IDS).last_hidden_state
    assert handoff._entry is None
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: setattr(m, "act_bits", 7),
        lambda m: setattr(m, "mode", "w8a16"),
        lambda m: setattr(m, "activation", "relu"),
    ],
    ids=["act_bits", "mode", "activation"],
)
def test_a_linear_edited_after_swap_quantizes_itself(edit, monkeypatch):
    model = bert()
    qkernels.swap(model, "w8a8", fuse_norms=True)
    query = model.encoder.layer[0].attention.self.query
    edit(query)
    own = quantizing_itself(model)
    assert count_handoffs(model, monkeypatch) == 2 * TAKERS_PER_LAYER["bert"] - 1
    torch.testing.assert_close(output(model), output(own), rtol=0, atol=0)


def test_writes_behind_the_version_counter_are_safe_by_default():
    """`y.data.mul_` and numpy views change a norm's output without a version bump: the
    handoff would read stale rows, so it is opt-in and the default model re-quantizes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 8)).eval()
    qkernels.swap(model, "w8a8")
    assert not handoff_norms(model)
    x = torch.randn(4, 32)
    with torch.no_grad():
        y = model[0](x)
        y.data.mul_(2)
        y.numpy()[0] += 1
        got = model[1](y)
        expected = ops.linear_w8a8(y, model[1].weight, model[1].weight_scale, model[1].bias)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models(dtype):
    model = bert().to(dtype)
    qkernels.swap(model, "w8a8", fuse_norms=True)
    own = quantizing_itself(model)
    out = output(model)
    assert out.dtype == dtype
    torch.testing.assert_close(out, output(own), rtol=0, atol=0)


def test_rms_norm_plain_path_is_llamas():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    original = LlamaRMSNorm(48, eps=1e-6)
    original.weight.data = torch.randn(48)
    original.to(torch.bfloat16)
    ours = HandoffRMSNorm.from_rms_norm(original)
    assert ours.weight is original.weight and ours.state_dict().keys() == {"weight"}
    x = torch.randn(5, 48, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), original(x), rtol=0, atol=0)  # no handoff
        ours.handoff = QuantizedHandoff()
        y = ours(x)  # the kernel: one rounding where Llama rounds twice
        assert ours.handoff.take(y) is not None
        torch.testing.assert_close(y, original(x), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_saved_models_load_with_their_handoffs(arch, tmp_path, monkeypatch):
    make, _, _ = MODELS[arch]
    model = make()
    qkernels.swap(model, "w8a8", exclude=("lm_head",), fuse_norms=True)
    expected = output(model)
    qkernels.save(model, tmp_path / "q")
    reloaded = qkernels.load(tmp_path / "q").eval()
    assert len(handoff_norms(reloaded)) == len(handoff_norms(model))
    assert count_handoffs(reloaded, monkeypatch) == 2 * TAKERS_PER_LAYER[arch]
    torch.testing.assert_close(output(reloaded), expected, rtol=0, atol=0)


def test_quantize_on_load_hands_off_when_asked_to(tmp_path, monkeypatch):
    from qkernels.hf import QKernelsConfig

    bert().save_pretrained(tmp_path / "f")
    swapped = bert()
    qkernels.swap(swapped, "w8a8", fuse_norms=True)
    loaded = transformers.BertModel.from_pretrained(
        tmp_path / "f", quantization_config=QKernelsConfig("w8a8", fuse_norms=True)
    ).eval()
    assert count_handoffs(loaded, monkeypatch) == 6
    torch.testing.assert_close(output(loaded), output(swapped), rtol=0, atol=0)
    plain = transformers.BertModel.from_pretrained(
        tmp_path / "f", quantization_config=QKernelsConfig("w8a8")
    ).eval()
    assert not handoff_norms(plain)
