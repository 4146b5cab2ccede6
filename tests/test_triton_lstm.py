"""Triton lstm_w8a8 on CPU through TRITON_INTERPRET=1 (set in conftest), against
reference.py — the same reference the C++ kernel is tested against."""

import os

import pytest
import torch

from qkernels import ops
from qkernels import reference as ref

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
    reason="needs the Triton interpreter or a GPU",
)
T = pytest.importorskip("qkernels.triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "steps,batch,inp,hidden,proj,packed",
    [
        (4, 3, 10, 20, 0, False),
        (3, 17, 33, 40, 0, True),
        (3, 2, 16, 24, 5, False),
        (1, 1, 3, 5, 0, False),
    ],
)
def test_lstm_matches_reference(steps, batch, inp, hidden, proj, packed, reverse):
    w_ih, s_ih = ops.quantize_rowwise(torch.randn(4 * hidden, inp) / inp**0.5)
    w_hh, s_hh = ops.quantize_rowwise(torch.randn(4 * hidden, proj or hidden) / hidden**0.5)
    kw = {"b_ih": torch.randn(4 * hidden) * 0.1, "b_hh": torch.randn(4 * hidden) * 0.1}
    if proj:
        w_hr, s_hr = ops.quantize_rowwise(torch.randn(proj, hidden) / hidden**0.5)
        kw.update(w_hr=w_hr, w_hr_scale=s_hr)
    x = torch.randn(steps, batch, inp)
    h0, c0 = torch.randn(batch, proj or hidden) * 0.5, torch.randn(batch, hidden) * 0.5
    sizes = None
    if packed:
        sizes = torch.tensor(sorted((batch - i for i in range(steps)), reverse=True))
    expected = ref.lstm_w8a8(
        x, h0, c0, w_ih, s_ih, w_hh, s_hh, reverse=reverse, batch_sizes=sizes, **kw
    )
    dev = {k: v.to(DEVICE) for k, v in kw.items()}
    got = T.lstm_w8a8(
        x.to(DEVICE),
        h0.to(DEVICE),
        c0.to(DEVICE),
        w_ih.to(DEVICE),
        s_ih.to(DEVICE),
        w_hh.to(DEVICE),
        s_hh.to(DEVICE),
        reverse=reverse,
        batch_sizes=sizes,
        **dev,
    )
    for a, b in zip(got, expected, strict=True):
        assert a.shape == b.shape
        assert rel(a.cpu(), b) < 1e-4


def test_bad_input_same_errors():
    w, s = ops.quantize_rowwise(torch.randn(32, 8))
    with pytest.raises(ValueError, match=r"qkernels\.lstm_w8a8: h0 must be float of shape"):
        T.lstm_w8a8(torch.randn(2, 3, 8), torch.zeros(2, 8), torch.zeros(3, 8), w, s, w, s)
