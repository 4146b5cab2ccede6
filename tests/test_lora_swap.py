"""qkernels.swap(model, "lora", ...): PEFT-style targets, everything else frozen,
BERT (nn.Linear) and GPT-2 (Conv1D) models built from a config."""

import copy

import pytest
import torch

import qkernels
from qkernels.bench.lora import enable_checkpointing
from qkernels.nn import Int8Embedding, LoRAInt8Linear
from qkernels.swap import parameter_summary

transformers = pytest.importorskip("transformers")
from hf_models import tiny_bert, tiny_gpt2  # noqa: E402


def test_bert_targets_freeze_and_train():
    model = tiny_bert()
    reference = copy.deepcopy(model)
    report = qkernels.swap(
        model,
        "lora",
        r=4,
        alpha=8,
        target_modules=["query", "value"],
        modules_to_save=["classifier"],
    )
    names = [n for n, _, to in report.replaced]
    assert names == [
        f"bert.encoder.layer.{i}.attention.self.{p}" for i in (0, 1) for p in ("query", "value")
    ]
    assert all(to == "LoRAInt8Linear" for _, _, to in report.replaced)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        *(f"{n}.lora_{ab}" for n in names for ab in "AB"),
        "classifier.weight",
        "classifier.bias",
    }
    summary = parameter_summary(model)
    assert summary.trainable == 4 * (4 * 64 + 64 * 4) + 64 * 3 + 3
    # The four int8 bases (query, value: 64 x 64 each per layer) are counted, unpacked,
    # with their scales and biases among the buffers.
    assert summary.int8 == 4 * 64 * 64 and summary.buffers >= 4 * (64 + 64)
    assert summary.total == summary.trainable + summary.frozen + summary.int8 + summary.buffers
    assert "trainable params: 2,243 || all params:" in str(summary)
    # A fresh adapter (B = 0) is exactly the int8 base on the targets (with torch's
    # LayerNorms: the handoff's norm rounds differently, and LoRA layers take no handoff).
    qkernels.swap(reference, "w8a8", include=["query", "value"], fuse_norms=False)
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    frozen = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if "lora" not in k and "classifier" not in k
    }
    loss = model(ids, labels=torch.tensor([0, 2])).loss
    loss.backward()
    opt.step()
    assert all(model.get_submodule(n).lora_B.abs().sum() > 0 for n in names)
    for k, v in frozen.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


def test_embeddings_freeze_in_int8_except_modules_to_save_and_excluded():
    """embeddings=True under LoRA: every frozen table in int8 (target_modules name the
    adapters' Linears, not the tables); one in modules_to_save trains in float, an
    excluded one stays float and frozen; gradients reach the adapters through them."""
    model = tiny_bert()
    report = qkernels.swap(
        model,
        "lora",
        r=4,
        target_modules=["query", "value"],
        embeddings=True,
        exclude=["*token_type_embeddings"],
        modules_to_save=["classifier", "*position_embeddings"],
    )
    emb = model.bert.embeddings
    assert type(emb.word_embeddings) is Int8Embedding
    assert type(emb.position_embeddings) is torch.nn.Embedding
    assert type(emb.token_type_embeddings) is torch.nn.Embedding
    assert ("bert.embeddings.word_embeddings", "Embedding", "Int8Embedding") in report.replaced
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "bert.embeddings.position_embeddings.weight" in trainable
    assert "bert.embeddings.token_type_embeddings.weight" not in trainable
    trained = ("classifier", "bert.embeddings.position_embeddings")
    assert all("lora_" in n or n.startswith(trained) for n in trainable)
    model.train()
    model(torch.randint(0, 100, (2, 9))).logits.square().sum().backward()
    query = model.bert.encoder.layer[0].attention.self.query
    assert query.lora_A.grad is not None and emb.position_embeddings.weight.grad is not None


@pytest.mark.parametrize("tied", [True, False])
def test_embeddings_auto_quantizes_every_table_but_one_a_float_head_shares(tied):
    """embeddings=None (the fine-tuning CLI's LoRA default): GPT-2's wte stays float
    while the excluded float lm_head shares its weight (an int8 copy would be held
    beside it; the tie survives), every other table goes int8; untied, wte goes too."""
    model = tiny_gpt2()
    if not tied:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    report = qkernels.swap(model, "lora", r=2, target_modules=["c_attn"], embeddings=None)
    assert type(model.transformer.wpe) is Int8Embedding
    if tied:
        assert type(model.transformer.wte) is torch.nn.Embedding
        assert model.lm_head.weight is model.transformer.wte.weight
        assert ("transformer.wte", "weight shared with a float output layer") in report.skipped
        assert model.config.tie_word_embeddings
    else:
        assert type(model.transformer.wte) is Int8Embedding
    other = qkernels.swap(tiny_gpt2(), "w8a8", embeddings=None)  # None: int8 tables for LoRA only
    assert other.replaced and all(to != "Int8Embedding" for _, _, to in other.replaced)


