"""Triton kernels: the CUDA implementation of qkernels ops.

Each op is callable here with the op's own signature, on CUDA tensors or, with
TRITON_INTERPRET=1 set before import, on CPU tensors (how CI tests them).
Importing this package needs Triton; `import qkernels` never imports it.
"""

from qkernels.triton.fake_quant import (
    fake_quant,
    fake_quant_backward,
    fake_quant_group,
    fake_quant_group_backward,
    fake_quant_lsq,
    fake_quant_lsq_backward,
)
from qkernels.triton.int8_gemm import (
    int8_mm,
    int_mm,
    linear_w8a8,
    linear_w8a16,
    quantize_rowwise,
)
from qkernels.triton.lowrank import lowrank_mm, lowrank_mm_backward
from qkernels.triton.lstm import lstm_w8a8

__all__ = [
    "fake_quant",
    "fake_quant_backward",
    "fake_quant_group",
    "fake_quant_group_backward",
    "fake_quant_lsq",
    "fake_quant_lsq_backward",
    "int8_mm",
    "int_mm",
    "linear_w8a8",
    "linear_w8a16",
    "lowrank_mm",
    "lowrank_mm_backward",
    "lstm_w8a8",
    "quantize_rowwise",
]
