"""Hugging Face native: qkernels as a transformers quantization method ("qkernels").

    config = QKernelsConfig("w8a8")
    model = AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=config)
    model.save_pretrained(out)                      # int8 safetensors + quantization_config
    model = AutoModelForCausalLM.from_pretrained(out)   # the same int8 model, bit for bit

The on-disk format (DESIGN.md, "On disk"): `config.json` holds `quantization_config` =
{"quant_method": "qkernels", "modules": <swap plan>, ...}; the safetensors hold the model's
state_dict with every int8 matrix flattened to 1-D. The flattening is what makes a float
model refuse the directory: without qkernels, transformers warns that it does not know the
quantization method "qkernels", skips it, and then stops with a size-mismatch error on the
first int8 weight, where an [N, K] int8 matrix would have loaded silently as float.

Quantize on load: the model is built on the meta device, each nn.Linear / GPT-2 Conv1D
not in `modules_to_not_convert` becomes an empty Int8Linear, and each float weight is
quantized per output channel as the loader reads it, so the fp32 model never exists whole
(and the float pages it read from the file are released once quantized: `_memory`).

This module imports transformers; `import qkernels` imports it (registering the method)
as soon as transformers' quantizer registry is imported (`qkernels/_hf_hook.py`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.quantizers.auto import (
    AUTO_QUANTIZER_MAPPING,
    register_quantization_config,
    register_quantizer,
)
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from qkernels._memory import release_file_pages, trim_heap
from qkernels.fusion import connect_handoffs, plan_fusions, plan_norms
from qkernels.nn._packed import PackedWeights
from qkernels.nn.int8_embedding import Int8Embedding
from qkernels.nn.int8_linear import Int8Linear, check_act_bits, is_linear_like
from qkernels.plan import (
    FLOAT_CODES,
    SavedTensor,
    build_planned,
    check_saved,
    locate,
    model_class,
    read_header,
    swap_plan,
    untie_in_config,
)

METHOD = "qkernels"
ON_LOAD_METHODS = ("w8a8", "w8a16")
OUTPUT_LAYER_MODES = ("w8a16", "w8a8", None)
DEFAULT_FLOAT_HEADS = ("lm_head", "classifier", "score")
# Modules that replace a Linear but hold no `weight` (low-rank factors): the format adds an
# empty int8 `<name>.weight` for each, so that a float model cannot load around the
# missing weight (transformers would initialise it at random, with only a warning).
NO_WEIGHT = ("LowRankLinear", "Int8LowRankLinear")
SENTINEL = SavedTensor("I8", [0])
# Plan types holding trainable parameters (Trainer's is_qat_trainable).
TRAINABLE = ("LoRAInt8Linear", "QATLinear", "QATLSTM", "LowRankLinear")


class QKernelsConfig(QuantizationConfigMixin):
    """`method`: what quantize-on-load does to each Linear ("w8a8" | "w8a16").
    `act_bits` (w8a8): per-token activation bits, 8 or fewer (see Int8Linear).
    `fuse_activations`: activations right after a quantized Linear run in its GEMM
    epilogue (qkernels.fusion), as qkernels.swap does.
    `fuse_norms` (w8a8, opt-in): norms quantize their output for the Linears reading it
    (qkernels.fusion.fuse_norms), as qkernels.swap(..., fuse_norms=True) does.
    `embeddings`: nn.Embedding tables load as Int8Embedding (per-row int8; the float
    table is never held), as qkernels.swap(..., embeddings=True); an input embedding
    tied to the output layer (the saved file holds that tensor once, for both) loads
    float and, when `output_layer` quantizes the head, becomes an Int8Embedding of its
    own after loading.
    `output_layer` ("w8a16" | "w8a8" | None): the output layer of a generating model
    (get_output_embeddings(), e.g. lm_head) as an Int8Linear of that mode with one scale
    per vocabulary row, as qkernels.swap(..., output_layer=...); None keeps it float, as
    does naming it in `modules_to_not_convert`. A tied output layer is quantized from the
    loaded table (the checkpoint holds it once) and the config unties the two. Default
    "w8a16": measured on a GPT-2 trained here (examples/int8_output_layer.py) it moves
    perplexity by 0.02% and leaves top-1 agreement with fp32 unchanged, while the float
    head is the largest single read of a decode step (DESIGN.md, "Int8 output layer").
    `modules_to_not_convert`: module names (or name suffixes) left in float; None: the
    task heads (lm_head, classifier, score) and transformers' default (the output
    embeddings, tied and last modules). `modules`: the
    swap plan of a saved model (filled in when a model is quantized or saved)."""

    def __init__(
        self,
        method: str = "w8a8",
        act_bits: int = 8,
        fuse_activations: bool = True,
        fuse_norms: bool = False,
        embeddings: bool = False,
        modules_to_not_convert: list[str] | None = None,
        modules: dict | None = None,
        output_layer: str | None = "w8a16",
        **kwargs,
    ) -> None:
        kwargs.pop("quant_method", None)
        if kwargs:
            raise ValueError(f"QKernelsConfig: unknown arguments {sorted(kwargs)}")
        if method not in ON_LOAD_METHODS:
            raise ValueError(
                f"QKernelsConfig: method must be one of {ON_LOAD_METHODS} (quantize on load), "
                f"got {method!r}; QAT, LoRA and low-rank models come from `qkernels finetune`"
            )
        check_act_bits("QKernelsConfig", act_bits, method)
        if output_layer not in OUTPUT_LAYER_MODES:
            raise ValueError(
                f"QKernelsConfig: output_layer must be one of {OUTPUT_LAYER_MODES}, got "
                f"{output_layer!r}"
            )
        for flag, value in (
            ("fuse_activations", fuse_activations),
            ("fuse_norms", fuse_norms),
            ("embeddings", embeddings),
        ):
            if not isinstance(value, bool):  # a config.json "false" string is truthy
                raise ValueError(f"QKernelsConfig: {flag} must be true or false, got {value!r}")
        if modules_to_not_convert is not None and not (
            isinstance(modules_to_not_convert, list | tuple)
            and all(isinstance(m, str) for m in modules_to_not_convert)
        ):
            raise ValueError(
                "QKernelsConfig: modules_to_not_convert must be a list of module names, got "
                f"{modules_to_not_convert!r}"
            )
        if modules is not None and not isinstance(modules, dict):
            raise ValueError(
                f"QKernelsConfig: modules must be an object (the swap plan), got "
                f"{type(modules).__name__}"
            )
        self.quant_method = METHOD
        self.method = method
        self.act_bits = act_bits
        self.fuse_activations = fuse_activations
        self.fuse_norms = fuse_norms
        self.embeddings = embeddings
        self.output_layer = output_layer
        self.modules_to_not_convert = (
            None if modules_to_not_convert is None else list(modules_to_not_convert)
        )
        self.modules = dict(modules or {})


def _embeddings_on_load(model: nn.Module, skip: list[str]) -> dict[str, dict]:
    """Plan entries turning the model's nn.Embedding tables into Int8Embedding, except an
    input embedding tied to the output layer (the saved file holds that tensor once, for
    both) and those Int8Embedding refuses (max_norm, sparse gradients)."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    tied = None
    if getattr(model.config, "tie_word_embeddings", False) and model.get_output_embeddings():
        tied = model.get_input_embeddings()
    plan = {}
    for name, m in model.named_modules():
        if type(m) is not nn.Embedding or m is tied or not Int8Embedding.can_freeze(m):
            continue
        if should_convert_module(name, skip):
            plan[name] = _embedding_spec(m)
    return plan


