"""Drop-in quantized modules."""

from qkernels.nn.int8_linear import Int8Linear

__all__ = ["Int8Linear"]
