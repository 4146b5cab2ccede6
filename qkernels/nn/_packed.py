"""The packed-weight protocol shared by the int8 modules.

On CPU the kernels read int8 weights in their own packed layout (DESIGN.md, "CPU
packed weights"); everywhere else, and in every state_dict, a weight is the portable
int8 [rows, K]. This mixin keeps that true across `.to()`, `state_dict()` and
`load_state_dict()`, so state_dict keys and contents never depend on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

Relayout = Callable[[torch.Tensor], torch.Tensor]


class PackedWeights(nn.Module):
    """Subclasses list their packed buffers in `_packed_weights()` and call
    `_relayout()` at the end of __init__ and after setting new weights."""

    def _packed_weights(self) -> Iterator[tuple[str, Relayout, Relayout]]:
        """(buffer name, pack, unpack) for every weight the CPU kernels read packed."""
        raise NotImplementedError

    def _is_float32(self, name: str) -> bool:
        """Buffers that stay float32 whatever .to(dtype) asks (scales: op contract)."""
        return name.endswith("scale")

    def _is_packed(self) -> bool:
        return any(getattr(self, n).dtype == torch.uint8 for n, _, _ in self._packed_weights())

    def _unpack(self) -> None:
        for name, _, unpack in self._packed_weights():
            if getattr(self, name).dtype == torch.uint8:
                setattr(self, name, unpack(getattr(self, name)))

    def _relayout(self) -> None:
        """Pack on CPU; a packed weight anywhere else is a bug (the kernels there
        read the portable layout)."""
        for name, pack, _ in self._packed_weights():
            w = getattr(self, name)
            if w.device.type == "cpu" and w.dtype == torch.int8:
                setattr(self, name, pack(w))
            elif w.device.type != "cpu" and w.dtype == torch.uint8:
                raise RuntimeError(f"{type(self).__name__}: packed {name} on {w.device}")

    def _check_incoming(self, state_dict, prefix: str) -> None:
        """torch would cast a float tensor into an int8 buffer without a word (a float
        weight becomes all zeros): every int8 buffer takes int8 only, every float
        buffer a float tensor, each of its own shape."""
        for name, buf in self._buffers.items():
            key = prefix + name
            if buf is None or key not in state_dict:
                continue
            got = state_dict[key]
            int8 = buf.dtype == torch.int8
            dtype_ok = got.dtype == torch.int8 if int8 else got.is_floating_point()
            if not dtype_ok or tuple(got.shape) != tuple(buf.shape):
                raise ValueError(
                    f"{type(self).__name__}: state_dict[{key!r}] must be "
                    f"{'int8' if int8 else 'floating point'} of shape {list(buf.shape)}, "
                    f"got {got.dtype} {list(got.shape)}"
                )

    def _after_external_load(self) -> None:
        """A loader that set the buffers directly (transformers' from_pretrained assigns
        them one by one, bypassing load_state_dict): scales back to float32, then the
        CPU layout."""
        for name, buf in list(self._buffers.items()):
            if buf is not None and self._is_float32(name):
                self._buffers[name] = buf.float()
        self._relayout()

    def _apply(self, fn, recurse=True):
        # Unpack before a device move so the target device gets the portable layout.
        self._unpack()
        super()._apply(fn, recurse)
        for name, buf in list(self._buffers.items()):
            if buf is not None and self._is_float32(name):
                self._buffers[name] = buf.float()
        self._relayout()
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, _, unpack in self._packed_weights():
            w = getattr(self, name)
            if w.dtype == torch.uint8:
                destination[prefix + name] = unpack(w)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._unpack()
        self._check_incoming(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        for name, buf in list(self._buffers.items()):
            if buf is not None and self._is_float32(name):
                self._buffers[name] = buf.float()
        self._relayout()