def _embedding_spec(table: nn.Embedding) -> dict:
    return {
        "type": "Int8Embedding",
        "num_embeddings": table.num_embeddings,
        "embedding_dim": table.embedding_dim,
        "padding_idx": table.padding_idx,
    }


def _int8_linear_spec(module: nn.Module, mode: str, act_bits: int) -> dict:
    """The plan entry of an Int8Linear replacing `module` (nn.Linear or GPT-2 Conv1D)."""
    conv1d = not isinstance(module, nn.Linear)
    k, n = module.weight.shape if conv1d else module.weight.shape[::-1]
    return {
        "type": "Int8Linear",
        "in_features": int(k),
        "out_features": int(n),
        "bias": module.bias is not None,
        "mode": mode,
        "static_act": False,
        "act_bits": act_bits,
    }


def _int8_matrices(model: nn.Module, plan: dict) -> dict[str, torch.Size]:
    """state_dict name -> shape of every int8 matrix of the planned modules."""
    shapes = {}
    for name in plan:
        for key, t in model.get_submodule(name).state_dict().items():
            if t.dtype == torch.int8 and t.dim() >= 2:
                shapes[f"{name}.{key}"] = t.shape
    return shapes


class QKernelsHfQuantizer(HfQuantizer):
    """transformers' hooks around loading: put empty qkernels modules in the meta model,
    quantize float weights as they are read (or take the saved int8 ones), then re-lay
    out the int8 weights for the CPU kernels."""

    requires_calibration = False
    quantization_config: QKernelsConfig

    def __init__(self, quantization_config: QKernelsConfig, **kwargs) -> None:
        super().__init__(quantization_config, **kwargs)
        self.matrices: dict[str, torch.Size] = {}  # int8 matrices of the planned modules
        self.sentinels: list[str] = []  # NO_WEIGHT modules being loaded
        self.transposed: set[str] = set()  # Conv1D weights, stored [in, out]
        self.output_after_load: str | None = None  # a tied output layer to quantize

    def _plan_on_load(self, model: nn.Module) -> dict:
        from transformers.quantizers.quantizers_utils import should_convert_module

        cfg = self.quantization_config
        skip = self.get_modules_to_not_convert(
            model,
            cfg.modules_to_not_convert,
            getattr(model, "_keep_in_fp32_modules", None),
            add_default_skips=cfg.modules_to_not_convert is None,
        )
        if cfg.modules_to_not_convert is None:
            # transformers' default names the last parameter, which may be a bias
            # ("classifier.bias"); task heads stay float as in qkernels.swap.
            skip = [k.removesuffix(".bias") for k in skip] + list(DEFAULT_FLOAT_HEADS)
        plan = {}
        for name, module in model.named_modules():
            if name and is_linear_like(module) and should_convert_module(name, skip):
                if not isinstance(module, nn.Linear):
                    self.transposed.add(f"{name}.weight")
                plan[name] = _int8_linear_spec(module, cfg.method, cfg.act_bits)
        if cfg.embeddings:
            plan.update(_embeddings_on_load(model, skip))
        self.output_after_load = None
        if (head := self._output_layer_on_load(model)) is not None:
            name, module, tied = head
            if tied:  # quantized from the loaded table (_process_model_after_weight_loading)
                self.output_after_load = name
            else:
                plan[name] = _int8_linear_spec(module, cfg.output_layer, 8)
        if cfg.fuse_activations:
            plan_fusions(model, plan)
        if cfg.fuse_norms:
            plan_norms(model, plan)
        return plan

    def _output_layer_on_load(self, model: nn.Module) -> tuple[str, nn.Module, bool] | None:
        """(name, module, tied) of the output layer that `output_layer` quantizes, or None
        (no such option, no Linear output layer, or the user keeps it float by name)."""
        from transformers.quantizers.quantizers_utils import should_convert_module

        cfg = self.quantization_config
        if cfg.output_layer is None or not hasattr(model, "get_output_embeddings"):
            return None
        head = model.get_output_embeddings()
        if head is None or not is_linear_like(head):
            return None
        name = next(n for n, m in model.named_modules() if m is head)
        if not should_convert_module(name, cfg.modules_to_not_convert or []):
            return None
        text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
        tied = getattr(text or model.config, "tie_word_embeddings", False)
        return name, head, bool(tied)

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        cfg = self.quantization_config
        plan = cfg.modules if self.pre_quantized else self._plan_on_load(model)
        header = _checkpoint_header(checkpoint_files)
        where = "the checkpoint" if not checkpoint_files else ", ".join(map(str, checkpoint_files))
        config_file = (
            f"{Path(checkpoint_files[0]).parent}/config.json" if checkpoint_files else "config.json"
        )
        if not isinstance(plan, dict):
            raise ValueError(
                f"qkernels: quantization_config 'modules' must be an object, got {plan!r}"
            )
        built = []
        for name, spec in plan.items():
            owner, child, _ = locate(model, name, config_file)
            with torch.device("meta"):
                new = build_planned(name, spec, config_file)
            if header is not None:
                if self.pre_quantized:
                    added = {"weight": SENTINEL} if spec.get("type") in NO_WEIGHT else None
                    check_saved(name, new, header, where, flattened=True, added=added)
                else:
                    self._check_float_source(model, name, new, header, where)
            built.append((owner, child, new))
        for owner, child, new in built:
            setattr(owner, child, new)
        cfg.modules = plan
        self.matrices = _int8_matrices(model, plan)
        self.sentinels = [name for name, spec in plan.items() if spec.get("type") in NO_WEIGHT]
        for name in self.sentinels:  # expected while loading, dropped after
            model.get_submodule(name).register_buffer(
                "weight", torch.empty(0, dtype=torch.int8, device="meta")
            )
        return model

    def _check_float_source(
        self, model: nn.Module, name: str, module: nn.Module, header: dict, where: str
    ) -> None:
        """Quantize on load: the float weight (and bias) each planned module is made from
        is in the checkpoint, floating point and of the float layer's shape (a missing
        one would leave the module's int8 storage uninitialised)."""
        for key, t in module.state_dict().items():
            if key.endswith("scale"):
                continue  # made from the float weight as it loads
            full = f"{name}.{key}"
            got = _saved(header, full, getattr(model, "base_model_prefix", ""))
            shape = list(t.shape)[::-1] if full in self.transposed else list(t.shape)
            if got is None:
                raise ValueError(f"qkernels: {where} holds no {full!r} to quantize")
            if got.dtype not in FLOAT_CODES or got.shape != shape:
                raise ValueError(
                    f"qkernels: {where}: {full!r} must be floating point of shape {shape} to "
                    f"quantize, got {got.dtype} {got.shape}"
                )

    def param_needs_quantization(self, model, param_name: str, **kwargs) -> bool:
        # Pre-quantized: the flattened int8 matrices (so the loader skips its shape check;
        # they take their shape after loading). Otherwise: the float weights to quantize.
        return param_name in self.matrices

    def get_quantize_ops(self):
        return _quantize_op(self)

    def _process_model_after_weight_loading(self, model, **kwargs):
        for name in self.sentinels:
            del model.get_submodule(name)._buffers["weight"]
        for key, shape in self.matrices.items():  # saved flattened: their shape back
            owner, _, buffer = key.rpartition(".")
            module = model.get_submodule(owner)
            got = module._buffers[buffer]
            if got.dtype != torch.int8 or got.numel() != shape.numel() or got.is_meta:
                raise ValueError(
                    f"qkernels: {key} must be int8 with {shape.numel()} elements (saved "
                    f"flattened from {list(shape)}), got {got.dtype} {list(got.shape)}"
                )
            module._buffers[buffer] = got.reshape(shape)
        for name in self.quantization_config.modules:
            for sub in model.get_submodule(name).modules():
                if isinstance(sub, PackedWeights):
                    sub._after_external_load()
        if self.output_after_load is not None:
            self._quantize_tied_output_layer(model, self.output_after_load)
        connect_handoffs(model)
        trim_heap()  # the loader's and the re-layout's temporaries
        return model

    def _quantize_tied_output_layer(self, model: nn.Module, name: str) -> None:
        """The tied output layer, now holding the loaded table, as an Int8Linear; the
        input embedding keeps the float table (with `embeddings`, becomes an
        Int8Embedding of its own) and the config unties the two, as after
        swap(..., output_layer=..., embeddings=...)."""
        cfg = self.quantization_config
        owner, child, _ = locate(model, name, "config.json")
        head = getattr(owner, child)
        cfg.modules[name] = _int8_linear_spec(head, cfg.output_layer, 8)
        setattr(owner, child, Int8Linear.from_float(head, mode=cfg.output_layer))
        table = model.get_input_embeddings()
        if cfg.embeddings and type(table) is nn.Embedding and Int8Embedding.can_freeze(table):
            table_name = next(n for n, m in model.named_modules() if m is table)
            cfg.modules[table_name] = _embedding_spec(table)
            owner, child, _ = locate(model, table_name, "config.json")
            setattr(owner, child, Int8Embedding.from_float(table))
        untie_in_config(model)

    def get_state_dict_and_metadata(self, model):
        plan = self.quantization_config.modules
        state = model.state_dict()
        for key in _int8_matrices(model, plan):
            state[key] = state[key].reshape(-1)
        for name, spec in plan.items():
            if spec.get("type") in NO_WEIGHT:
                state[f"{name}.weight"] = torch.empty(0, dtype=torch.int8)
        return state, {}

    def is_serializable(self, safe_serialization=None) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return True

    @property
    def is_compileable(self) -> bool:
        """Every qkernels op has a fake kernel and compiles as one op (fullgraph; Triton
        launches on CUDA): generate() with a static cache may compile the forward."""
        return True

    @property
    def is_qat_trainable(self) -> bool:
        """What transformers' Trainer asks of a quantized model that is not a PEFT model:
        True where the plan holds modules with trainable parameters (LoRA adapters, QAT
        and low-rank layers); a purely int8 model stays refused, as every such model is."""
        return any(
            spec.get("type") in TRAINABLE for spec in self.quantization_config.modules.values()
        )


