"""Register qkernels with transformers and PEFT the moment their registries are imported,
without importing them: transformers' quantizer registry costs seconds (it pulls in
torchao and more), and `import qkernels` must stay cheap. Yet `from_pretrained` always
finds the "qkernels" method, and `get_peft_model` always finds qkernels' LoRA layer.

Each target module -> the qkernels module that registers itself when imported."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

TARGETS = {
    "transformers.quantizers.auto": "qkernels.hf",
    "peft.tuners.lora.model": "qkernels.peft_lora",
}


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, pending: dict[str, str]) -> None:
        self.pending = pending

    def find_spec(self, fullname, path, target=None):
        registrar = self.pending.pop(fullname, None)
        if registrar is None:
            return None
        if not self.pending:
            sys.meta_path.remove(self)
        # find_spec below must not find us again for this name: it is no longer pending.
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            importlib.import_module(registrar)  # registers itself on import

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Register now where the target is loaded, else when it loads (nothing for a
    package that is not installed)."""
    if any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        return
    pending = {}
    for target, registrar in TARGETS.items():
        if target in sys.modules:
            importlib.import_module(registrar)
        elif importlib.util.find_spec(target.partition(".")[0]) is not None:
            pending[target] = registrar
    if pending:
        sys.meta_path.insert(0, _RegisterAfterImport(pending))
