"""Int8LSTM against nn.LSTM: the whole nn.LSTM interface, swap, save."""

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import qkernels
from qkernels.nn import Int8LSTM

# Int8LSTM vs fp32 nn.LSTM: int8 weights and per-token int8 activations at every
# step; the bound is 2e-2 relative (measured worst ~1.2e-2 over the grid).
VS_FLOAT = 2e-2


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


GRID = list(
    itertools.product([1, 2], [True, False], [False, True], [False, True], [0, 8], [False, True])
)


@pytest.mark.parametrize("layers,bias,batch_first,bidirectional,proj,with_hx", GRID)
def test_module_matches_nn_lstm(layers, bias, batch_first, bidirectional, proj, with_hx):
    lstm = nn.LSTM(
        12,
        20,
        num_layers=layers,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        proj_size=proj,
    ).eval()
    q = Int8LSTM.from_float(lstm)
    x = torch.randn(7, 5, 12)  # (batch 7, time 5) when batch_first
    hx = None
    if with_hx:
        d = layers * (2 if bidirectional else 1)
        batch = 7 if batch_first else 5
        hx = (torch.randn(d, batch, proj or 20) * 0.5, torch.randn(d, batch, 20) * 0.5)
    with torch.no_grad():
        y, (h, c) = q(x, hx)
        y_ref, (h_ref, c_ref) = lstm(x, hx)
    for a, b in ((y, y_ref), (h, h_ref), (c, c_ref)):
        assert a.shape == b.shape
        assert rel(a, b) < VS_FLOAT


@pytest.mark.parametrize("bidirectional", [False, True])
def test_module_packed_sequence(bidirectional):
    lstm = nn.LSTM(12, 20, num_layers=2, bidirectional=bidirectional).eval()
    q = Int8LSTM.from_float(lstm)
    x = torch.randn(6, 4, 12)
    packed = pack_padded_sequence(x, torch.tensor([3, 6, 1, 4]), enforce_sorted=False)
    with torch.no_grad():
        y, (h, c) = q(packed)
        y_ref, (h_ref, c_ref) = lstm(packed)
    assert torch.equal(y.batch_sizes, y_ref.batch_sizes)
    assert torch.equal(y.unsorted_indices, y_ref.unsorted_indices)
    for a, b in ((y.data, y_ref.data), (h, h_ref), (c, c_ref)):
        assert rel(a, b) < VS_FLOAT


def test_module_unbatched_and_dropout():
    lstm = nn.LSTM(12, 20, num_layers=2, dropout=0.5).eval()
    q = Int8LSTM.from_float(lstm)
    x = torch.randn(6, 12)
    with torch.no_grad():
        y, (h, c) = q(x)
        y_ref, (h_ref, _) = lstm(x)
        assert y.shape == y_ref.shape and h.shape == h_ref.shape
        assert rel(y, y_ref) < VS_FLOAT
        q.train()
        assert not torch.equal(q(x)[0], y)  # dropout between the layers in training mode


def test_state_dict_roundtrip_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    q = Int8LSTM.from_float(nn.LSTM(10, 24, num_layers=2, bidirectional=True, proj_size=6))
    sd = q.state_dict()
    assert sd["weight_ih_l0"].dtype == torch.int8 and sd["weight_ih_l0"].shape == (96, 10)
    save_file(sd, tmp_path / "lstm.safetensors")
    fresh = Int8LSTM(10, 24, num_layers=2, bidirectional=True, proj_size=6)
    fresh.load_state_dict(load_file(tmp_path / "lstm.safetensors"))
    x = torch.randn(5, 3, 10)
    torch.testing.assert_close(fresh(x)[0], q(x)[0], rtol=0, atol=0)


def test_swap_replaces_lstm():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 16)
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    model = Model().eval()
    x = torch.randn(5, 2, 8)
    with torch.no_grad():
        before = model(x)
        report = qkernels.swap(model, "w8a8", exclude=())
        after = model(x)
    assert isinstance(model.rnn, Int8LSTM)
    assert sorted(n for n, _, _ in report.replaced) == ["head", "rnn"]
    assert rel(after, before) < VS_FLOAT


def test_bad_input_raises_clear_error():
    q = Int8LSTM(8, 16, num_layers=2)
    with pytest.raises(ValueError, match=r"input.size\(-1\) must be input_size=8, got 9"):
        q(torch.randn(3, 2, 9))
    with pytest.raises(ValueError, match=r"expected h0 of shape \[2, 2, 16\]"):
        q(torch.randn(3, 2, 8), (torch.zeros(1, 2, 16), torch.zeros(2, 2, 16)))
