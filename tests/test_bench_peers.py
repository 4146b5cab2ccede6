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


def test_the_model_suite_refuses_a_peer_whose_timed_calls_compiled(monkeypatch):
    """A peer (or compiled row) during whose timed calls dynamo compiled a graph mixes
    compile time and maybe unfrozen code into its times: its row says so and has no time
    (no ratio), the others are timed as usual."""
    from torch._dynamo.utils import counters

    from qkernels.bench import model as model_suite
    from qkernels.demo import load_minilm

    tokenizer, _ = load_minilm()
    config = transformers.BertConfig(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
        vocab_size=tokenizer.vocab_size, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    bert = transformers.BertModel(config).eval()

    def recompiling(**inputs):  # what a guard failing on every call looks like to the suite
        counters["stats"]["unique_graphs"] += 1
        return bert(**inputs)

    def peers(model, inputs, calibration):
        return {"steady peer": bert, "recompiling peer": recompiling}, {}

    monkeypatch.setattr(model_suite, "build_peers", peers)
    rows = model_suite.run_model_suite(bert, tokenizer, "tiny", [(2, 16)], 0.05, peers=True)
    by_impl = {r.impl: r for r in rows}
    bad, good = by_impl["recompiling peer"], by_impl["steady peer"]
    assert bad.recompiles_while_timed > 0 and bad.note.startswith("refused")
    assert bad.median_ms != bad.median_ms  # NaN: no time, so no ratio
    assert good.recompiles_while_timed == 0 and good.median_ms > 0 and not good.note


@pytest.mark.parametrize("dynamic", [False, True])
def test_pt2e_peer_as_documented_computes_the_model(bert, dynamic):
    """PT2E with the X86 Inductor quantizer (static: calibrated; dynamic), compiled with
    static shapes and freezing: computes the model, and a second call compiles nothing."""
    pytest.importorskip("torchao")
    from torch._dynamo.utils import counters

    model, inputs = bert
    peer = model_peers.pt2e_int8(model, inputs, [inputs], dynamic=dynamic)
    graphs = counters["stats"]["unique_graphs"]
    assert cosine(peer, model, inputs) > 0.95
    assert counters["stats"]["unique_graphs"] == graphs
