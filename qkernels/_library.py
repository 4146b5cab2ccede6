"""Defines every op of the op table under torch.library and loads the C++ kernels.

Nothing here knows a particular op: schemas come from `op_table`, fake kernels and
autograd from `qkernels/meta/<family>.py`, CPU kernels from qkernels._C (whose
csrc/cpu/<family>.cpp files register them) or from the meta modules, CUDA kernels
from `_backend`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from torch.library import Library

from qkernels.op_table import OPS

log = logging.getLogger("qkernels")

lib = Library("qkernels", "DEF")
for _op in OPS:
    lib.define(_op.name + _op.schema)


def _raiser(name: str, err: Exception):
    def fail(*args, **kwargs):
        raise RuntimeError(
            f"qkernels.{name}: the C++ extension qkernels._C is not available ({err}). "
            "Rebuild it with `pip install -e . --no-build-isolation` (or `make test`)."
        )

    return fail


def _import_extension() -> None:
    """qkernels._C, or the build named by $QKERNELS_EXTENSION (a path to another build
    of it, such as `make sanitize`'s) imported under the same name."""
    path = os.environ.get("QKERNELS_EXTENSION")
    if not path:
        from qkernels import _C  # noqa: F401

        return
    spec = importlib.util.spec_from_file_location("qkernels._C", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"QKERNELS_EXTENSION={path!r} is not an extension module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["qkernels._C"] = module
    spec.loader.exec_module(module)


def _load_extension() -> Exception | None:
    """Import qkernels._C (registers the C++ kernels). Never raises: a broken
    build is logged and each C++ CPU op then raises the reason when called."""
    try:
        _import_extension()
    except Exception as e:  # noqa: BLE001 - any import failure must not break `import qkernels`
        log.warning("qkernels: C++ extension failed to load (%s); CPU ops will raise", e)
        for op in OPS:
            if op.cpu == "cpp":
                lib.impl(op.name, _raiser(op.name, e), "CPU")
        return e
    return None


EXTENSION_ERROR = _load_extension()
