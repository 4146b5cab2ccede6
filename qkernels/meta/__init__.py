"""The op layer below the kernels: per family, the fake (meta) kernels, autograd
formulas and Python CPU kernels of the ops declared in `qkernels.op_table`.
Importing this package registers all of them."""

from qkernels.meta import fake_quant, int8_gemm, lora, lowrank, lstm

__all__ = ["fake_quant", "int8_gemm", "lora", "lowrank", "lstm"]
