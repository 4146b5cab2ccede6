"""PEFT's LoRA on qkernels' int8 Linear: `peft.get_peft_model(int8_model, LoraConfig(...))`,
`PeftModel.from_pretrained(int8_model, dir)`, `save_pretrained` and `merge_and_unload`
work on a model whose Linears are `Int8Linear` (a `QKernelsConfig` load or a swap).

PEFT's extension point for a layer type it does not know is a custom module mapping on
the LoRA config (`LoraConfig._register_custom_module({Int8Linear: Int8LoraLinear})`).
Users write `get_peft_model(model, LoraConfig(...))` without it, so this module (imported
as soon as PEFT's LoRA model is: `qkernels/_hf_hook.py`) registers that mapping on every
config that meets an Int8Linear target, then leaves the dispatch to PEFT.

The layer keeps PEFT's parameters and names (`lora_A[adapter]`, `lora_B[adapter]`,
`scaling`), so adapters save and load in PEFT's format; its forward is qkernels' fused
op (`lora_w8a8` / `lora_w8a16`: the adapter in the int8 GEMM's epilogue) whenever one
plain adapter is active — what `qkernels.swap(..., "lora")` computes, bit for bit.
"""

from __future__ import annotations

import warnings

import torch
from peft.tuners.lora import model as lora_model
from peft.tuners.lora.layer import Linear as PeftLinear
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from qkernels import ops
from qkernels._common import apply_activation
from qkernels.nn import Int8Linear, LoRAInt8Linear
from qkernels.nn.int8_linear import requantize


class Int8LoraLinear(PeftLinear):
    """PEFT's LoRA Linear over a frozen `Int8Linear` base. An epilogue activation of the
    base (qkernels' activation fusion, e.g. Llama's gate_proj + SiLU) applies after the
    adapter's term, as it would after the float Linear's. `merge()` re-quantizes
    dequant(W) + the adapters' delta per channel into the base (its relative weight
    error in `merge_error`); `unmerge()` restores the int8 weights exactly."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config, **kwargs) -> None:
        if isinstance(base_layer, LoRAInt8Linear):
            raise ValueError(
                "Int8LoraLinear: the target already holds a qkernels LoRA adapter "
                "(LoRAInt8Linear); merge it first (merge()) or load the adapter with "
                "qkernels.load_adapters"
            )
        for flag in ("use_dora", "lora_bias"):
            if getattr(config, flag, False):
                raise ValueError(f"Int8LoraLinear: {flag}=True is not supported (plain LoRA only)")
        super().__init__(base_layer, adapter_name, config=config, **kwargs)
        self.merge_error: float | None = None
        self._int8_before_merge: tuple[torch.Tensor, torch.Tensor] | None = None

    def _get_in_out_features(self, module: nn.Module) -> tuple[int, int]:
        return module.in_features, module.out_features

    def _fused_adapter(self, kwargs: dict) -> str | None:
        """The one active adapter the fused op can compute this call with, or None."""
        if self.disable_adapters or self.merged or kwargs:
            return None
        active = [a for a in self.active_adapters if a in self.lora_A]
        if len(active) != 1 or active[0] in self.lora_variant:
            return None
        name = active[0]
        base = self.get_base_layer()
        dropout = self.lora_dropout[name]
        return (
            name
            if not base.static_act
            and base.act_bits == 8
            and (isinstance(dropout, nn.Identity) or not self.training)
            and self.lora_A[name].weight.dtype == torch.float32
            and self.lora_B[name].weight.dtype == torch.float32
            else None
        )

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.get_base_layer()
        name = self._fused_adapter(kwargs)
        if name is not None:
            fused = ops.lora_w8a8 if base.mode == "w8a8" else ops.lora_w8a16
            a, b = self.lora_A[name].weight, self.lora_B[name].weight
            out = fused(x, base.weight, base.weight_scale, base.bias, a, b, self.scaling[name])
            return apply_activation(out, base.activation)
        if base.activation == "none":
            return super().forward(x, *args, **kwargs)
        if kwargs.get("adapter_names") is not None:
            raise ValueError(
                "Int8LoraLinear: mixed-adapter batches (adapter_names) are not supported on a "
                "base with a fused activation"
            )
        return self._forward_before_activation(x)

    def _forward_before_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The adapters added to the base's pre-activation output, then the activation."""
        base = self.get_base_layer()
        if self.disable_adapters and self.merged:
            self.unmerge()
        result = base.pre_activation(x)
        if not (self.disable_adapters or self.merged):
            for name in self.active_adapters:
                if name not in self.lora_A:
                    continue
                xa = self._cast_input_dtype(x, self.lora_A[name].weight.dtype)
                term = self.lora_B[name](self.lora_A[name](self.lora_dropout[name](xa)))
                result = result + (term * self.scaling[name]).to(result.dtype)
        return apply_activation(result, base.activation)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        adapter_names = check_adapters_to_merge(self, adapter_names)
        adapter_names = [a for a in adapter_names if a in self.lora_A]
        if not adapter_names:
            return
        base = self.get_base_layer()
        if self._int8_before_merge is None:
            self._int8_before_merge = (base.int8_weight().clone(), base.weight_scale.clone())
        exact = base.int8_weight().float() * base.weight_scale.reshape(-1, 1)
        for name in adapter_names:
            exact = exact + self.get_delta_weight(name).float()
        if safe_merge and not torch.isfinite(exact).all():
            raise ValueError(f"Int8LoraLinear: merging {adapter_names} gives non-finite weights")
        q, scale, self.merge_error = requantize(exact)
        base.load_int8(q, scale, base.bias)
        self.merged_adapters.extend(adapter_names)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        base = self.get_base_layer()
        weight, scale = self._int8_before_merge
        base.load_int8(weight, scale, base.bias)
        self._int8_before_merge, self.merge_error = None, None
        self.merged_adapters.clear()

    def __repr__(self) -> str:
        return "qkernels." + super().__repr__()


def _with_int8_layers(create):
    """PEFT's dispatcher, given the Int8Linear -> Int8LoraLinear mapping first."""

    def _create_new_module(lora_config, adapter_name, target, **kwargs):
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        custom = getattr(lora_config, "_custom_modules", None) or {}
        if isinstance(base, Int8Linear) and Int8Linear not in custom:
            lora_config._register_custom_module({Int8Linear: Int8LoraLinear})
        return create(lora_config, adapter_name, target, **kwargs)

    _create_new_module.qkernels = True
    return _create_new_module


def register() -> None:
    """Make PEFT's LoRA take Int8Linear targets (idempotent)."""
    create = lora_model.LoraModel._create_new_module
    if not getattr(create, "qkernels", False):
        lora_model.LoraModel._create_new_module = staticmethod(_with_int8_layers(create))


register()
