"""QATLSTM: quantization-aware training of an LSTM, converting to Int8LSTM.

Every product the int8 kernel computes in int8 is fake-quantized here with the
same arithmetic: weights per output row, symmetric int8 (absmax, or learned
LSQ scales with `weight_lsq=True`), and x / h per token with `quantize_rowwise`
(what lstm_w8a8 does at run time). `to_int8()` returns the Int8LSTM computing
the same numbers up to float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qkernels import ops
from qkernels.nn._rnn_io import from_time_major, initial_state, lstm_spec, to_time_major
from qkernels.nn.int8_lstm import Int8LSTM
from qkernels.nn.qat_linear import QMAX, positive, quantize_with_scale, weight_scale_from_absmax


def fake_quant_tokens(x: torch.Tensor) -> torch.Tensor:
    """Per-row symmetric int8 fake-quant with linear_w8a8's arithmetic; identity gradient."""
    q, s = ops.quantize_rowwise(x.detach())
    return x + ((q.float() * s.unsqueeze(-1)).to(x.dtype) - x).detach()


class QATLSTM(nn.LSTM):
    """nn.LSTM (same constructor, parameters and interface) that trains against int8."""

    def __init__(self, *args, weight_lsq: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weight_lsq = weight_lsq
        if weight_lsq:
            for name in self._weight_names():
                scale = weight_scale_from_absmax(getattr(self, name))
                self.register_parameter(f"{name}_scale", nn.Parameter(scale))

    def spec(self) -> dict:
        """Constructor arguments that rebuild this module empty (for qkernels.load)."""
        return {**lstm_spec(self), "weight_lsq": self.weight_lsq}

    def _weight_names(self) -> list[str]:
        return [
            n
            for n, _ in self.named_parameters(recurse=False)
            if n.startswith("weight") and not n.endswith("_scale")
        ]

    @classmethod
    def from_float(cls, lstm: nn.LSTM, weight_lsq: bool = False) -> QATLSTM:
        new = cls(
            lstm.input_size,
            lstm.hidden_size,
            lstm.num_layers,
            lstm.bias,
            lstm.batch_first,
            lstm.dropout,
            lstm.bidirectional,
            lstm.proj_size,
            weight_lsq=weight_lsq,
            device=next(lstm.parameters()).device,
        )
        with torch.no_grad():
            for name, value in lstm.named_parameters():
                getattr(new, name).copy_(value)
            if weight_lsq:
                for name in new._weight_names():
                    scale = weight_scale_from_absmax(getattr(new, name))
                    getattr(new, f"{name}_scale").copy_(scale)
        return new.train(lstm.training)

    # ---- fake quantization ----

    def weight_scale_value(self, name: str) -> torch.Tensor:
        if self.weight_lsq:
            return positive(getattr(self, f"{name}_scale").detach().float())
        return weight_scale_from_absmax(getattr(self, name))

    def fake_quant_weight(self, name: str) -> torch.Tensor:
        w = getattr(self, name)
        if self.weight_lsq:
            scale = positive(getattr(self, f"{name}_scale"))
            zero = torch.zeros_like(scale)
            g = 1.0 / math.sqrt(w.shape[1] * QMAX)
            return ops.fake_quant_lsq(w, scale, zero, 0, -QMAX, QMAX, g)
        scale = weight_scale_from_absmax(w)
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return ops.fake_quant(w, scale, zero, 0, -QMAX, QMAX)

    def _direction(self, x, h, c, sfx: str, reverse: bool, batch_sizes):
        """One layer/direction, time loop in Python (autograd through every step).
        Runs in x's dtype, like QATLinear: a bf16 input with float32 weights works."""
        w_ih, w_hh = (
            self.fake_quant_weight(f"weight_ih{sfx}").to(x.dtype),
            self.fake_quant_weight(f"weight_hh{sfx}").to(x.dtype),
        )
        w_hr = self.fake_quant_weight(f"weight_hr{sfx}").to(x.dtype) if self.proj_size else None
        bias = None
        if self.bias:
            bias = (getattr(self, f"bias_ih{sfx}") + getattr(self, f"bias_hh{sfx}")).to(x.dtype)
        steps, batch = x.shape[0], x.shape[1]
        gx = F.linear(fake_quant_tokens(x.reshape(steps * batch, -1)), w_ih, bias)
        gx = gx.reshape(steps, batch, -1)
        outputs = [None] * steps
        for s in range(steps):
            t = steps - 1 - s if reverse else s
            n = batch if batch_sizes is None else int(batch_sizes[t])
            gates = gx[t, :n] + F.linear(fake_quant_tokens(h[:n]), w_hh)
            i, f, g, o = gates.chunk(4, dim=1)
            c_n = torch.sigmoid(f) * c[:n] + torch.sigmoid(i) * torch.tanh(g)
            h_n = torch.sigmoid(o) * torch.tanh(c_n)
            if w_hr is not None:
                h_n = F.linear(fake_quant_tokens(h_n), w_hr)
            # Rows past n (finished packed sequences) keep their state.
            h = torch.cat([h_n, h[n:]]) if n < batch else h_n
            c = torch.cat([c_n, c[n:]]) if n < batch else c_n
            outputs[t] = (
                torch.cat([h_n, h_n.new_zeros(batch - n, h_n.shape[1])]) if n < batch else h_n
            )
        return torch.stack(outputs), h, c

    def forward(self, input, hx=None):
        dirs = 2 if self.bidirectional else 1
        inp = to_time_major("QATLSTM", input, self.batch_first, self.input_size)
        h0, c0 = initial_state(
            "QATLSTM",
            inp,
            hx,
            self.num_layers * dirs,
            self.hidden_size,
            self.proj_size or self.hidden_size,
        )
        layer_in, h_n, c_n = inp.x, [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                i = layer * dirs + d
                y, h, c = self._direction(layer_in, h0[i], c0[i], sfx, d == 1, inp.batch_sizes)
                outs.append(y)
                h_n.append(h)
                c_n.append(c)
            layer_in = torch.cat(outs, dim=-1) if dirs > 1 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        return from_time_major(inp, layer_in, torch.stack(h_n), torch.stack(c_n), self.batch_first)

    # ---- hand-off ----

    @torch.no_grad()
    def to_int8(self) -> Int8LSTM:
        """The Int8LSTM computing what this module's forward computes."""
        out = Int8LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            self.bidirectional,
            self.proj_size,
            device=self.weight_ih_l0.device,
        )
        out._unpack()
        for name in self._weight_names():
            scale = self.weight_scale_value(name)
            getattr(out, name).copy_(quantize_with_scale(getattr(self, name), scale))
            getattr(out, f"{name}_scale").copy_(scale)
        if self.bias:
            for name, value in self.named_parameters(recurse=False):
                if name.startswith("bias"):
                    getattr(out, name).copy_(value)
        out._relayout()
        return out.train(self.training)
