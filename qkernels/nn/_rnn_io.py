"""nn.LSTM's input/output conventions, shared by Int8LSTM and QATLSTM: packed,
batch-first and unbatched inputs to time-major [T, B, I] and back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


@dataclass
class RnnInput:
    x: torch.Tensor  # [T, B, input_size], time-major
    unbatched: bool = False
    lengths: torch.Tensor | None = None  # packed input only
    batch_sizes: torch.Tensor | None = None
    sorted_idx: torch.Tensor | None = None
    unsorted_idx: torch.Tensor | None = None


LSTM_ARGS = (
    "input_size",
    "hidden_size",
    "num_layers",
    "bias",
    "batch_first",
    "dropout",
    "bidirectional",
    "proj_size",
)


def lstm_spec(module) -> dict:
    """nn.LSTM's constructor arguments, read off an LSTM-like module."""
    return {a: getattr(module, a) for a in LSTM_ARGS}


def to_time_major(name: str, input, batch_first: bool, input_size: int) -> RnnInput:
    if isinstance(input, PackedSequence):
        x, lengths = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))
        inp = RnnInput(
            x, False, lengths, input.batch_sizes, input.sorted_indices, input.unsorted_indices
        )
    else:
        if input.dim() not in (2, 3):
            raise ValueError(
                f"{name}: expected a 2-D (unbatched) or 3-D input, got {input.dim()}-D"
            )
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else input
        inp = RnnInput(x.transpose(0, 1) if batch_first and not unbatched else x, unbatched)
    if inp.x.shape[-1] != input_size:
        raise ValueError(
            f"{name}: input.size(-1) must be input_size={input_size}, got {inp.x.shape[-1]}"
        )
    return inp


def initial_state(name: str, inp: RnnInput, hx, layers: int, hidden: int, out: int):
    """(h0, c0) as [layers * directions, B, *], in the (sorted) batch order of inp."""
    batch = inp.x.shape[1]
    if hx is None:
        return inp.x.new_zeros(layers, batch, out), inp.x.new_zeros(layers, batch, hidden)
    h0, c0 = hx
    if inp.unbatched:
        h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    expect_h, expect_c = (layers, batch, out), (layers, batch, hidden)
    if tuple(h0.shape) != expect_h or tuple(c0.shape) != expect_c:
        raise ValueError(
            f"{name}: expected h0 of shape {list(expect_h)} and c0 of shape "
            f"{list(expect_c)}, got {list(h0.shape)} and {list(c0.shape)}"
        )
    if inp.sorted_idx is not None:
        h0, c0 = h0.index_select(1, inp.sorted_idx), c0.index_select(1, inp.sorted_idx)
    return h0.to(inp.x.dtype), c0.to(inp.x.dtype)


def from_time_major(
    inp: RnnInput, y: torch.Tensor, h_n: torch.Tensor, c_n: torch.Tensor, batch_first: bool
):
    """nn.LSTM's (output, (h_n, c_n)) in the caller's layout."""
    if inp.batch_sizes is not None:
        data = pack_padded_sequence(y, inp.lengths).data
        output = PackedSequence(data, inp.batch_sizes, inp.sorted_idx, inp.unsorted_idx)
        if inp.unsorted_idx is not None:
            h_n, c_n = h_n.index_select(1, inp.unsorted_idx), c_n.index_select(1, inp.unsorted_idx)
        return output, (h_n, c_n)
    if inp.unbatched:
        return y.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
    return (y.transpose(0, 1) if batch_first else y), (h_n, c_n)
