"""A served model gives the same outputs however it is called: grad mode, torch.no_grad()
and torch.inference_mode() (how HF pipelines and most serving code call it), for every
way a model becomes int8 (swap w8a8 / w8a16 / LoRA / QAT-converted, the opt-in norm
handoff, quantize-on-load), and generate() gives the same tokens under each."""

import contextlib

import pytest
import torch

import qkernels
from tests.test_fusion import IDS, MODELS

transformers = pytest.importorskip("transformers")
from qkernels.hf import QKernelsConfig  # noqa: E402

MODES = {
    "grad": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def _swap(method: str):
    def make(model):
        if method == "qat":
            qkernels.swap(model, "qat")
            qkernels.convert(model)
        elif method == "lora":
            qkernels.swap(model, "lora", r=4, alpha=8)
            torch.manual_seed(2)
            with torch.no_grad():  # a trained adapter, not PEFT's zero-initialised B
                for name, p in model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.05)
        elif method == "w8a8 handoff":
            qkernels.swap(model, "w8a8", fuse_norms=True)
        elif method == "w8a8 embeddings":
            qkernels.swap(model, "w8a8", embeddings=True)
        else:
            qkernels.swap(model, method)
        return model

    return make


SWAPS = ["w8a8", "w8a16", "lora", "qat", "w8a8 handoff", "w8a8 embeddings"]


def outputs_in_every_mode(model) -> dict[str, torch.Tensor]:
    outs = {}
    for mode, context in MODES.items():
        with context():
            out = model(IDS)
        t = out.logits if hasattr(out, "logits") else out.last_hidden_state
        outs[mode] = t.detach().clone()
    return outs


def assert_same_in_every_mode(model) -> None:
    outs = outputs_in_every_mode(model)
    for mode in ("no_grad", "inference_mode"):
        torch.testing.assert_close(outs[mode], outs["grad"], rtol=0, atol=0, msg=mode)
    # And a second call gives the first call's outputs.
    torch.testing.assert_close(outputs_in_every_mode(model)["grad"], outs["grad"], rtol=0, atol=0)


@pytest.mark.parametrize("method", SWAPS)
@pytest.mark.parametrize("arch", list(MODELS))
def test_swapped_models_give_the_same_outputs_in_every_grad_mode(arch, method):
    make, _, _ = MODELS[arch]
    assert_same_in_every_mode(_swap(method)(make()))


@pytest.mark.parametrize("method", ["w8a8", "w8a16"])
@pytest.mark.parametrize("fuse_norms", [False, True])
@pytest.mark.parametrize("arch", list(MODELS))
def test_quantize_on_load_gives_the_same_outputs_in_every_grad_mode(
    arch, method, fuse_norms, tmp_path
):
    make, _, _ = MODELS[arch]
    model = make()
    model.save_pretrained(tmp_path)
    config = QKernelsConfig(method, fuse_norms=fuse_norms)
    loaded = type(model).from_pretrained(tmp_path, quantization_config=config)
    assert_same_in_every_mode(loaded)


@pytest.mark.parametrize("method", SWAPS)
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_gives_the_same_tokens_in_every_grad_mode(arch, method):
    make, _, _ = MODELS[arch]
    model = _swap(method)(make()).eval()
    tokens = {}
    for mode, context in MODES.items():
        with context():
            out = model.generate(IDS[:1, :5], max_new_tokens=8, do_sample=False, pad_token_id=0)
        tokens[mode] = out.tolist()
    assert tokens["no_grad"] == tokens["grad"] and tokens["inference_mode"] == tokens["grad"]


def test_lora_trains_on_inputs_made_under_inference_mode():
    """An input tensor made under inference_mode has no version counter: the LoRA
    backward's shared bf16 copy of it must not need one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16))
    qkernels.swap(model, "lora", r=4, include=["0"])
    with torch.inference_mode():
        x = torch.randn(8, 32)
    loss = model(x.clone()).sum() + model(x).sum()
    loss.backward()
    assert model[0].lora_B.grad is not None and model[0].lora_B.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["w8a8", "w8a8 handoff", "lora", "w8a16"])
def test_two_threads_calling_one_model_get_the_serial_outputs(method):
    """Two serving threads share one model (and, with the handoff, its one published
    entry): each call gives what it gives alone."""
    import threading

    make, _, _ = MODELS["bert"]
    model = _swap(method)(make()).eval()
    inputs = [IDS, IDS.flip(0)]
    with torch.inference_mode():
        serial = [model(x).last_hidden_state for x in inputs]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    def serve(i: int) -> None:
        context = torch.inference_mode if i == 0 else torch.no_grad
        with context():
            for _ in range(20):
                results[i].append(model(inputs[i]).last_hidden_state)

    threads = [threading.Thread(target=serve, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        assert len(results[i]) == 20
        for out in results[i]:
            torch.testing.assert_close(out, serial[i], rtol=0, atol=0)
