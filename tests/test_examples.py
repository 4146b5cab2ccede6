"""The examples run end to end (tiny settings), so they cannot rot."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lstm_lm_qat_quick(tmp_path):
    table = load("lstm_lm_qat").main(["--quick", "--json", str(tmp_path / "r.json")])
    assert set(table) == {
        "fp32",
        "int8, post-training conversion",
        "QAT (fake-quant forward)",
        "int8 after QAT (Int8LSTM)",
    }
    qat, converted = table["QAT (fake-quant forward)"], table["int8 after QAT (Int8LSTM)"]
    # Conversion after QAT adds no loss: the int8 model computes what QAT trained.
    assert abs(converted["perplexity"] / qat["perplexity"] - 1) < 1e-3
    assert (tmp_path / "r.json").exists()


def test_int8_output_layer_quick(tmp_path):
    rows = load("int8_output_layer").main(["--steps", "2", "--json", str(tmp_path / "r.json")])
    by = {r["config"]: r for r in rows}
    assert by["fp32"]["top1_agreement"] == 1.0
    for name, r in by.items():
        assert r["perplexity"] > 1 and 0.5 < r["top1_agreement"] <= 1, name
    assert (tmp_path / "r.json").exists()
