"""qkernels.save / qkernels.load: exact round trips through safetensors, never pickle."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import qkernels
from qkernels.nn import Int8Linear, Int8LSTM

transformers = pytest.importorskip("transformers")
from hf_models import tiny_bert, tiny_gpt2  # noqa: E402


def run_in_fresh_process(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


# w8a16 in `make test-slow` only (CI time: each fresh process costs ~30 s)
@pytest.mark.parametrize("method", ["w8a8", pytest.param("w8a16", marks=pytest.mark.slow)])
def test_gpt2_roundtrip_in_fresh_process(tmp_path, method):
    model = tiny_gpt2()
    qkernels.swap(model, method)
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        logits = model(ids).logits
    qkernels.save(model, tmp_path / "m")
    save_file({"ids": ids, "logits": logits}, tmp_path / "io.safetensors")
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in (tmp_path / "m").iterdir())
    run_in_fresh_process(f"""
import torch, qkernels
model = qkernels.load(r"{tmp_path / "m"}")
from safetensors.torch import load_file
io = load_file(r"{tmp_path / "io.safetensors"}")
assert type(model.transformer.h[0].attn.c_attn).__name__ == "Int8Linear"
with torch.no_grad():
    assert torch.equal(model(io["ids"]).logits, io["logits"])
""")


def test_save_pretrained_output_loads(tmp_path):
    model = tiny_bert()
    qkernels.swap(model, "w8a8")
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = qkernels.load(tmp_path)
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert isinstance(loaded.bert.encoder.layer[0].attention.self.query, Int8Linear)


def test_qat_model_roundtrip(tmp_path):
    model = tiny_bert()
    qkernels.swap(model, "qat", act="lsq", weight_lsq=True)
    ids = torch.randint(0, 100, (2, 9))
    model.train()
    model(ids).logits.sum().backward()  # initialises the LSQ activation scales
    model.eval()
    qkernels.save(model, tmp_path)
    loaded = qkernels.load(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_plain_module_with_lstm(tmp_path):
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 16, num_layers=2, bidirectional=True)
            self.head = nn.Linear(32, 5)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    model = Tagger().eval()
    qkernels.swap(model, "w8a8", exclude=())
    x = torch.randn(6, 3, 8)
    with torch.no_grad():
        expected = model(x)
    qkernels.save(model, tmp_path)
    loaded = qkernels.load(tmp_path, model=Tagger().eval())
    assert isinstance(loaded.rnn, Int8LSTM)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        qkernels.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="pass the float model"):
        qkernels.load(tmp_path)
