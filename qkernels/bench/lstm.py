"""LSTM benchmarks: Int8LSTM against fp32 / bf16 nn.LSTM and torch.ao's dynamic
int8 LSTM, in one process (inference, no grad)."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from qkernels.bench.report import median_ms, table
from qkernels.nn import Int8LSTM

# (layers, T, B, H): PyTorch's word-language-model shape, and a latency shape.
FULL_SHAPES = [(2, 35, 20, 650), (2, 64, 1, 512)]
CI_SHAPES = [(2, 8, 4, 64)]


@dataclass
class LstmRow:
    layers: int
    steps: int
    batch: int
    hidden: int
    impl: str
    median_ms: float
    rel_err_vs_fp32: float
    speedup_vs_fp32: float = float("nan")


class _Holder(nn.Module):
    """quantize_dynamic swaps children only, never the module it is given."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)


def torch_ao_lstm(lstm: nn.LSTM) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        holder = quantize_dynamic(_Holder(lstm), {nn.LSTM}, dtype=torch.qint8)
    assert type(holder.rnn) is not nn.LSTM, "torch.ao did not quantize the LSTM"
    return holder


@torch.no_grad()
def run_lstm_suite(
    shapes=FULL_SHAPES, min_run_time: float = 1.0, progress: bool = True
) -> list[LstmRow]:
    from tqdm import tqdm

    rows = []
    for layers, steps, batch, hidden in tqdm(
        shapes, desc="LSTM bench", disable=not progress, leave=False
    ):
        lstm = nn.LSTM(hidden, hidden, num_layers=layers).eval()
        x = torch.randn(steps, batch, hidden)
        exact = lstm(x)[0].double()
        impls = {
            "fp32 nn.LSTM": (lstm, x),
            "bf16 nn.LSTM": (copy.deepcopy(lstm).to(torch.bfloat16), x.bfloat16()),
            "torch.ao dynamic int8 LSTM": (torch_ao_lstm(copy.deepcopy(lstm)), x),
            "qkernels Int8LSTM": (Int8LSTM.from_float(lstm).eval(), x),
        }
        group = []
        for name, (module, xi) in impls.items():
            out = module(xi)[0].double()
            err = ((out - exact).norm() / exact.norm()).item()
            t = median_ms(module, min_run_time, xi)
            group.append(LstmRow(layers, steps, batch, hidden, name, t, err))
        for r in group:
            r.speedup_vs_fp32 = group[0].median_ms / r.median_ms
        rows += group
    return rows


COLUMNS = (
    ("layers", "layers", ">6"),
    ("T", "steps", ">4"),
    ("B", "batch", ">4"),
    ("H", "hidden", ">5"),
    ("impl", "impl", "<28"),
    ("ms", "median_ms", ">9.2f"),
    ("x fp32", "speedup_vs_fp32", ">7.2f"),
    ("rel err", "rel_err_vs_fp32", ">8.1e"),
)


def format_lstm_table(rows: list[LstmRow]) -> str:
    return table(rows, COLUMNS)