def _checkpoint_header(files: list[str] | None) -> dict[str, SavedTensor] | None:
    """The tensors of a from_pretrained checkpoint (None for a state_dict passed in);
    a pickle checkpoint is refused, as everywhere in qkernels."""
    if not files:
        return None
    header = {}
    for file in map(Path, files):
        if file.suffix != ".safetensors":
            raise ValueError(
                f"qkernels: {file} is not safetensors; qkernels loads no pickle files. Convert "
                "it first: load it with transformers and save_pretrained(dir, "
                "safe_serialization=True) where you trust the file"
            )
        header.update(read_header(file))
    return header


def _saved(header: dict[str, SavedTensor], key: str, prefix: str) -> SavedTensor | None:
    """The saved tensor of model key `key`: as is, or with the base model's prefix added
    or dropped, as transformers maps a base model's checkpoint onto a task model."""
    if key in header or not prefix:
        return header.get(key)
    if key.startswith(prefix + "."):
        return header.get(key[len(prefix) + 1 :])
    return header.get(f"{prefix}.{key}")


def _quantize_op(quantizer: QKernelsHfQuantizer):
    """The loader's op for one float weight: per-output-channel int8 and its scale."""
    from transformers.core_model_loading import ConversionOps

    from qkernels import ops

    class QuantizeOnLoad(ConversionOps):
        def convert(self, input_dict, full_layer_name=None, **kwargs):
            (value,) = input_dict.values()
            w = (value[0] if isinstance(value, list) else value).detach()
            if full_layer_name in quantizer.transposed:
                w = w.t()
            q, scale = ops.quantize_rowwise(w.float().contiguous())
            release_file_pages(w)  # read once: its float pages need not stay resident
            prefix = full_layer_name.removesuffix("weight")
            return {full_layer_name: q, prefix + "weight_scale": scale}

    return QuantizeOnLoad()


