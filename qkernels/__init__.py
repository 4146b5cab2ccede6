"""qkernels: quantized kernels (int8 GEMM, weight-only int8) and drop-in modules.

Importing never initialises CUDA and never fails for a missing C++ build: the
ops then raise the reason when called (see `qkernels info`).
"""

from qkernels import _hf_hook, ops
from qkernels._backend import get_backend, set_backend
from qkernels._library import EXTENSION_ERROR
from qkernels._memory import keep_freed_memory
from qkernels.adapters import load_adapters, save_adapters
from qkernels.io import load, save
from qkernels.nn import (
    QATLSTM,
    Int8Embedding,
    Int8Linear,
    Int8LowRankLinear,
    Int8LSTM,
    LoRAInt8Linear,
    LowRankLinear,
    QATLinear,
)
from qkernels.swap import ParameterSummary, SwapReport, convert, parameter_summary, swap

__version__ = "0.1.0"

_hf_hook.install()  # "qkernels" becomes a transformers quantization method (qkernels.hf)

# Submodules that import transformers or PEFT load on first use, so `import qkernels`
# stays cheap and `qkernels.hf.QKernelsConfig` still works without its own import.
_LAZY_SUBMODULES = ("hf", "peft_lora")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"qkernels.{name}")
    raise AttributeError(f"module 'qkernels' has no attribute {name!r}")


__all__ = [
    "EXTENSION_ERROR",
    "Int8Embedding",
    "Int8Linear",
    "Int8LowRankLinear",
    "Int8LSTM",
    "LoRAInt8Linear",
    "LowRankLinear",
    "ParameterSummary",
    "QATLSTM",
    "QATLinear",
    "SwapReport",
    "convert",
    "get_backend",
    "keep_freed_memory",
    "load",
    "load_adapters",
    "ops",
    "parameter_summary",
    "save",
    "save_adapters",
    "set_backend",
    "swap",
    "__version__",
]
