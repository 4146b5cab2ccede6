"""Fusions around the int8 GEMMs.

Activation fusion: in Hugging Face blocks whose forward is known to be
`act(linear(x))` (BERT's intermediate layer, GPT-2's MLP, Llama's gated MLP on its gate
projection), the activation moves into the int8 GEMM's epilogue (linear_w8a8_act /
linear_w8a16_act): no separate pass over the [tokens, intermediate] tensor. The block's
activation module becomes a FusedActivation (identity). Anywhere else, nothing changes.

Norm fusion (`fuse_norms`): LayerNorms and Llama-style RMSNorms quantize their output per
token in the same pass and hand the int8 rows to the dynamic w8a8 Int8Linears that read
that output (qkernels.nn.norm_handoff); the results are bit-identical to each Linear
quantizing on its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn

from qkernels.nn import Int8Linear
from qkernels.nn.fused_activation import FusedActivation, activation_name
from qkernels.nn.norm_handoff import (
    LLAMA_RMS_NORMS,
    HandoffLayerNorm,
    HandoffRMSNorm,
    QuantizedHandoff,
)

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


def _handoff_norm(module: nn.Module) -> nn.Module | None:
    """The handoff version of a norm module (sharing its parameters), or None where it
    is not a norm we know."""
    if type(module) is nn.LayerNorm and len(module.normalized_shape) == 1:
        return HandoffLayerNorm.from_layer_norm(module)
    if type(module).__name__ in LLAMA_RMS_NORMS and type(module).__module__.startswith(
        "transformers."
    ):
        return HandoffRMSNorm.from_rms_norm(module)
    return None


def _takes_norm_outputs(linear: nn.Module | dict) -> bool:
    """An Int8Linear (or its plan entry) that quantizes its input per token on the fly and
    applies no epilogue activation: what a norm's handoff can replace."""
    if isinstance(linear, nn.Module):
        if type(linear) is not Int8Linear:
            return False
        linear = {"type": "Int8Linear", **linear.spec()}
    return (
        linear.get("type") == "Int8Linear"
        and linear.get("mode") == "w8a8"
        and not linear.get("static_act")
        and linear.get("activation", "none") == "none"
    )


def connect_handoffs(model: nn.Module) -> QuantizedHandoff | None:
    """Give the handoff norms of `model` and the Int8Linears that can read their output
    one QuantizedHandoff, at the activation bits most of those Linears use (the others
    keep quantizing on their own). Returns it; None where the model has no handoff norm
    or no such Linear (then the norms run their plain forward)."""
    norms = [m for m in model.modules() if isinstance(m, HandoffLayerNorm | HandoffRMSNorm)]
    takers = [m for m in model.modules() if _takes_norm_outputs(m)]
    handoff = None
    if norms and takers:
        all_bits = [m.act_bits for m in takers]
        handoff = QuantizedHandoff(max(set(all_bits), key=all_bits.count))
    for m in norms:
        m.handoff = handoff
    for m in takers:
        m.handoff = handoff if handoff is not None and m.act_bits == handoff.bits else None
    return handoff


def fuse_norms(model: nn.Module) -> list[str]:
    """Make every LayerNorm (over the last dim) and Llama-style RMSNorm of `model`, when
    it has dynamic w8a8 Int8Linears without an epilogue activation, quantize its output
    for those Linears (qkernels.nn.norm_handoff), in place. Returns the names of the
    norms replaced."""
    if not any(_takes_norm_outputs(m) for m in model.modules()):
        return []
    fused = []
    for name, module in list(model.named_modules()):
        new = _handoff_norm(module) if name else None
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        fused.append(name)
    connect_handoffs(model)
    return fused


def plan_norms(model: nn.Module, plan: dict[str, dict]) -> None:
    """fuse_norms on a swap plan (quantize-on-load: the model is still float, on meta):
    every norm it would replace gets a plan entry, when the plan holds a Linear that can
    read its output. connect_handoffs wires them once the weights are loaded."""
    if not any(_takes_norm_outputs(spec) for spec in plan.values()):
        return
    for name, module in model.named_modules():
        new = _handoff_norm(module) if name and name not in plan else None
        if new is not None:
            plan[name] = {"type": type(new).__name__, **new.spec()}
