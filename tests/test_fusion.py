"""Activation fusion (qkernels.fusion): which Hugging Face blocks take it, that a fused
model computes what the unfused one does, and that it survives save / load."""

import pytest
import torch
from torch import nn

import qkernels
from qkernels import ops
from qkernels.fusion import FUSABLE_BLOCKS, fuse_activations
from qkernels.nn import FusedActivation, Int8Linear, LoRAInt8Linear

transformers = pytest.importorskip("transformers")
from hf_models import tiny_llama  # noqa: E402


def bert(hidden_act="gelu"):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=80,
        vocab_size=100, max_position_embeddings=32, hidden_act=hidden_act,
    )  # fmt: skip
    return transformers.BertModel(config).eval()


def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=64, vocab_size=100, n_positions=32, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def llama():
    return tiny_llama()


# model, the fused Linear's name in layer 0, its activation
MODELS = {
    "bert": (bert, "encoder.layer.0.intermediate.dense", "gelu"),
    "gpt2": (gpt2, "transformer.h.0.mlp.c_fc", "gelu_tanh"),
    "llama": (llama, "model.layers.0.mlp.gate_proj", "silu"),
}
IDS = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(1))


def output(model):
    with torch.no_grad():
        out = model(IDS)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("method", ["w8a8", "w8a16"])
@pytest.mark.parametrize("arch", list(MODELS))
def test_swap_fuses_the_known_blocks_and_computes_the_same(arch, method):
    make, first, activation = MODELS[arch]
    plain, fused = make(), make()
    qkernels.swap(plain, method, fuse_activations=False)
    report = qkernels.swap(fused, method)
    assert first in report.fused and len(report.fused) == 2  # one per layer
    linear = fused.get_submodule(first)
    assert type(linear) is Int8Linear and linear.activation == activation
    assert "activations fused" in str(report)
    acts = [m for m in fused.modules() if isinstance(m, FusedActivation)]
    assert len(acts) == 2 and all(a.activation == activation for a in acts)
    assert not any(isinstance(m, FusedActivation) for m in plain.modules())
    # The same model up to the activation's last-ulp differences (a few per 1e7).
    torch.testing.assert_close(output(fused), output(plain), rtol=1e-4, atol=1e-4)


def test_unknown_activations_and_foreign_blocks_are_left_alone():
    model = bert(hidden_act="relu6")  # no epilogue activation computes ReLU6
    report = qkernels.swap(model, "w8a8")
    assert report.fused == []
    assert type(model.encoder.layer[0].intermediate.intermediate_act_fn) is nn.ReLU6

    class BertIntermediate(nn.Module):  # a user's class of the same name: not matched
        def __init__(self):
            super().__init__()
            self.dense, self.intermediate_act_fn = nn.Linear(8, 8), nn.GELU()

        def forward(self, x):
            return self.dense(self.intermediate_act_fn(x))

    assert "BertIntermediate" in FUSABLE_BLOCKS
    block = BertIntermediate()
    qkernels.swap(block, "w8a8")
    assert fuse_activations(block) == [] and type(block.intermediate_act_fn) is nn.GELU


@pytest.mark.parametrize("arch", list(MODELS))
def test_fused_models_save_and_load_exactly(arch, tmp_path):
    make, first, activation = MODELS[arch]
    model = make()
    qkernels.swap(model, "w8a8", exclude=("lm_head",))
    expected = output(model)
    qkernels.save(model, tmp_path / "q")
    for reloaded in (qkernels.load(tmp_path / "q").eval(),):
        assert reloaded.get_submodule(first).activation == activation
        assert sum(isinstance(m, FusedActivation) for m in reloaded.modules()) == 2
        torch.testing.assert_close(output(reloaded), expected, rtol=0, atol=0)


def test_quantize_on_load_fuses_unless_asked_not_to(tmp_path):
    from qkernels.hf import QKernelsConfig

    bert().save_pretrained(tmp_path / "f")
    swapped = bert()
    qkernels.swap(swapped, "w8a8")
    loaded = transformers.BertModel.from_pretrained(
        tmp_path / "f", quantization_config=QKernelsConfig("w8a8")
    ).eval()
    assert loaded.encoder.layer[1].intermediate.dense.activation == "gelu"
    torch.testing.assert_close(output(loaded), output(swapped), rtol=0, atol=0)
    unfused = transformers.BertModel.from_pretrained(
        tmp_path / "f", quantization_config=QKernelsConfig("w8a8", fuse_activations=False)
    ).eval()
    assert not any(isinstance(m, FusedActivation) for m in unfused.modules())


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
@pytest.mark.parametrize("static_or_bits", [{}, {"act_bits": 7}, {"static_act": True}])
def test_int8_linear_activation_on_every_path(mode, static_or_bits):
    if mode == "w8a16" and static_or_bits:
        pytest.skip("static and act_bits are w8a8 options")
    layer = Int8Linear(40, 24, mode=mode, activation="silu", **static_or_bits)
    torch.manual_seed(0)
    layer.load_int8(torch.randint(-127, 128, (24, 40), dtype=torch.int8), torch.rand(24) * 0.01)
    plain = Int8Linear(40, 24, mode=mode, **static_or_bits)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(3, 40)
    torch.testing.assert_close(layer(x), torch.nn.functional.silu(plain(x)), rtol=1e-5, atol=1e-6)
    assert layer.spec()["activation"] == "silu" and "activation=silu" in repr(layer)
    if not static_or_bits:
        linear_act = ops.linear_w8a8_act if mode == "w8a8" else ops.linear_w8a16_act
        expected = linear_act(x, layer.weight, layer.weight_scale, layer.bias, "silu")
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


def test_bad_activation_names_are_clear_errors():
    with pytest.raises(ValueError, match="Int8Linear: activation must be one of"):
        Int8Linear(8, 8, activation="tanh")
    with pytest.raises(ValueError, match="FusedActivation: activation must be one of"):
        FusedActivation("none", into="dense")
    # A LoRA base applies no activation: never silently dropped
    with pytest.raises(ValueError, match="unfuse it first"):
        LoRAInt8Linear.from_int8(Int8Linear(8, 8, activation="gelu"))


def test_lora_on_a_fused_int8_model_puts_the_activation_back():
    model = bert()
    qkernels.swap(model, "w8a8")
    plain = bert()
    qkernels.swap(plain, "w8a8", fuse_activations=False)
    for m in (model, plain):
        torch.manual_seed(0)
        qkernels.swap(m, "lora", r=2, alpha=4, target_modules=["dense"])
    acts = [type(layer.intermediate.intermediate_act_fn) for layer in model.encoder.layer]
    assert acts == [nn.GELU, nn.GELU]
    torch.testing.assert_close(output(model), output(plain), rtol=1e-4, atol=1e-4)