def test_gpt2_conv1d_regex_targets_and_w8a16_base():
    model = tiny_gpt2()
    report = qkernels.swap(model, "lora", r=2, base="w8a16", target_modules=r".*\.attn\.c_attn")
    assert [n for n, _, _ in report.replaced] == [
        "transformer.h.0.attn.c_attn",
        "transformer.h.1.attn.c_attn",
    ]
    module = model.transformer.h[0].attn.c_attn
    assert isinstance(module, LoRAInt8Linear) and module.mode == "w8a16"
    assert module.lora_A.shape == (2, 64) and module.lora_B.shape == (192, 2)
    out = model(torch.randint(0, 100, (1, 8))).logits
    out.sum().backward()
    assert module.lora_A.grad is not None and model.lm_head.weight.grad is None


def test_bad_lora_options():
    with pytest.raises(ValueError, match="target_modules is for method='lora'"):
        qkernels.swap(tiny_bert(), "w8a8", target_modules=["query"])
    with pytest.raises(ValueError, match="lora base must be 'w8a8' or 'w8a16'"):
        qkernels.swap(tiny_bert(), "lora", base="int4")


def test_lora_on_a_model_quantized_while_loading_keeps_its_int8_weights(tmp_path):
    """QLoRA's path: load straight into int8 (QKernelsConfig: the fp32 weights are never
    held), then put adapters on the Int8Linears. Same model as swapping a float one:
    the same int8 weights, the fused GELU of the intermediate layer put back as a module
    (the lora ops apply none), the same outputs and a training step that moves only the
    adapters and the head."""
    from qkernels.hf import QKernelsConfig
    from qkernels.nn import FusedActivation

    tiny_bert().save_pretrained(tmp_path / "f")
    cls = transformers.BertForSequenceClassification
    opts = dict(r=4, alpha=8, target_modules=["query", "key", "value", "dense"],
                exclude=["classifier"], modules_to_save=["classifier"])  # fmt: skip
    models = []
    for config in (None, QKernelsConfig("w8a8")):
        model = cls.from_pretrained(tmp_path / "f", quantization_config=config).eval()
        torch.manual_seed(0)
        report = qkernels.swap(model, "lora", **opts)
        models.append((model, report))
    (floated, float_report), (loaded, loaded_report) = models
    assert [n for n, _, _ in loaded_report.replaced] == [n for n, _, _ in float_report.replaced]
    assert {a for _, a, _ in loaded_report.replaced} == {"Int8Linear"}
    assert not any(isinstance(m, FusedActivation) for m in loaded.modules())
    assert type(loaded.bert.encoder.layer[0].intermediate.intermediate_act_fn) is torch.nn.GELU
    with torch.no_grad():
        want, got = floated.state_dict(), loaded.state_dict()
        assert list(got) == list(want)
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), name
        for m in (*floated.modules(), *loaded.modules()):
            if isinstance(m, LoRAInt8Linear):
                m.lora_B.copy_(torch.linspace(-0.1, 0.1, m.lora_B.numel()).view_as(m.lora_B))
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, floated(ids).logits, rtol=0, atol=0)
    loaded.train()
    loaded(input_ids=ids, labels=torch.tensor([0, 2])).loss.backward()
    grads = {n for n, p in loaded.named_parameters() if p.grad is not None}
    assert grads and all(".lora_" in n or n.startswith("classifier.") for n in grads)


@pytest.mark.parametrize("base", ["w8a8", "w8a16"])
def test_gradient_checkpointing_gives_the_same_adapter_gradients(base):
    """HF's gradient checkpointing (QLoRA's memory setting) recomputes each layer's forward
    in the backward: the fused op runs twice and its gradients must not change."""
    model = tiny_bert()
    qkernels.swap(model, "lora", r=4, alpha=8, base=base, modules_to_save=["classifier"])
    assert not isinstance(model.classifier, LoRAInt8Linear)  # PEFT's rule: trained in full
    for m in model.modules():
        if isinstance(m, LoRAInt8Linear):
            torch.nn.init.normal_(m.lora_B, std=0.1)  # a trained adapter: B != 0
    checkpointed = copy.deepcopy(model)
    enable_checkpointing(checkpointed)
    ids, labels = torch.randint(0, 100, (3, 11)), torch.tensor([0, 2, 1])
    grads, calls = [], []
    for m in (model, checkpointed):
        m.train()
        query = m.bert.encoder.layer[0].attention.self.query
        calls.append(0)
        query.register_forward_hook(lambda *_: calls.__setitem__(-1, calls[-1] + 1))
        torch.manual_seed(0)  # the same dropout masks (checkpointing replays its RNG state)
        m(ids, labels=labels).loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.requires_grad})
    assert calls == [1, 2]  # the checkpointed layer ran again in the backward
    assert grads[0].keys() == grads[1].keys() and any("lora_A" in n for n in grads[0])
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=0, atol=0, msg=n)


def test_modules_to_save_and_what_they_hold_get_no_adapter():
    """PEFT never puts an adapter on (or inside) a module to save, even where
    target_modules matches it: it trains in full, float."""
    model = tiny_bert()
    report = qkernels.swap(model, "lora", r=4, modules_to_save=["pooler", "classifier"])
    skipped = dict(report.skipped)
    assert skipped["bert.pooler.dense"] == skipped["classifier"] == "in modules_to_save"
    assert type(model.bert.pooler.dense) is torch.nn.Linear
    assert model.bert.pooler.dense.weight.requires_grad and model.classifier.weight.requires_grad
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, LoRAInt8Linear)
