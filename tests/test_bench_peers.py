"""The model suite's int8 peers (qkernels.bench.model_peers) build and compute the model
they were made from; one that cannot be built is reported, not raised."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
from qkernels.bench import model_peers  # noqa: E402 - needs transformers


@pytest.fixture(scope="module")
def bert():
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        vocab_size=100, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    g = torch.Generator().manual_seed(1)
    inputs = {
        "input_ids": torch.randint(0, 100, (2, 16), generator=g),
        "attention_mask": torch.ones(2, 16, dtype=torch.long),
        "token_type_ids": torch.zeros(2, 16, dtype=torch.long),
    }
    return model, inputs


def cosine(peer, model, inputs) -> float:
    with torch.no_grad():
        ref = model(**inputs)[0].reshape(2, -1)
        got = peer(**inputs)[0].reshape(2, -1)
    return torch.nn.functional.cosine_similarity(got, ref).min().item()


def test_onnxruntime_int8_peer_computes_the_model(bert, tmp_path):
    pytest.importorskip("onnxruntime")
    model, inputs = bert
    attention = model.config._attn_implementation
    peer = model_peers.onnxruntime_int8(model, inputs, tmp_path)
    assert cosine(peer, model, inputs) > 0.95
    assert model.config._attn_implementation == attention  # exported from a copy


def test_torchao_int8_peer_computes_the_model(bert):
    pytest.importorskip("torchao")
    model, inputs = bert
    assert cosine(model_peers.torchao_int8(model, inputs), model, inputs) > 0.99


def test_a_peer_that_cannot_be_built_is_a_note(bert, monkeypatch):
    model, inputs = bert

    def broken(*args, **kwargs):
        raise RuntimeError("no such backend here\nsecond line")

    for name in ("onnxruntime_int8", "pt2e_int8", "torchao_int8"):
        monkeypatch.setattr(model_peers, name, broken)
    built, missing = model_peers.build_peers(model, inputs, [inputs])
    assert built == {}
    assert missing == dict.fromkeys(model_peers.PEERS, "RuntimeError: no such backend here")
