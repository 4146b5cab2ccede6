"""Drop-in quantized and low-rank modules."""

from qkernels.nn.fused_activation import FusedActivation
from qkernels.nn.int8_embedding import Int8Embedding
from qkernels.nn.int8_linear import Int8Linear
from qkernels.nn.int8_lstm import Int8LSTM
from qkernels.nn.lora_linear import LoRAInt8Linear
from qkernels.nn.lowrank_linear import Int8LowRankLinear, LowRankLinear
from qkernels.nn.norm_handoff import HandoffLayerNorm, HandoffRMSNorm, QuantizedHandoff
from qkernels.nn.qat_linear import QATLinear
from qkernels.nn.qat_lstm import QATLSTM

__all__ = [
    "FusedActivation",
    "HandoffLayerNorm",
    "HandoffRMSNorm",
    "Int8Embedding",
    "Int8LSTM",
    "Int8Linear",
    "Int8LowRankLinear",
    "LoRAInt8Linear",
    "LowRankLinear",
    "QATLSTM",
    "QATLinear",
    "QuantizedHandoff",
]
