"""pytest-benchmark: Int8LSTM against fp32 nn.LSTM and torch.ao's dynamic int8 LSTM.
Small shape unless QKERNELS_BENCH=full."""

import os

import pytest
import torch

from qkernels.bench.lstm import CI_SHAPES, FULL_SHAPES, torch_ao_lstm
from qkernels.nn import Int8LSTM

SHAPES = FULL_SHAPES if os.environ.get("QKERNELS_BENCH") == "full" else CI_SHAPES


@pytest.mark.parametrize("impl", ["fp32", "torch.ao", "qkernels"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L{}-T{}-B{}-H{}".format(*s))
def test_lstm(benchmark, shape, impl):
    layers, steps, batch, hidden = shape
    lstm = torch.nn.LSTM(hidden, hidden, num_layers=layers).eval()
    module = {
        "fp32": lambda: lstm,
        "torch.ao": lambda: torch_ao_lstm(lstm),
        "qkernels": lambda: Int8LSTM.from_float(lstm).eval(),
    }[impl]()
    x = torch.randn(steps, batch, hidden)
    benchmark.group = f"LSTM {shape}"
    with torch.no_grad():
        y = benchmark(lambda: module(x)[0])
    assert y.shape == (steps, batch, hidden)
