"""Drop-in quantized modules."""

from qkernels.nn.int8_linear import Int8Linear
from qkernels.nn.int8_lstm import Int8LSTM
from qkernels.nn.qat_linear import QATLinear
from qkernels.nn.qat_lstm import QATLSTM

__all__ = ["Int8LSTM", "Int8Linear", "QATLSTM", "QATLinear"]
