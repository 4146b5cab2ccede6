"""Int8LSTM: nn.LSTM with int8 weights (per-row scales) and dynamic per-token
int8 activations, each layer/direction one `lstm_w8a8` op call."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from qkernels import ops
from qkernels.nn._packed import PackedWeights
from qkernels.nn._rnn_io import from_time_major, initial_state, lstm_spec, to_time_major


def _unpack_lstm_weight(packed: torch.Tensor, hidden: int, k: int) -> torch.Tensor:
    """Inverse of ops.pack_lstm_weight: back to int8 [4 * hidden, k] in i, f, g, o order."""
    h16 = -(-hidden // 16) * 16
    rows = ops.unpack_weight(packed, 4 * h16, k)  # [H16/16 blocks][4 gates][16 units]
    rows = rows.view(h16 // 16, 4, 16, k).permute(1, 0, 2, 3).reshape(4, h16, k)
    return rows[:, :hidden].reshape(4 * hidden, k).contiguous()


class Int8LSTM(PackedWeights):
    """Drop-in for nn.LSTM (inference): num_layers, bias, batch_first, dropout (between
    layers, in training mode), bidirectional, proj_size, optional (h0, c0),
    PackedSequence and unbatched inputs, the same outputs and shapes.

    Buffers follow nn.LSTM's names (weight_ih_l0, weight_hh_l0_reverse, ...) plus
    a float32 `*_scale` per weight. On CPU the gate weights are held in the
    kernel's packed layout; state_dict() always holds int8 [4 * hidden, K].
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= proj_size < hidden_size:
            raise ValueError(f"Int8LSTM: proj_size must be in [0, hidden_size), got {proj_size}")
        if num_layers < 1 or not 0.0 <= dropout <= 1.0:
            raise ValueError(
                f"Int8LSTM: need num_layers >= 1 and dropout in [0, 1], got {num_layers}, {dropout}"
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.num_directions = 2 if bidirectional else 1
        out = proj_size or hidden_size
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else out * self.num_directions
            for sfx in self._suffixes(layer):
                self._add_weight(f"weight_ih{sfx}", 4 * hidden_size, layer_in, device)
                self._add_weight(f"weight_hh{sfx}", 4 * hidden_size, out, device)
                if bias:
                    for name in (f"bias_ih{sfx}", f"bias_hh{sfx}"):
                        self.register_buffer(
                            name,
                            torch.zeros(
                                4 * hidden_size, device=device, dtype=dtype or torch.float32
                            ),
                        )
                if proj_size:
                    self._add_weight(f"weight_hr{sfx}", proj_size, hidden_size, device)
        self._relayout()

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def _add_weight(self, name: str, rows: int, cols: int, device) -> None:
        self.register_buffer(name, torch.zeros(rows, cols, dtype=torch.int8, device=device))
        self.register_buffer(f"{name}_scale", torch.ones(rows, device=device))

    def _gate_weights(self):
        """(name, hidden, k) of every gate weight (the ones with the LSTM layout)."""
        out = self.proj_size or self.hidden_size
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else out * self.num_directions
            for sfx in self._suffixes(layer):
                yield f"weight_ih{sfx}", self.hidden_size, layer_in
                yield f"weight_hh{sfx}", self.hidden_size, out

    @classmethod
    def from_float(cls, lstm: nn.LSTM) -> Int8LSTM:
        """Quantize a trained nn.LSTM: symmetric int8 per output row."""
        ref = next(lstm.parameters())
        new = cls(
            lstm.input_size,
            lstm.hidden_size,
            lstm.num_layers,
            lstm.bias,
            lstm.batch_first,
            lstm.dropout,
            lstm.bidirectional,
            lstm.proj_size,
            device=ref.device,
            dtype=ref.dtype,
        )
        new._unpack()
        with torch.no_grad():
            for name, value in lstm.named_parameters():
                if name.startswith("weight"):
                    q, s = ops.quantize_rowwise(value.detach().float().contiguous())
                    getattr(new, name).copy_(q)
                    getattr(new, f"{name}_scale").copy_(s)
                else:
                    getattr(new, name).copy_(value.detach())
        new._relayout()
        return new.train(lstm.training)

    # ---- layouts: packed on CPU, portable int8 everywhere else and in state_dict ----

    def _packed_weights(self):
        for name, hidden, k in self._gate_weights():
            yield name, ops.pack_lstm_weight, partial(_unpack_lstm_weight, hidden=hidden, k=k)

    # ---- forward ----

    def forward(self, input, hx=None):
        inp = to_time_major("Int8LSTM", input, self.batch_first, self.input_size)
        h0, c0 = initial_state(
            "Int8LSTM",
            inp,
            hx,
            self.num_layers * self.num_directions,
            self.hidden_size,
            self.proj_size or self.hidden_size,
        )
        layer_in, h_n, c_n = inp.x, [], []
        for layer in range(self.num_layers):
            outs = []
            for d, sfx in enumerate(self._suffixes(layer)):
                i = layer * self.num_directions + d
                y, h, c = ops.lstm_w8a8(
                    layer_in,
                    h0[i],
                    c0[i],
                    getattr(self, f"weight_ih{sfx}"),
                    getattr(self, f"weight_ih{sfx}_scale"),
                    getattr(self, f"weight_hh{sfx}"),
                    getattr(self, f"weight_hh{sfx}_scale"),
                    getattr(self, f"bias_ih{sfx}") if self.bias else None,
                    getattr(self, f"bias_hh{sfx}") if self.bias else None,
                    d == 1,
                    getattr(self, f"weight_hr{sfx}") if self.proj_size else None,
                    getattr(self, f"weight_hr{sfx}_scale") if self.proj_size else None,
                    inp.batch_sizes,
                )
                outs.append(y)
                h_n.append(h)
                c_n.append(c)
            layer_in = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        return from_time_major(inp, layer_in, torch.stack(h_n), torch.stack(c_n), self.batch_first)

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return lstm_spec(self)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        for name, default in (
            ("bias", True),
            ("batch_first", False),
            ("dropout", 0.0),
            ("bidirectional", False),
            ("proj_size", 0),
        ):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s
