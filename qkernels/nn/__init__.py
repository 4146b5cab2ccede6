"""Drop-in quantized modules."""

from qkernels.nn.int8_linear import Int8Linear
from qkernels.nn.qat_linear import QATLinear

__all__ = ["Int8Linear", "QATLinear"]
