"""FusedActivation: what stands where an activation module was fused into the GEMM
epilogue of the Int8Linear before it (qkernels.fusion)."""

from __future__ import annotations

import torch
from torch import nn

from qkernels._common import ACTIVATIONS

# Activation modules by (module, class name) -> the epilogue activation computing the same
# function. Matched exactly: a subclass may compute something else.
_KNOWN: dict[tuple[str, str], str] = {
    ("torch.nn.modules.activation", "ReLU"): "relu",
    ("torch.nn.modules.activation", "SiLU"): "silu",
    ("transformers.activations", "GELUActivation"): "gelu",  # erf form, either branch
    ("transformers.activations", "NewGELUActivation"): "gelu_tanh",
    ("transformers.activations", "GELUTanh"): "gelu_tanh",
    ("transformers.activations", "FastGELUActivation"): "gelu_tanh",  # same formula, refactored
    ("transformers.activations", "SiLUActivation"): "silu",
}


def activation_name(module: object) -> str | None:
    """The epilogue activation (qkernels._common.ACTIVATIONS) computing what `module`
    computes, or None when there is none (then nothing is fused)."""
    if type(module) is nn.GELU:
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(module.approximate)
    return _KNOWN.get((type(module).__module__, type(module).__name__))


class FusedActivation(nn.Module):
    """Passes x through: `activation` is applied by the epilogue of the sibling Int8Linear
    named `into`. Kept as a module (not removed) so that the model's own forward, which
    still calls it, is unchanged, and so that the saved plan rebuilds it."""

    def __init__(self, activation: str, into: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS or activation == "none":
            raise ValueError(
                f"FusedActivation: activation must be one of {ACTIVATIONS[1:]}, got {activation!r}"
            )
        self.activation = activation
        self.into = into

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def spec(self) -> dict:
        return {"activation": self.activation, "into": self.into}

    def extra_repr(self) -> str:
        return f"{self.activation}, applied in {self.into}'s epilogue"
