"""Register qkernels with transformers the moment transformers' quantizer registry is
imported, without importing it: that import costs seconds (it pulls in torchao and more),
and `import qkernels` must stay cheap. Yet `from_pretrained` always finds the method."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

TARGET = "transformers.quantizers.auto"


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)  # once; find_spec below must not find us again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            importlib.import_module("qkernels.hf")  # registers itself on import

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register now if the registry is loaded, else when it loads (nothing without
    transformers)."""
    if TARGET in sys.modules:
        importlib.import_module("qkernels.hf")
    elif importlib.util.find_spec("transformers") is not None and not any(
        isinstance(f, _RegisterAfterImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _RegisterAfterImport())
