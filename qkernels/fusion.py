"""Activation fusion: in Hugging Face blocks whose forward is known to be
`act(linear(x))` (BERT's intermediate layer, GPT-2's MLP, Llama's gated MLP on its gate
projection), the activation moves into the int8 GEMM's epilogue (linear_w8a8_act /
linear_w8a16_act): no separate pass over the [tokens, intermediate] tensor. The block's
activation module becomes a FusedActivation (identity). Anywhere else, nothing changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn

from qkernels.nn import Int8Linear
from qkernels.nn.fused_activation import FusedActivation, activation_name

# transformers block class -> (its Linear, the activation applied to that Linear's output
# and to nothing else). Read from the forwards of transformers 5.x; matched by class name
# and only for classes defined in transformers.
FUSABLE_BLOCKS: dict[str, tuple[str, str]] = {
    "BertIntermediate": ("dense", "intermediate_act_fn"),
    "RobertaIntermediate": ("dense", "intermediate_act_fn"),
    "XLMRobertaIntermediate": ("dense", "intermediate_act_fn"),
    "ElectraIntermediate": ("dense", "intermediate_act_fn"),
    "GPT2MLP": ("c_fc", "act"),
    "LlamaMLP": ("gate_proj", "act_fn"),  # down(act(gate(x)) * up(x))
    "MistralMLP": ("gate_proj", "act_fn"),
    "Qwen2MLP": ("gate_proj", "act_fn"),
}


def fusion_sites(model: nn.Module) -> Iterator[tuple[str, str, str, str]]:
    """(block name, Linear attribute, activation attribute, activation) of every block
    of `model` whose activation can move into its Linear's epilogue."""
    for name, block in model.named_modules():
        attrs = FUSABLE_BLOCKS.get(type(block).__name__)
        if attrs is None or not type(block).__module__.startswith("transformers."):
            continue
        linear_attr, act_attr = attrs
        act = activation_name(getattr(block, act_attr, None))
        if act is not None and hasattr(block, linear_attr):
            yield name, linear_attr, act_attr, act


def _join(block: str, attr: str) -> str:
    return f"{block}.{attr}" if block else attr


def fuse_activations(model: nn.Module) -> list[str]:
    """Fuse every fusable activation of `model` whose Linear is already an Int8Linear
    without one, in place; returns the names of the Linears that took an activation."""
    fused = []
    for block_name, linear_attr, act_attr, act in list(fusion_sites(model)):
        block = model.get_submodule(block_name) if block_name else model
        linear = getattr(block, linear_attr)
        if type(linear) is not Int8Linear or linear.activation != "none":
            continue
        linear.activation = act
        setattr(block, act_attr, FusedActivation(act, into=linear_attr))
        fused.append(_join(block_name, linear_attr))
    return fused


# The torch module computing each epilogue activation: what unfusing puts back.
_TORCH_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
}


def unfuse_activations(model: nn.Module, which: Callable[[str], bool]) -> list[str]:
    """Undo the fusion of every fused Int8Linear whose name `which` accepts (before it is
    replaced by a module without an epilogue activation, e.g. a LoRA base): its block
    gets a torch module computing the activation back. Returns those Linears' names."""
    undone = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, FusedActivation):
            continue
        block_name, _, attr = name.rpartition(".")
        linear_name = _join(block_name, module.into)
        if not which(linear_name):
            continue
        block = model.get_submodule(block_name) if block_name else model
        getattr(block, module.into).activation = "none"
        setattr(block, attr, _TORCH_MODULES[module.activation]())
        undone.append(linear_name)
    return undone


def plan_fusions(model: nn.Module, plan: dict[str, dict]) -> None:
    """The same on a swap plan (quantize-on-load: the model is still float, on meta):
    each fusable Linear planned as an Int8Linear gets the activation in its spec, and
    its block's activation module a FusedActivation entry."""
    for block_name, linear_attr, act_attr, act in list(fusion_sites(model)):
        spec = plan.get(_join(block_name, linear_attr))
        if spec is None or spec.get("type") != "Int8Linear":
            continue
        spec["activation"] = act
        plan[_join(block_name, act_attr)] = {
            "type": "FusedActivation",
            **FusedActivation(act, into=linear_attr).spec(),
        }
