"""The int8 CPU peers of the model suite (`qkernels bench --suite model --peers`): what
people deploy a Hugging Face encoder on a CPU with instead of qkernels.

- ONNX Runtime dynamic int8 on its best graph: the TorchScript exporter, then the
  transformer optimizer's fusions (Attention, EmbedLayerNormalization,
  SkipLayerNormalization, BiasGelu), then `quantize_dynamic` QInt8 (its defaults).
- PyTorch's native int8: PT2E static quantization with the X86 Inductor quantizer
  (torchao.quantization.pt2e), calibrated on other paragraphs, under `torch.compile`
  (static shapes) with freezing, so every Linear is a oneDNN int8 kernel with fused
  post-ops; and the same quantizer's dynamic variant (per-tensor activation scales).
- torchao's int8 dynamic activation + int8 weight under `torch.compile`.

Each peer is built for one input shape (PT2E exports a static graph) and called like the
Hugging Face model (`peer(**inputs)`, first output = last hidden state). A peer whose
packages are missing or which fails to build is reported with the reason, never faked.
The packages live in the `peers` extra (`pip install -e .[peers]`).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ORT_INT8 = "onnxruntime int8 fused"
PT2E_INT8 = "pt2e int8 compiled"
PT2E_DYNAMIC = "pt2e int8 dynamic compiled"
TORCHAO_INT8 = "torchao int8 dynamic compiled"
PEERS = (ORT_INT8, PT2E_INT8, PT2E_DYNAMIC, TORCHAO_INT8)

Peer = Callable[..., tuple]


class _OrtModel:
    """An onnxruntime session called like the Hugging Face model it was exported from."""

    def __init__(self, path: Path, names: list[str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same threads as torch
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = names

    def __call__(self, **inputs: torch.Tensor) -> tuple[torch.Tensor]:
        feed = {n: inputs[n].numpy() for n in self.names}
        return (torch.from_numpy(self.session.run(None, feed)[0]),)


class _Positional(nn.Module):
    """The TorchScript exporter takes positional inputs; Hugging Face forwards take
    keywords (passing them positionally would hit other parameters)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, args, strict=True)))[0]


def onnxruntime_int8(model: nn.Module, inputs: dict, workdir: Path) -> Peer:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    names = list(inputs)
    # Eager attention: the optimizer's Attention fusion matches its pattern, not SDPA's.
    eager = copy.deepcopy(model).eval()
    eager.config._attn_implementation = "eager"
    exported, fused, quantized = (workdir / f for f in ("m.onnx", "fused.onnx", "int8.onnx"))
    with torch.no_grad():
        torch.onnx.export(
            _Positional(eager, names), tuple(inputs[n] for n in names), str(exported),
            input_names=names, output_names=["last_hidden_state"], opset_version=17,
            dynamo=False,
        )  # fmt: skip
    cfg = model.config
    optimize_model(
        str(exported),
        model_type=cfg.model_type if cfg.model_type in ("bert", "gpt2") else "bert",
        num_heads=cfg.num_attention_heads,
        hidden_size=cfg.hidden_size,
    ).save_model_to_file(str(fused))
    # DefaultTensorType: the fused contrib ops defeat the quantizer's shape inference.
    quantize_dynamic(
        str(fused), str(quantized), weight_type=QuantType.QInt8,
        extra_options={"DefaultTensorType": 1},
    )  # fmt: skip
    return _OrtModel(quantized, names)


class _Frozen:
    """A PT2E model compiled with Inductor's freezing on, called with it on: should dynamo
    ever recompile it (the model suite refuses a peer that does while timed), the new
    graph is frozen too, as PyTorch's recipe (`TORCHINDUCTOR_FREEZING=1`) has it."""

    def __init__(self, compiled: Callable) -> None:
        self.compiled = compiled

    def __call__(self, **inputs: torch.Tensor):
        with torch._inductor.config.patch(freezing=True):
            return self.compiled(**inputs)


def pt2e_int8(
    model: nn.Module, inputs: dict, calibration: list[dict], dynamic: bool = False
) -> Peer:
    """PyTorch's documented X86 recipe ("PyTorch 2 Export Quantization with X86 Backend
    through Inductor"): export, X86InductorQuantizer (static: activation scales from
    calibration; dynamic: per-tensor activation scales at run time), prepare_pt2e,
    calibrate, convert_pt2e, then torch.compile with static shapes and freezing (weights
    constants: oneDNN prepacked int8 Linears with fused post-ops)."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
    with torch.no_grad():
        graph = torch.export.export(copy.deepcopy(model).eval(), (), kwargs=inputs).module()
        prepared = prepare_pt2e(graph, quantizer)
        for batch in calibration:
            prepared(**batch)
        frozen = _Frozen(torch.compile(convert_pt2e(prepared), dynamic=False))
        frozen(**inputs)  # compiles here, for this shape
    return frozen


def torchao_int8(model: nn.Module, inputs: dict) -> Peer:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    compiled = torch.compile(quantized, dynamic=False)
    with torch.no_grad():
        compiled(**inputs)
    return compiled


def build_peers(
    model: nn.Module, inputs: dict, calibration: list[dict]
) -> tuple[dict[str, Peer], dict[str, str]]:
    """(peer name -> callable, peer name -> why it is missing) for one input shape."""
    built, missing = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        makers = {
            ORT_INT8: lambda: onnxruntime_int8(model, inputs, Path(tmp)),
            PT2E_INT8: lambda: pt2e_int8(model, inputs, calibration),
            PT2E_DYNAMIC: lambda: pt2e_int8(model, inputs, calibration, dynamic=True),
            TORCHAO_INT8: lambda: torchao_int8(model, inputs),
        }
        for name, make in makers.items():
            try:
                built[name] = make()
            except Exception as e:  # a peer that cannot run here: say why, go on
                missing[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return built, missing
