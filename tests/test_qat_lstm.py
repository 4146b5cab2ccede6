"""QATLSTM: nn.LSTM's interface, trains against int8, converts to Int8LSTM."""

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import qkernels
from qkernels.nn import QATLSTM, Int8LSTM

# QATLSTM vs its Int8LSTM: identical quantization, float rounding only — except
# that a rounding-boundary flip in one step's per-token quantization of h can
# propagate; measured 2e-7 typical, 8e-4 worst over the grid below.
PARITY = 2e-3


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize(
    "layers,bidirectional,proj,weight_lsq,batch_first",
    list(itertools.product([1, 2], [False, True], [0, 6], [False, True], [False, True])),
)
def test_to_int8_parity(layers, bidirectional, proj, weight_lsq, batch_first):
    lstm = nn.LSTM(
        12,
        20,
        num_layers=layers,
        bidirectional=bidirectional,
        proj_size=proj,
        batch_first=batch_first,
    )
    qat = QATLSTM.from_float(lstm, weight_lsq=weight_lsq).eval()
    x = torch.randn(5, 3, 12)
    with torch.no_grad():
        y, (h, c) = qat(x)
        int8 = qat.to_int8()
        assert isinstance(int8, Int8LSTM)
        y8, (h8, c8) = int8(x)
        y_ref = lstm(x)[0]
    assert y.shape == y_ref.shape == y8.shape
    assert rel(y8, y) < PARITY and rel(h8, h) < PARITY and rel(c8, c) < PARITY
    assert rel(y, y_ref) < 2e-2


def test_packed_sequence_gradients_and_parity():
    qat = QATLSTM.from_float(nn.LSTM(12, 20, num_layers=2, bidirectional=True), weight_lsq=True)
    x = torch.randn(6, 4, 12)
    packed = pack_padded_sequence(x, torch.tensor([3, 6, 1, 4]), enforce_sorted=False)
    y, (h, c) = qat(packed)
    (y.data.square().sum() + h.sum() + c.sum()).backward()
    for name in ("weight_ih_l0", "weight_hh_l1_reverse", "bias_ih_l0", "weight_ih_l0_scale"):
        grad = getattr(qat, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    qat.eval()
    with torch.no_grad():
        y, (h, _) = qat(packed)
        y8, (h8, _) = qat.to_int8()(packed)
    assert rel(y8.data, y.data) < PARITY and rel(h8, h) < PARITY


def test_swap_qat_and_convert_lstm_model():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.rnn = nn.LSTM(16, 32, num_layers=2)
            self.head = nn.Linear(32, 50)

        def forward(self, ids):
            return self.head(self.rnn(self.embed(ids))[0])

    torch.manual_seed(0)
    model = LM()
    report = qkernels.swap(model, "qat", exclude=(), weight_lsq=True)
    assert isinstance(model.rnn, QATLSTM) and len(report.replaced) == 2
    ids = torch.randint(0, 50, (10, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        logits = model(ids[:-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 50), ids[1:].reshape(-1))
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        before = model(ids)
        qkernels.convert(model)
        after = model(ids)
    assert isinstance(model.rnn, Int8LSTM)
    assert rel(after, before) < PARITY


def test_bad_input():
    qat = QATLSTM(8, 16)
    with pytest.raises(ValueError, match=r"input.size\(-1\) must be input_size=8"):
        qat(torch.randn(3, 2, 7))


def test_bf16_input_on_a_float32_module_runs_in_bf16():
    q = QATLSTM.from_float(nn.LSTM(8, 16, proj_size=4))
    x = torch.randn(3, 2, 8)
    y, (h, c) = q(x.bfloat16())
    assert y.dtype == h.dtype == c.dtype == torch.bfloat16
    y32, _ = q(x)
    assert ((y.float() - y32).norm() / y32.norm()).item() < 5e-2
    y.float().sum().backward()
