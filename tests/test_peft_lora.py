"""PEFT's own API on an int8 model (qkernels.peft_lora): get_peft_model, save_pretrained /
PeftModel.from_pretrained, merge_and_unload and unmerge on Int8Linear targets, equal bit
for bit to qkernels.swap(..., "lora") with the same adapter weights."""

import pytest
import torch

import qkernels
from qkernels.nn import Int8Linear, LoRAInt8Linear

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
from qkernels.hf import QKernelsConfig  # noqa: E402
from qkernels.peft_lora import Int8LoraLinear  # noqa: E402
from tests.test_trainer import TARGETS, Repeating, changed, falls, llama, snapshot, train  # noqa: E402

IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("peft") / "float"
    llama().save_pretrained(path)
    return path


def int8_model(float_dir, base="w8a8"):
    return transformers.LlamaForCausalLM.from_pretrained(
        float_dir, quantization_config=QKernelsConfig(base)
    ).eval()


def lora_config(**kw):
    return peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, **kw)


def twins(float_dir, base):
    """(PEFT model, qkernels.swap model) on the same int8 base, the same adapter weights."""
    ours = int8_model(float_dir, base)
    qkernels.swap(ours, "lora", r=4, alpha=8, target_modules=TARGETS)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    theirs = peft.get_peft_model(int8_model(float_dir, base), lora_config())
    layers = {n: m for n, m in theirs.named_modules() if isinstance(m, Int8LoraLinear)}
    assert len(layers) == 2 * len(TARGETS)
    with torch.no_grad():
        for name, m in ours.named_modules():
            if isinstance(m, LoRAInt8Linear):
                layer = layers[f"base_model.model.{name}"]
                layer.lora_A["default"].weight.copy_(m.lora_A)
                layer.lora_B["default"].weight.copy_(m.lora_B)
    return theirs.eval(), ours.eval()


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("base", ["w8a8", "w8a16"])
def test_get_peft_model_on_int8_equals_swap_bit_for_bit(float_dir, base):
    theirs, ours = twins(float_dir, base)
    torch.testing.assert_close(logits(theirs), logits(ours), rtol=0, atol=0)
    # Training: the same loss and the same adapter gradients.
    theirs.train(), ours.train()
    theirs(IDS, labels=IDS).loss.backward()
    ours(IDS, labels=IDS).loss.backward()
    mine = ours.model.layers[1].mlp.gate_proj  # a target with a fused SiLU on the base
    layer = theirs.base_model.model.model.layers[1].mlp.gate_proj
    assert isinstance(layer, Int8LoraLinear) and layer.get_base_layer().activation == "silu"
    torch.testing.assert_close(
        layer.lora_A["default"].weight.grad, mine.lora_A.grad, rtol=0, atol=0
    )


def test_peft_save_load_merge_and_unmerge(float_dir, tmp_path):
    theirs, ours = twins(float_dir, "w8a8")
    expected = logits(theirs)
    theirs.save_pretrained(tmp_path / "adapter")
    reloaded = peft.PeftModel.from_pretrained(int8_model(float_dir), tmp_path / "adapter").eval()
    torch.testing.assert_close(logits(reloaded), expected, rtol=0, atol=0)
    # The PEFT directory also loads through qkernels (and the other way round elsewhere).
    fresh = int8_model(float_dir)
    qkernels.load_adapters(fresh, tmp_path / "adapter")
    torch.testing.assert_close(logits(fresh), expected, rtol=0, atol=0)
    # Merge into int8: what LoRAInt8Linear.merge() gives, bit for bit, with its error.
    q = reloaded.base_model.model.model.layers[0].self_attn.q_proj
    before = q.get_base_layer().int8_weight().clone()
    q.merge()
    assert q.merged and 0 < q.merge_error < 0.05
    q.unmerge()
    assert torch.equal(q.get_base_layer().int8_weight(), before)
    merged = reloaded.merge_and_unload()
    assert not any(isinstance(m, Int8LoraLinear) for m in merged.modules())
    for name, m in ours.named_modules():
        if isinstance(m, LoRAInt8Linear):
            mine = m.merge()
            got = merged.get_submodule(name)
            assert type(got) is Int8Linear
            assert torch.equal(got.int8_weight(), mine.int8_weight())
            assert torch.equal(got.weight_scale, mine.weight_scale)
    merged_logits = logits(merged)
    assert (merged_logits - expected).abs().max() < 0.05 * expected.abs().max()


def test_unsupported_variants_are_refused(float_dir):
    with pytest.raises(ValueError, match="use_dora=True is not supported"):
        peft.get_peft_model(int8_model(float_dir), lora_config(use_dora=True))


def test_trainer_runs_a_peft_model_on_int8_and_the_adapter_reloads(float_dir, tmp_path):
    model = peft.get_peft_model(int8_model(float_dir), lora_config())
    model.train()
    before = snapshot(model)
    losses = train(model, tmp_path, checkpointing=False)
    assert falls(losses)
    moved = changed(before, model)
    assert moved and all(".lora_A." in k or ".lora_B." in k for k in moved), moved
    model.eval()
    expected = logits(model)
    model.save_pretrained(tmp_path / "trained")
    again = peft.PeftModel.from_pretrained(int8_model(float_dir), tmp_path / "trained").eval()
    torch.testing.assert_close(logits(again), expected, rtol=0, atol=0)
    assert len(Repeating()) == 8


@pytest.mark.parametrize("order", ["import qkernels, peft", "import peft, qkernels"])
def test_peft_finds_the_int8_layer_in_either_import_order(order):
    """`import qkernels` imports neither transformers nor PEFT; whichever comes first,
    PEFT's LoRA dispatcher knows Int8Linear once both are imported."""
    import subprocess
    import sys

    code = (
        f"{order}\nimport sys\n"
        "print(sys.modules['peft.tuners.lora.model'].LoraModel._create_new_module.qkernels)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().splitlines()[-1] == "True", r.stderr
