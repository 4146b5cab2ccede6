"""Swap float modules of any nn.Module / Hugging Face model for qkernels modules."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from qkernels._memory import trim_heap
from qkernels.fusion import connect_handoffs, unfuse_activations
from qkernels.fusion import fuse_activations as fuse_into_epilogues
from qkernels.fusion import fuse_norms as hand_off_norm_outputs
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
from qkernels.nn.int8_linear import is_linear_like
from qkernels.plan import untie_in_config

METHODS = ("w8a8", "w8a16", "qat", "lowrank", "lora")
LORA_PARAMS = ("lora_A", "lora_B")


def _peft_match(name: str, targets: str | Iterable[str]) -> bool:
    """PEFT's target_modules rule: a string is a regex on the full name; a list
    matches a name equal to an entry or ending in "." + entry."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """An fnmatch pattern matches the qualified name or any dotted suffix of it:
    "lm_head", "mlp.c_fc", "h.1.*" and "transformer.h.*.attn.*" all work."""
    parts = name.split(".")
    suffixes = [".".join(parts[i:]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(s, p) for p in patterns for s in suffixes)


def _within(name: str, patterns: Iterable[str]) -> bool:
    """The module or one of the modules holding it matches (as `_matches`)."""
    parts = name.split(".")
    return any(_matches(".".join(parts[:i]), patterns) for i in range(1, len(parts) + 1))


@dataclass
class SwapReport:
    method: str
    replaced: list[tuple[str, str, str]] = field(default_factory=list)  # name, from, to
    skipped: list[tuple[str, str]] = field(default_factory=list)  # name, reason
    fused: list[str] = field(default_factory=list)  # Int8Linears that took the activation
    norms: list[str] = field(default_factory=list)  # norms handing off their quantization

    def __str__(self) -> str:
        lines = [
            f"qkernels.swap({self.method}): {len(self.replaced)} replaced, "
            f"{len(self.skipped)} skipped"
            + (f", {len(self.fused)} activations fused" if self.fused else "")
            + (f", {len(self.norms)} norms quantize for the next GEMMs" if self.norms else "")
        ]
        lines += [f"  replaced {n}: {a} -> {b}" for n, a, b in self.replaced]
        lines += [f"  fused    {n}: its activation runs in the GEMM epilogue" for n in self.fused]
        lines += [f"  norm     {n}: hands its int8 output to the next GEMMs" for n in self.norms]
        lines += [f"  skipped  {n}: {why}" for n, why in self.skipped]
        return "\n".join(lines)


def _replacement(method: str, **opts) -> Callable[[nn.Module], nn.Module]:
    if method == "w8a8":  # the one int8 LSTM mode: w8a8
        return lambda m: (
            Int8LSTM.from_float(m)
            if isinstance(m, nn.LSTM)
            else Int8Linear.from_float(m, mode=method, **opts)
        )
    if method == "w8a16":
        return lambda m: Int8Linear.from_float(m, mode=method, **opts)
    if method == "qat":
        lstm_opts = {k: v for k, v in opts.items() if k == "weight_lsq"}
        return lambda m: (
            QATLSTM.from_float(m, **lstm_opts)
            if isinstance(m, nn.LSTM)
            else QATLinear.from_float(m, **opts)
        )
    if method == "lowrank":  # opts: rank=... or energy=...
        return lambda m: LowRankLinear.from_linear(m, **opts)
    if method == "lora":  # opts: r, alpha, dropout, use_rslora, base="w8a8" | "w8a16"
        base = opts.pop("base", "w8a8")
        if base not in ("w8a8", "w8a16"):
            raise ValueError(f"qkernels.swap: lora base must be 'w8a8' or 'w8a16', got {base!r}")
        return lambda m: (
            LoRAInt8Linear.from_int8(m, **opts)
            if type(m) is Int8Linear
            else LoRAInt8Linear.from_float(m, mode=base, **opts)
        )
    raise ValueError(f"qkernels.swap: method must be one of {METHODS}, got {method!r}")


def _replace_all(
    model: nn.Module,
    report: SwapReport,
    wanted: Callable[[nn.Module], bool],
    make: Callable[[nn.Module], nn.Module],
    skip_reason: Callable[[str], str | None] = lambda name: None,
) -> SwapReport:
    """The one replace walk of swap and convert: every wanted submodule (by qualified
    name, unless skip_reason names a reason) is replaced in place by make(module)."""
    # Collect first: replacing while iterating named_modules would walk the new modules.
    targets = [(n, m) for n, m in model.named_modules() if n and wanted(m)]
    for name, module in targets:
        reason = skip_reason(name)
        if reason:
            report.skipped.append((name, reason))
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = make(module)
        setattr(parent, child, new)
        report.replaced.append((name, type(module).__name__, type(new).__name__))
    connect_handoffs(model)  # a replaced Linear may have read a norm's handoff
    _record_plan(model)
    return report


def swap(
    model: nn.Module,
    method: str,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = ("lm_head",),
    target_modules: str | Iterable[str] | None = None,
    modules_to_save: Iterable[str] = (),
    embeddings: bool | None = False,
    fuse_activations: bool = True,
    fuse_norms: bool = False,
    output_layer: str | None = None,
    **opts,
) -> SwapReport:
    """Replace matching nn.Linear / GPT-2 Conv1D (and, for "w8a8" and "qat",
    nn.LSTM) modules of `model` in place.

    include / exclude are fnmatch patterns on qualified module names or their
    dotted suffixes (see `_matches`); exclude wins. Returns what was replaced and skipped.

    method="lora" (opts: r, alpha, dropout, use_rslora, base="w8a8"|"w8a16") puts a
    LoRAInt8Linear on every match and freezes everything else, as PEFT does. A match
    that is already an Int8Linear (a model loaded with QKernelsConfig: the float weights
    were never held) keeps its int8 weights and its mode; `base` applies to float ones.
    target_modules selects with PEFT's rule (a regex string on the full name, or names
    that equal or end with an entry), and the parameters of modules_to_save (fnmatch
    patterns, e.g. a classification head) stay trainable: as in PEFT, those modules and
    what they hold get no adapter, even where target_modules matches them.

    embeddings=True (int8 methods and LoRA, whose frozen base is int8) also turns every
    matching nn.Embedding into an Int8Embedding (for LoRA: every one not excluded and not
    in modules_to_save; target_modules name the adapters' Linears). A swapped embedding or
    output layer that was tied to the other keeps its own tensors (the other keeps the
    float weight), and the model's config says tie_word_embeddings=False so that a saved
    model is not re-tied on load. None (what `qkernels finetune --method lora` passes):
    True for "lora", whose frozen base is then int8 throughout (PEFT on fp32 keeps ~4x
    the bytes of every frozen table), but for an input table whose weight a float output
    layer shares (an int8 copy would be held beside it) and tables with max_norm or
    sparse gradients; False for the other methods.

    fuse_activations (int8 methods): where a Hugging Face block applies an activation
    right after a swapped Linear (qkernels.fusion.FUSABLE_BLOCKS), it runs in that
    Linear's GEMM epilogue instead.

    fuse_norms (w8a8, opt-in): LayerNorms and Llama-style RMSNorms quantize their output
    per token in the same pass and hand it to the dynamic w8a8 Linears reading it
    (qkernels.fusion.fuse_norms; bit-identical to each Linear quantizing on its own while
    nothing writes to the norm's output behind torch's version counter: `.data`, numpy
    and DLPack views). Off by default: its gain on a whole model is within the noise.

    output_layer ("w8a16" | "w8a8"): the model's output layer (Hugging Face's
    get_output_embeddings(), e.g. lm_head) becomes an Int8Linear of that mode with one
    scale per output row (vocabulary entry), whatever `exclude` says of it; an input table
    it was tied to keeps the float weight (or, with embeddings=True, its own int8 table)
    and the config unties them. For generation, where the float lm_head is read whole for
    every token.
    """
    make = _replacement(method, **opts)
    modules_to_save = list(modules_to_save)
    include = list(include) if include is not None else None
    exclude = list(exclude)
    if target_modules is not None and method != "lora":
        raise ValueError("qkernels.swap: target_modules is for method='lora'; use include")

    def wanted(m: nn.Module) -> bool:
        return (
            is_linear_like(m)
            or (method in ("w8a8", "qat") and type(m) is nn.LSTM)
            or (method == "lora" and type(m) is Int8Linear)
        )

    def skip_reason(name: str) -> str | None:
        if reason := _excluded(name, include, exclude):
            return reason
        # as PEFT: a module to save trains in full, so no adapter goes on it or inside it
        if method == "lora" and _within(name, modules_to_save):
            return "in modules_to_save"
        if target_modules is not None and not _peft_match(name, target_modules):
            return "not a target module"
        return None

    if method == "lora":  # the fused lora ops apply no activation: put the module back
        unfuse_activations(model, lambda name: skip_reason(name) is None)
    report = _replace_all(model, SwapReport(method), wanted, make, skip_reason)
    auto, shared_table = embeddings is None, None
    if auto:
        embeddings = method == "lora"
        shared_table = _table_shared_with_float_output(model)
    if embeddings:
        if method not in ("w8a8", "w8a16", "lora"):
            raise ValueError(
                f"qkernels.swap: embeddings=True needs an int8 method or lora, not {method!r}"
            )

        def embedding_skip(name: str) -> str | None:
            if method != "lora":
                return skip_reason(name)
            if _within(name, modules_to_save):  # a trained embedding stays float
                return "in modules_to_save"
            if auto:
                table = model.get_submodule(name)
                if table is shared_table:
                    return "weight shared with a float output layer"
                if not Int8Embedding.can_freeze(table):
                    return "max_norm or sparse"
            return _excluded(name, include, exclude)

        _replace_all(model, report, _is_table, Int8Embedding.from_float, embedding_skip)
    if output_layer is not None:
        _swap_output_layer(model, output_layer, report)
    if fuse_activations and method in ("w8a8", "w8a16"):
        report.fused = fuse_into_epilogues(model)
        _record_plan(model)
    if fuse_norms and method == "w8a8":
        report.norms = hand_off_norm_outputs(model)
        _record_plan(model)
    untie_in_config(model)
    if method == "lora":
        _freeze_all_but_adapters(model, modules_to_save)
    trim_heap()  # the replaced modules' float weights and the quantizer's temporaries
    return report


def _swap_output_layer(model: nn.Module, mode: str, report: SwapReport) -> None:
    """swap(..., output_layer=mode): the output layer as an Int8Linear of `mode`."""
    if mode not in ("w8a8", "w8a16"):
        raise ValueError(f"qkernels.swap: output_layer must be 'w8a16' or 'w8a8', got {mode!r}")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, Int8Linear):
        return  # swapped already (exclude did not name it)
    if head is None or not is_linear_like(head):
        raise ValueError(
            "qkernels.swap: output_layer needs a model whose get_output_embeddings() is a "
            f"Linear, got {type(head).__name__}"
        )
    name = next(n for n, m in model.named_modules() if m is head)
    parent_name, _, child = name.rpartition(".")
    setattr(
        model.get_submodule(parent_name) if parent_name else model,
        child,
        Int8Linear.from_float(head, mode=mode),
    )
    report.replaced.append((name, type(head).__name__, "Int8Linear"))
    _record_plan(model)


def _table_shared_with_float_output(model: nn.Module) -> nn.Module | None:
    """The input embedding whose weight a (float) output layer still shares, if any."""
    try:
        table, out = model.get_input_embeddings(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):  # not a Hugging Face model, or no tables
        return None
    shared = table is not None and getattr(out, "weight", None) is getattr(table, "weight", 0)
    return table if shared else None


def _is_table(module: nn.Module) -> bool:
    return type(module) is nn.Embedding


def _excluded(name: str, include: list[str] | None, exclude: list[str]) -> str | None:
    if _matches(name, exclude):
        return "excluded"
    if include is not None and not _matches(name, include):
        return "not included"
    return None


def _freeze_all_but_adapters(model: nn.Module, modules_to_save: list[str]) -> None:
    saved = {
        f"{name}.{p}" if name else p
        for name, m in model.named_modules()
        if name and _matches(name, modules_to_save)
        for p, _ in m.named_parameters()
    }
    for name, param in model.named_parameters():
        param.requires_grad_(name.rpartition(".")[2] in LORA_PARAMS or name in saved)


@dataclass(frozen=True)
class ParameterSummary:
    """Every value a model holds. PEFT's print_trainable_parameters counts parameters
    only; qkernels' int8 weights, their scales and an int8 layer's bias are buffers, so
    they are counted here too (int8 weights as their int8 values, unpacked)."""

    trainable: int  # parameters that train
    frozen: int  # float parameters that do not
    int8: int  # int8 weight values (frozen buffers)
    buffers: int  # every other buffer: scales, int8 layers' biases, statistics

    @property
    def total(self) -> int:
        return self.trainable + self.frozen + self.int8 + self.buffers

    def __str__(self) -> str:
        return (
            f"trainable params: {self.trainable:,} || all params: {self.total:,} || "
            f"trainable%: {100 * self.trainable / max(self.total, 1):.4f} (frozen float "
            f"{self.frozen:,}, int8 {self.int8:,}, other buffers {self.buffers:,})"
        )


def parameter_summary(model: nn.Module) -> ParameterSummary:
    """What trains and what the model holds besides (a tied tensor counts once)."""
    params = dict(model.named_parameters())
    names = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    frozen = sum(p.numel() for p in params.values() if not p.requires_grad)
    int8 = buffers = 0
    for key, t in model.state_dict().items():  # unpacks the CPU layouts
        if key in names:
            continue
        if t.dtype == torch.int8:
            int8 += t.numel()
        else:
            buffers += t.numel()
    return ParameterSummary(trainable, frozen, int8, buffers)


def _record_plan(model: nn.Module) -> None:
    """Hugging Face models carry the swap plan as their quantization_config (qkernels.hf),
    so that a plain save_pretrained writes the qkernels format."""
    if hasattr(model, "config") and hasattr(model, "save_pretrained"):
        from qkernels import hf

        hf.attach(model)


def convert(model: nn.Module, lowrank_to_int8: bool = False) -> SwapReport:
    """Replace every QAT module of `model` by the int8 inference module it trained
    for (QATLinear -> Int8Linear, QATLSTM -> Int8LSTM, via `to_int8()`), in place;
    with lowrank_to_int8, LowRankLinear -> Int8LowRankLinear (two int8 GEMMs) too."""
    kinds = (QATLinear, QATLSTM, LowRankLinear) if lowrank_to_int8 else (QATLinear, QATLSTM)

    def make(module: nn.Module) -> nn.Module:
        if isinstance(module, LowRankLinear):
            return Int8LowRankLinear.from_lowrank(module)
        return module.to_int8()

    return _replace_all(model, SwapReport("convert"), lambda m: isinstance(m, kinds), make)