def attach(model: nn.Module) -> None:
    """Record the model's swap plan as its quantization_config (and the quantizer that
    saves it), so that `save_pretrained` writes the qkernels format; a model without
    qkernels modules loses a qkernels quantization_config it may have had."""
    plan = swap_plan(model)
    if getattr(model.config, "qkernels", None) is not None:
        del model.config.qkernels  # the format before quantization_config
    if not plan:
        if getattr(model, "hf_quantizer", None) is not None and isinstance(
            model.hf_quantizer, QKernelsHfQuantizer
        ):
            del model.hf_quantizer
            model.config.quantization_config = None
            del model.config.quantization_config
            model.is_quantized = False
        return
    modes = {spec.get("mode") for spec in plan.values()} & set(ON_LOAD_METHODS)
    config = QKernelsConfig(method=modes.pop() if len(modes) == 1 else "w8a8", modules=plan)
    model.config.quantization_config = config
    model.hf_quantizer = QKernelsHfQuantizer(config, pre_quantized=True)
    model.is_quantized = True
    model.quantization_method = METHOD


def load(path: Path, config: dict) -> nn.Module:
    """A qkernels-format directory (`config`: its config.json) through from_pretrained."""
    cls = model_class(config.get("architectures"), path)
    return cls.from_pretrained(path).eval()


def register() -> None:
    """Make "qkernels" a transformers quantization method (idempotent)."""
    if METHOD not in AUTO_QUANTIZER_MAPPING:
        register_quantization_config(METHOD)(QKernelsConfig)
        register_quantizer(METHOD)(QKernelsHfQuantizer)


register()
