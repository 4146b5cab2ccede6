"""Pure-PyTorch truth for every qkernels op: short and obviously right, one module per
op family (`qkernels.reference.<family>`), every op also importable from here.

Tests compare the kernels with these; nothing else in the package calls them on a hot
path. Imports nothing from qkernels but the shared constants of `_common`.
"""

from qkernels.reference.fake_quant import (
    fake_quant,
    fake_quant_group,
    fake_quant_group_mask,
    fake_quant_lsq,
)
from qkernels.reference.int8_gemm import (
    int8_mm,
    int_mm,
    linear_w8a8,
    linear_w8a8_act,
    linear_w8a16,
    linear_w8a16_act,
    norm_quantize,
    pack_weight,
    quantize_rowwise,
)
from qkernels.reference.lora import lora_w8a8, lora_w8a16
from qkernels.reference.lowrank import lowrank_mm
from qkernels.reference.lstm import lstm_w8a8

__all__ = [
    "fake_quant",
    "fake_quant_group",
    "fake_quant_group_mask",
    "fake_quant_lsq",
    "int8_mm",
    "int_mm",
    "linear_w8a8",
    "linear_w8a8_act",
    "linear_w8a16",
    "linear_w8a16_act",
    "lora_w8a8",
    "lora_w8a16",
    "lowrank_mm",
    "lstm_w8a8",
    "norm_quantize",
    "pack_weight",
    "quantize_rowwise",
]
