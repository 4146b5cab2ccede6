"""Triton kernels: the CUDA implementation of qkernels ops.

Each op with a Triton kernel in the op table is callable here with the op's own
signature (from `qkernels.triton.<family>`), on CUDA tensors or, with
TRITON_INTERPRET=1 set before import, on CPU tensors (how CI tests them).
Importing this package needs Triton; `import qkernels` never imports it.
"""

import importlib

from qkernels.op_table import BY_NAME, FAMILIES, OPS

_families = {f: importlib.import_module(f"qkernels.triton.{f}") for f in FAMILIES}
__all__ = [op.name for op in OPS if "triton" in op.cuda]
globals().update({name: getattr(_families[BY_NAME[name].family], name) for name in __all__})
